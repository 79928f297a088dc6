"""What the console's home shows of a tenant at a glance."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..queries import Queries

__all__ = ["tenant_overview"]


async def tenant_overview(conn: asyncpg.Connection, queries: Queries) -> dict[str, Any]:
    """The transaction's tenant: its name, and how many projects, sync runs and tool calls of
    the last 24 hours it has."""
    row = await queries.console_home(conn)
    return dict(row)
