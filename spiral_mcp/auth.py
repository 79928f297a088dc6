"""API keys: their format, their hash, and turning a presented key into a principal.

A key reads ``spk_<tenant id hex><key id hex><secret>``. Carrying the tenant lets the lookup run
under row-level security like every other read; carrying the key id lets us fetch one row and
compare hashes in constant time, instead of searching by hash. Only SHA-256 of the whole key is
stored: the secret has 256 random bits, so a slow password hash would add nothing.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from .config_values import SCOPES
from .db import Database
from .errors import ServiceError

__all__ = ["OPERATOR_ACTOR", "SCOPES", "SUSPENDED", "Authenticator", "NewKey", "Principal",
           "hash_key", "key_problem", "new_key", "parse_key"]

_PREFIX = "spk_"
_SECRET_BYTES = 32
_SECRET_CHARS = 43  # base64url of 32 bytes, unpadded
_KEY_LENGTH = len(_PREFIX) + 64 + _SECRET_CHARS

# What the holder of a right key of a suspended tenant is told.
SUSPENDED = ("this API key's tenant is suspended by the server's operator; its keys work again "
             "once an operator resumes it")

# The actor of an operator's changes in a tenant's audit log reads "operator:<name>"; a key's
# or an OAuth user's actor is its user or its name, so none of those may read the same.
OPERATOR_ACTOR = "operator:"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant, the key, what it may do and whom it acts for.

    ``credential`` says what authenticated the call: "api_key", or "oauth" for an access token,
    whose ``key_id`` is then the user's stable principal id (see ``oauth.identity``) and whose
    ``expires_at`` (epoch seconds) is the token's exp; sessions, tasks, request states, rate
    limits and audit rows are keyed by ``key_id`` either way.
    """

    tenant_id: uuid.UUID
    key_id: uuid.UUID
    key_name: str
    scopes: frozenset[str]
    user: str | None = None
    credential: str = "api_key"
    expires_at: float | None = None
    # An OAuth principal's check that its token still acts as it (not expired, still bound to
    # this tenant), asked by what outlives the request it authenticated: streams and tasks.
    still_valid: Callable[[], Awaitable[bool]] | None = dataclasses.field(
        default=None, repr=False, compare=False)
    # The tenant id as text, made once per key lookup rather than in every call's envelope.
    tenant_text: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenant_text", str(self.tenant_id))


@dataclasses.dataclass(frozen=True, slots=True)
class NewKey:
    key_id: uuid.UUID
    secret: str
    key_hash: bytes


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_key(tenant_id: uuid.UUID) -> NewKey:
    key_id = uuid.uuid4()
    raw = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    secret = f"{_PREFIX}{tenant_id.hex}{key_id.hex}{raw}"
    return NewKey(key_id=key_id, secret=secret, key_hash=hash_key(secret))


