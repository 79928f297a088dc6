"""Operator actions on tenants and keys, run as the owner role (the CLI's connection)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from ..auth import SCOPES, new_key
from ..queries import Queries

__all__ = ["AdminError", "create_api_key", "create_tenant", "parse_scopes", "revoke_api_key"]


class AdminError(ValueError):
    """An operator's request that cannot be carried out; the message says why."""


def parse_scopes(raw: str | Iterable[str]) -> list[str]:
    scopes = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    if not scopes:
        raise AdminError(f"at least one scope is needed (from {', '.join(SCOPES)})")
    if unknown := sorted(set(scopes) - set(SCOPES)):
        raise AdminError(f"unknown scopes {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    return sorted(set(scopes), key=SCOPES.index)


async def create_tenant(conn: asyncpg.Connection, queries: Queries, name: str) -> uuid.UUID:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise AdminError("a tenant name has 1 to 200 characters")
    return await queries.create_tenant(conn, name=name)


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
        raise AdminError(f"no live key with id {key_id}")


def rows_as_dicts(rows: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]
