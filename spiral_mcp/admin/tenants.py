"""Tenants: creating one (the CLI, as the owner role)."""

from __future__ import annotations

import uuid

import asyncpg

from ..queries import Queries
from .errors import AdminError

__all__ = ["create_tenant"]


async def create_tenant(conn: asyncpg.Connection, queries: Queries, name: str) -> uuid.UUID:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise AdminError("a tenant name has 1 to 200 characters")
    return await queries.create_tenant(conn, name=name)