def parse_key(secret: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The (tenant id, key id) a well-formed key names, or None."""
    if len(secret) != _KEY_LENGTH or not secret.startswith(_PREFIX):
        return None
    body = secret[len(_PREFIX):]
    try:
        return uuid.UUID(hex=body[:32]), uuid.UUID(hex=body[32:64])
    except ValueError:
        return None


def key_problem(secret: str) -> str | None:
    """What is wrong with the form of a key starting ``spk_``, in words for its holder; None
    when it is well formed (whether it exists is another question)."""
    if len(secret) != _KEY_LENGTH:
        return (f"it has {len(secret)} characters where a key has {_KEY_LENGTH}; copy it whole, "
                "as spiral-mcp apikey create printed it")
    if parse_key(secret) is None:
        return "its tenant and key ids are not hexadecimal"
    return None


def _key_name(secret: str) -> str | None:
    """The part of a key that names it (tenant and key id, as hex), or None when the key cannot
    be one of ours; whether the hex is valid is left to :func:`parse_key`."""
    if len(secret) != _KEY_LENGTH or not secret.startswith(_PREFIX):
        return None
    return secret[len(_PREFIX):len(_PREFIX) + 64]


@dataclasses.dataclass(frozen=True, slots=True)
class _CachedKey:
    ids: tuple[uuid.UUID, uuid.UUID]
    row: dict[str, Any] | None  # None: no such key (cached too, so floods of bad keys stay cheap)
    fetched: float
    # Who the key is when its row is usable (this tenant's, not revoked, its tenant not
    # suspended), built once per lookup.
    principal: Principal | None = None

    @classmethod
    def of(cls, ids: tuple[uuid.UUID, uuid.UUID], row: dict[str, Any] | None) -> _CachedKey:
        tenant_id, key_id = ids
        principal = None
        if row is not None and row["tenant_id"] == tenant_id and row["revoked_at"] is None \
                and row["suspended_at"] is None:
            principal = Principal(tenant_id=tenant_id, key_id=key_id, key_name=row["name"],
                                  scopes=frozenset(row["scopes"]), user=row["acts_as"])
        return cls(ids, row, time.monotonic(), principal)


class Authenticator:
    """Verifies keys against the database, trusting a verified row for ``cache_ttl`` seconds.

    A revoked key therefore stops working within ``cache_ttl``, as does every key of a tenant an
    operator suspends (and works again within it once resumed). Use times are collected in memory
    and written in one statement per tenant by :meth:`flush_last_used`, not once per request.
    """

    def __init__(self, database: Database, *, cache_ttl: float, cache_size: int = 10_000) -> None:
        self._db = database
        self._ttl = cache_ttl
        self._size = cache_size
        # Keyed by the key's name, its tenant and key id as they are written in it: a lookup
        # under the tenant a caller claims must never answer for the same key id under another
        # tenant (else a forged key could lock a real one out). A string, so a cached key is
        # found without parsing its ids into UUIDs on every request.
        self._cache: OrderedDict[str, _CachedKey] = OrderedDict()
        # The keys used since the last flush, by name.
        self._used: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}
        self._lookups: dict[str, asyncio.Future[_CachedKey]] = {}

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal for ``secret``, or None for a malformed, unknown, revoked or expired key.

        Raises CONNECTION_ERROR when the key has to be checked and the database is unreachable.
        """
        name = _key_name(secret)
        if name is None:
            return None
        cached = self._cache.get(name)
        if cached is None or time.monotonic() - cached.fetched >= self._ttl:
            ids = parse_key(secret)
            if ids is None:
                return None
            cached = await self._lookup(name, ids)
        else:
            # Least recently used goes first: a flood of made-up keys must not push out the
            # keys in real use.
            self._cache.move_to_end(name)
        row = cached.row
        # Constant-time: a caller learns nothing from how long a wrong secret takes to refuse.
        if row is None or not hmac.compare_digest(row["key_hash"], hash_key(secret)):
            return None
        if cached.principal is None:  # another tenant's key id, or revoked
            return None
        if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
            return None
        self._used[name] = cached.ids
        return cached.principal

    def suspended(self, secret: str) -> bool:
        """Whether ``secret``, just refused by :meth:`authenticate`, is a live key of a tenant an
        operator has suspended: said to its holder alone (the hash matched), as the reason."""
        name = _key_name(secret)
        cached = self._cache.get(name) if name is not None else None
        row = cached.row if cached is not None else None
        return (row is not None and hmac.compare_digest(row["key_hash"], hash_key(secret))
                and row["tenant_id"] == cached.ids[0] and row["revoked_at"] is None
                and row["suspended_at"] is not None)

    async def _lookup(self, name: str, ids: tuple[uuid.UUID, uuid.UUID]) -> _CachedKey:
        # Many requests with the same new key share one database round trip.
        pending = self._lookups.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        tenant_id, key_id = ids
        future: asyncio.Future[_CachedKey] = asyncio.get_running_loop().create_future()
        self._lookups[name] = future
        try:
            async with self._db.tenant(tenant_id, readonly=True) as conn:
                record = await self._db.queries.get_api_key(conn, key_id=key_id)
            cached = _CachedKey.of(ids, dict(record) if record else None)
            future.set_result(cached)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a future nobody awaited logs nothing
            raise
        finally:
            del self._lookups[name]
        self._cache[name] = cached
        self._cache.move_to_end(name)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return cached

    def forget(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> None:
        """Drop a key just revoked in this process from the cache: its next use here is checked
        against the database (other processes see it within ``cache_ttl``)."""
        self._cache.pop(f"{tenant_id.hex}{key_id.hex}", None)

    async def flush_last_used(self) -> None:
        """Write the keys used since the last flush; keep them for the next try on failure."""
        used, self._used = self._used, {}
        by_tenant: dict[uuid.UUID, set[uuid.UUID]] = {}
        for tenant_id, key_id in used.values():
            by_tenant.setdefault(tenant_id, set()).add(key_id)
        at = datetime.now(UTC)
        for tenant_id, key_ids in by_tenant.items():
            try:
                async with self._db.tenant(tenant_id) as conn:
                    await self._db.queries.touch_api_keys(conn, key_ids=list(key_ids), used_at=at)
            except ServiceError:
                self._used.update((n, ids) for n, ids in used.items() if ids[0] == tenant_id)
                log.warning("could not record key use; will retry",
                            extra={"tenant": str(tenant_id)})
