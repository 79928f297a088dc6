"""The operator path's side of the admin API (OPERATOR_API=on): operator credentials and console
sessions checked, and operator routes run, on a small pool of the owner role, apart from the
runtime pool every other request uses.

Installed under the app key ``OPERATORS`` (api/state.py) by the server; api/auth.py asks it about
``Bearer spo_...`` credentials, and the console about operator session cookies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..admin import operators
from ..admin.operators import Operator
from ..db import Database
from .principal import OPERATOR, AdminPrincipal, ConsoleSession

__all__ = ["OwnerOperators", "operator_of"]


def operator_of(admin: AdminPrincipal) -> Operator:
    """The domain's operator behind an operator's AdminPrincipal."""
    assert admin.role == OPERATOR and admin.operator_id is not None
    return Operator(admin.operator_id, admin.actor.removeprefix("operator:"))


def _principal(operator: Operator, session: ConsoleSession | None = None) -> AdminPrincipal:
    return AdminPrincipal(role=OPERATOR, actor=operator.actor, tenant_id=None, principal=None,
                          operator_id=operator.operator_id, session=session)


class OwnerOperators:
    """Operator checks and operator work on the owner role's pool (``database``)."""

    def __init__(self, database: Database, *, session_ttl: float, session_idle: float) -> None:
        self.database = database
        self._ttl = session_ttl
        self._idle = session_idle

    async def transaction(self, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        """``work`` on an owner connection in a transaction of its own; its result."""
        async with self.database.connection() as conn, conn.transaction():
            return await work(conn)

    async def principal(self, secret: str) -> AdminPrincipal | None:
        """The operator an ``spo_...`` credential is, or None (malformed, unknown, revoked)."""
        queries = self.database.queries
        operator = await self.transaction(
            lambda conn: operators.verify_operator(conn, queries, secret))
        return None if operator is None else _principal(operator)

    async def session(self, cookie: str) -> AdminPrincipal | None:
        """The operator of a live console session (cookie ``os_...``), with ``session`` set."""
        if not cookie.startswith(operators.SESSION_PREFIX):
            return None
        queries = self.database.queries
        found = await self.transaction(
            lambda conn: operators.find_session(conn, queries, cookie, idle=self._idle))
        if found is None:
            return None
        return _principal(found.operator, ConsoleSession(
            session_hash=found.session_hash, csrf_token=found.csrf_token, tenant_id=None,
            key_id=None, created_at=found.created_at, last_seen_at=found.last_seen_at,
            expires_at=found.expires_at))

    async def open_session(self, admin: AdminPrincipal) -> tuple[str, str]:
        """A console session for an operator signed in with its secret: the cookie's value
        and the CSRF token (recorded in operator_audit)."""
        operator = operator_of(admin)
        queries = self.database.queries

        async def open_and_record(conn: asyncpg.Connection) -> tuple[str, str]:
            opened = await operators.open_session(conn, queries, operator, ttl=self._ttl)
            await operators.record(conn, queries, operator, "console.sign_in")
            return opened

        return await self.transaction(open_and_record)

    async def end_session(self, cookie: str) -> None:
        """End the console session behind ``cookie`` (sign-out, recorded); nothing if there is
        none."""
        queries = self.database.queries
        await self.transaction(lambda conn: operators.end_session(conn, queries, cookie))
