"""The operator path at start-up (OPERATOR_API=on): a small pool of the owner role, used only for
operator credentials, operator console sessions and operator routes, installed as
``OPERATORS``. Every other request keeps the runtime role, whose guarantees (no owner, no
BYPASSRLS, no cross-tenant read) this leaves untouched. Off: nothing is opened, and ``spo_``
credentials are refused at the door (api/auth.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web

from ..api.operator_access import OwnerOperators
from ..api.state import OPERATORS
from ..db import Database, close_pool, create_pool
from .keys import DATABASE, SETTINGS, SHUTDOWN

__all__ = ["operator_context"]

# Operator calls are few (people at a console or a script); two connections keep them from ever
# weighing on the database, and one of them is enough for credential checks under load.
_POOL_MAX = 2


def operator_context(owner_url: str | None) -> Callable[[web.Application],
                                                         AsyncIterator[None]]:
    """The cleanup context of the operator path; ``owner_url`` logs in as the owner role."""

    async def operators(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if not settings.operator_api:
            yield
            return
        if owner_url is None:
            raise ConnectionError("OPERATOR_API: needs the owner role's URL "
                                  "(ADMIN_DATABASE_URL) for operator requests")
        try:
            pool = await create_pool(owner_url, min_size=0, max_size=_POOL_MAX,
                                     connect_timeout=settings.db_connect_timeout,
                                     statement_timeout=settings.db_statement_timeout,
                                     application_name="spiral-mcp operators")
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise ConnectionError(f"OPERATOR_API: cannot reach the database as the owner role: "
                                  f"{exc}") from None
        try:
            async with pool.acquire() as conn:
                # Any other role (the runtime role by mistake) may not read the operators.
                await conn.fetchval("SELECT count(*) FROM operators")
        except asyncpg.InsufficientPrivilegeError:
            await pool.close()
            raise ConnectionError("OPERATOR_API: the role of ADMIN_DATABASE_URL cannot read the "
                                  "operators; it must be the owner role") from None
        database = Database(pool, app[DATABASE].queries,
                            acquire_timeout=settings.db_connect_timeout)
        # Operators' console sessions last as tenant admins' do.
        app[OPERATORS] = OwnerOperators(database, session_ttl=settings.console_session_ttl,
                                        session_idle=settings.console_session_idle)
        try:
            yield
        finally:
            await database.close()
            await close_pool(pool, grace=app[SHUTDOWN].left(1.0))

    return operators
