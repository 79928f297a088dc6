"""API keys: create, list, read, revoke. The CLI runs these as the owner role; the admin API as
the runtime role in the caller's tenant transaction, where row-level security shows one tenant's
keys only."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..auth import OPERATOR_ACTOR, SCOPES, new_key
from ..queries import Queries
from .cursors import decode_cursor, encode_cursor
from .errors import AdminError, AdminNotFound

__all__ = ["KEY_PAGE_DEFAULT", "KEY_PAGE_MAX", "KEY_STATES", "OPERATOR_ACTOR", "create_api_key",
           "get_key", "key_page", "key_view", "parse_scopes", "revoke_api_key"]

KEY_PAGE_DEFAULT = 100
KEY_PAGE_MAX = 500
# Which keys a page lists; live ones unless asked (revoked ones pile up over the years).
KEY_STATES = ("live", "revoked", "expired", "all")
_SCOPE = "keys"


def parse_scopes(raw: str | Iterable[str]) -> list[str]:
    scopes = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    if not scopes:
        raise AdminError(f"at least one scope is needed (from {', '.join(SCOPES)})")
    if unknown := sorted(set(scopes) - set(SCOPES)):
        raise AdminError(f"unknown scopes {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    return sorted(set(scopes), key=SCOPES.index)


async def create_api_key(
    conn: asyncpg.Connection,
    queries: Queries,
    *,
    tenant_id: uuid.UUID,
    name: str,
    scopes: list[str],
    user: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[uuid.UUID, str]:
    """Create a key; return its id and the secret, which is stored only as a hash."""
    if not 1 <= len(name.strip()) <= 200:
        raise AdminError("a key name has 1 to 200 characters")
    if any(text is not None and text.strip().lower().startswith(OPERATOR_ACTOR)
           for text in (name, user)):
        raise AdminError(f"a key's name and user may not start with {OPERATOR_ACTOR!r}, which "
                         "the audit log keeps for operators")
    if not await queries.tenant_exists(conn, tenant_id=tenant_id):
        raise AdminError(f"no tenant with id {tenant_id}")
    key = new_key(tenant_id)
    await queries.create_api_key(
        conn, tenant_id=tenant_id, key_id=key.key_id, name=name.strip(), key_hash=key.key_hash,
        scopes=parse_scopes(scopes), acts_as=user, expires_at=expires_at,
    )
    return key.key_id, key.secret


async def revoke_api_key(conn: asyncpg.Connection, queries: Queries, key_id: uuid.UUID) -> None:
    if await queries.revoke_api_key(conn, key_id=key_id) is None:
        raise AdminNotFound(f"no live key with id {key_id}")


def key_view(row: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """A key as an admin sees it: never its hash or secret. ``state`` is live, expired or
    revoked."""
    now = now or datetime.now(UTC)
    if row["revoked_at"] is not None:
        state = "revoked"
    elif row["expires_at"] is not None and row["expires_at"] <= now:
        state = "expired"
    else:
        state = "live"
    return {"key_id": row["key_id"], "name": row["name"], "scopes": list(row["scopes"]),
            "user": row["acts_as"], "state": state, "created_at": row["created_at"],
            "expires_at": row["expires_at"], "revoked_at": row["revoked_at"],
            "last_used_at": row["last_used_at"]}


async def key_page(conn: asyncpg.Connection, queries: Queries, *, state: str = "live",
                   limit: int = KEY_PAGE_DEFAULT, cursor: str | None = None) -> dict[str, Any]:
    """One page of the transaction's tenant's keys in ``state``, newest first:
    ``{"keys": [...], "next_cursor": str | None}`` (None on the last page)."""
    filters = {"state": state}
    before_at, before_id = (decode_cursor(_SCOPE, filters, cursor, uuid_ids=True)
                            if cursor is not None else (None, None))
    # One row more than the page: whether another page follows, without a count.
    rows = await queries.api_keys_page(conn, state=state, before_at=before_at,
                                       before_id=before_id, page_size=limit + 1)
    now = datetime.now(UTC)
    keys = [key_view(row, now=now) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(_SCOPE, filters, (last["created_at"], last["key_id"]))
    return {"keys": keys, "next_cursor": next_cursor}


async def get_key(conn: asyncpg.Connection, queries: Queries, key_id: uuid.UUID) -> dict[str, Any]:
    """One key of the transaction's tenant; AdminNotFound when there is none (another
    tenant's key is not found either)."""
    row = await queries.get_key_view(conn, key_id=key_id)
    if row is None:
        raise AdminNotFound(f"no key with id {key_id}")
    return key_view(row)
