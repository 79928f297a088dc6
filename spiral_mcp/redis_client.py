"""The asyncio Redis client REDIS_URL names: one Redis, or the master a Sentinel set elects.

Forms: ``redis://`` and ``rediss://`` (TLS) and ``unix://``, as redis-py reads them, and

    redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]

for a highly available Redis: the sentinels (port 26379 unless given) are asked which server is
the master of ``service_name``; the credentials and ``db`` are the master's (the sentinels are
asked without credentials, as redis-py does by default). After a failover the client's next
connection goes to the new master: a connection to the old one fails (or is told it is now a
replica) and is dropped, and the caller's fallback (the rate limiter's in-process buckets) covers
the moment.

Every socket gets short timeouts: a Redis that does not answer must not hold a call up.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import unquote

import redis.asyncio as redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

__all__ = ["SENTINEL_FORM", "RedisUrlError", "SentinelUrl", "check_redis_url", "close_redis",
           "parse_sentinel_url", "redis_client"]

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_FORM = "redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]"
_SENTINEL_PORT = 26379
TIMEOUT = 0.5


class RedisUrlError(ValueError):
    """REDIS_URL cannot be used; the message says what is wrong with it (never its password)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None = dataclasses.field(repr=False)


def _address(part: str) -> tuple[str, int]:
    if part.startswith("["):  # [IPv6]:port
        host, _, rest = part[1:].partition("]")
        port = rest.removeprefix(":")
    elif part.count(":") == 1:
        host, _, port = part.partition(":")
    else:
        host, port = part, ""
    if not host:
        raise RedisUrlError(f"a sentinel without a host in {SENTINEL_FORM}")
    if not port:
        return host, _SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"sentinel port {port!r} is not a port from 1 to 65535")
    return host, int(port)


def parse_sentinel_url(raw: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL; RedisUrlError naming what is wrong."""
    if not raw.startswith(SENTINEL_SCHEME):
        raise RedisUrlError(f"expected {SENTINEL_FORM}")
    rest = raw.removeprefix(SENTINEL_SCHEME)
    if "?" in rest or "#" in rest:
        raise RedisUrlError(f"options are not taken in a sentinel URL: {SENTINEL_FORM}")
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    username = password = None
    if credentials:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise RedisUrlError(f"no sentinel named: expected {SENTINEL_FORM}")
    sentinels = tuple(_address(part) for part in hosts.split(","))
    service, _, db = path.partition("/")
    if not service:
        raise RedisUrlError(f"no service name (the master's name the sentinels monitor): "
                            f"expected {SENTINEL_FORM}")
    db = db.rstrip("/")
    if db and not db.isdigit():
        raise RedisUrlError(f"database {db!r} is not a number: expected {SENTINEL_FORM}")
    return SentinelUrl(sentinels=sentinels, service=unquote(service), db=int(db or 0),
                       username=username, password=password)


def check_redis_url(raw: str) -> None:
    """Raise RedisUrlError when ``raw`` is not a Redis URL the server can use."""
    if raw.startswith(SENTINEL_SCHEME):
        parse_sentinel_url(raw)
        return
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise RedisUrlError(f"expected a redis://, rediss://, unix:// or {SENTINEL_FORM} URL")
    try:
        parse_url(raw)
    except ValueError as exc:  # a port that is not a number, an unknown option, ...
        raise RedisUrlError(str(exc).replace(raw, "the URL")) from None


def redis_client(url: str, *, timeout: float = TIMEOUT) -> redis.Redis:
    """A client of the Redis ``url`` names (checked by check_redis_url); it connects lazily."""
    if not url.startswith(SENTINEL_SCHEME):
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    parts = parse_sentinel_url(url)
    quick = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sentinel = Sentinel(list(parts.sentinels), sentinel_kwargs=quick)
    return sentinel.master_for(parts.service, db=parts.db, username=parts.username,
                               password=parts.password, **quick)


async def close_redis(client: redis.Redis) -> None:
    """Close ``client``, and the connections to its sentinels when it has any."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if manager is not None:
        for sentinel in manager.sentinels:
            await sentinel.aclose()
