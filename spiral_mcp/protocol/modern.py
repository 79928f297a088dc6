"""What the stateless 2026-07-28 era changes in an answer, kept apart from the method table.

- Methods of the handshake eras that the revision removed answer -32601 (HTTP 404), as an unknown
  method does; ``server/discover`` exists only here.
- Cacheable results carry ``ttlMs`` and ``cacheScope`` (server/utilities/caching.mdx). Every
  list depends on the caller's key (its scopes choose the tools, prompts and resources it sees)
  and a read returns tenant data, so they are ``private``: no shared cache may hand one key's
  answer to another. Only discovery, the same for every caller, is ``public``.
- Every result names the server in ``_meta`` (``io.modelcontextprotocol/serverInfo``), not in its
  body.
- A resource that is not found is -32602 (it was -32002).
- Log messages flow only for a request that names its level in ``_meta``.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..icons import icons
from .jsonrpc import INVALID_PARAMS, RpcError

__all__ = ["CACHE_HINTS", "LOG_LEVEL_META", "REMOVED_METHODS", "REMOVED_NOTIFICATIONS",
           "SERVER_INFO", "SERVER_INFO_META", "SERVER_INFO_WITH_ICON", "finish_result",
           "log_level", "modern_error"]

SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"
# The Implementation this server is, in every stateless result's _meta; with its icon where a
# client meets the server (initialize, server/discover), not in every answer.
SERVER_INFO = {"name": "spiral-mcp", "title": "Spiral work items and SQL", "version": __version__}
SERVER_INFO_WITH_ICON = {**SERVER_INFO, "icons": list(icons("server"))}

# Removed by 2026-07-28 (changelog; basic/patterns/subscriptions.mdx for resources/subscribe):
# answered as unknown methods. They still work on a session.
REMOVED_METHODS = frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe",
                             "resources/unsubscribe"})
REMOVED_NOTIFICATIONS = frozenset({"notifications/initialized",
                                   "notifications/roots/list_changed"})

_MINUTE = 60_000
# (ttlMs, cacheScope) per cacheable method. The lists change only when the server's tools or
# prompts do (announced on subscriptions/listen), so five minutes; a read's default is a minute
# (tenant data moves with every write; a resource may choose its own, see Resource.ttl_ms).
CACHE_HINTS: dict[str, tuple[int, str]] = {
    "server/discover": (5 * _MINUTE, "public"),
    "tools/list": (5 * _MINUTE, "private"),
    "prompts/list": (5 * _MINUTE, "private"),
    "resources/list": (5 * _MINUTE, "private"),
    "resources/templates/list": (5 * _MINUTE, "private"),
    "resources/read": (_MINUTE, "private"),
}


def finish_result(method: str, result: dict[str, Any]) -> dict[str, Any]:
    """A stateless-era result as the revision wants it: its type, its caching hints, the
    server's identity in ``_meta``."""
    result.setdefault("resultType", "complete")
    if result["resultType"] == "complete" and (hint := CACHE_HINTS.get(method)) is not None:
        result.setdefault("ttlMs", hint[0])
        result.setdefault("cacheScope", hint[1])
    meta = result.get("_meta")
    info = SERVER_INFO_WITH_ICON if method == "server/discover" else SERVER_INFO
    result["_meta"] = {**(meta if isinstance(meta, dict) else {}), SERVER_INFO_META: dict(info)}
    return result


def modern_error(exc: RpcError, resource_not_found: int) -> RpcError:
    """The stateless era's code for an error raised as the handshake eras' one."""
    if exc.code == resource_not_found:
        return RpcError(INVALID_PARAMS, exc.message, exc.data)
    return exc


def log_level(params: dict[str, Any], levels: tuple[str, ...]) -> str | None:
    """The level a stateless request asks its log messages at; None: send none (-32602 for a
    level that is none of ``levels``)."""
    meta = params.get("_meta")
    level = meta.get(LOG_LEVEL_META) if isinstance(meta, dict) else None
    if level is None:
        return None
    if level not in levels:
        raise RpcError(INVALID_PARAMS, f"{LOG_LEVEL_META} must be one of {', '.join(levels)}")
    return level
