"""Operators: their credentials, console sessions, and the audit of everything they do.

An operator's secret reads ``spo_<operator id hex><secret>``, like an API key without a tenant:
the id finds one row, whose hash is compared in constant time. Only SHA-256 of the whole secret
is stored (256 random bits: a slow hash would add nothing). Everything here runs as the owner
role (the CLI's connection, or the server's operator pool under OPERATOR_API): the runtime role
has no privilege on these tables. No function opens a transaction; the caller's is used.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from ..errors import ServiceError
from ..handlers.audit import redact
from ..queries import Queries
from .errors import AdminError, rows_as_dicts

__all__ = [
    "CLI_OPERATOR",
    "OPERATOR_PREFIX",
    "SESSION_PREFIX",
    "InTransaction",
    "Operator",
    "OperatorSession",
    "audited",
    "create_operator",
    "end_session",
    "find_session",
    "is_operator_secret",
    "list_audit",
    "list_operators",
    "open_session",
    "record",
    "revoke_operator",
    "verify_operator",
]

OPERATOR_PREFIX = "spo_"
SESSION_PREFIX = "os_"
_SECRET_BYTES = 32
_SECRET_LENGTH = len(OPERATOR_PREFIX) + 32 + 43  # id as hex, 32 bytes as unpadded base64url

log = logging.getLogger(__name__)

T = TypeVar("T")

# Runs a function on a connection inside a transaction of its own, and returns its result: the
# CLI's owner connection, or the server's operator pool.
InTransaction = Callable[[Callable[[asyncpg.Connection], Awaitable[Any]]], Awaitable[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Operator:
    """Who acts across tenants: an operator by its credential, or the CLI (``operator_id``
    None, named ``cli`` or ``cli:<system user>``), which holds the owner's URL itself."""

    operator_id: uuid.UUID | None
    name: str

    @property
    def actor(self) -> str:
        """How the audit trails name it."""
        return self.name if self.operator_id is None else f"operator:{self.name}"


CLI_OPERATOR = Operator(None, "cli")


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorSession:
    """An operator's console session, found by its cookie (``session_hash`` is the cookie's
    SHA-256, the only form stored)."""

    operator: Operator
    session_hash: bytes
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def is_operator_secret(credential: str) -> bool:
    """Whether ``credential`` is meant as an operator's (whatever its validity)."""
    return credential.startswith(OPERATOR_PREFIX)


def _operator_id(secret: str) -> uuid.UUID | None:
    if len(secret) != _SECRET_LENGTH or not is_operator_secret(secret):
        return None
    try:
        return uuid.UUID(hex=secret[len(OPERATOR_PREFIX):len(OPERATOR_PREFIX) + 32])
    except ValueError:
        return None


async def create_operator(conn: asyncpg.Connection, queries: Queries,
                          name: str) -> tuple[uuid.UUID, str]:
    """Register an operator; return its id and its secret, which is stored only as a hash."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise AdminError("an operator name has 1 to 200 characters")
    operator_id = uuid.uuid4()
    raw = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    secret = f"{OPERATOR_PREFIX}{operator_id.hex}{raw}"
    try:
        # A savepoint: the refusal below leaves the caller's transaction usable (for its audit).
        async with conn.transaction():
            await queries.create_operator(conn, operator_id=operator_id, name=name,
                                          secret_hash=_hash(secret))
    except asyncpg.UniqueViolationError:
        raise AdminError(f"a live operator is named {name!r} already; choose another name or "
                         "revoke that one first") from None
    return operator_id, secret


async def list_operators(conn: asyncpg.Connection, queries: Queries) -> list[dict[str, Any]]:
    """Every operator, revoked ones too; never a hash."""
    return rows_as_dicts(await queries.list_operators(conn))


async def list_audit(conn: asyncpg.Connection, queries: Queries, *,
                     tenant_id: uuid.UUID | None, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` operator actions, newest first (on one tenant when given)."""
    return rows_as_dicts(await queries.list_operator_audit(conn, tenant_id=tenant_id,
                                                           limit=limit))


async def revoke_operator(conn: asyncpg.Connection, queries: Queries,
                          operator_id: uuid.UUID) -> None:
    """Revoke an operator; its console sessions end with it."""
    if await queries.revoke_operator(conn, operator_id=operator_id) is None:
        raise AdminError(f"no live operator with id {operator_id}")
    await queries.end_operator_sessions(conn, operator_id=operator_id)


async def verify_operator(conn: asyncpg.Connection, queries: Queries,
                          secret: str) -> Operator | None:
    """The live operator ``secret`` belongs to, or None (malformed, unknown or revoked: one
    answer for all). Records its use."""
    operator_id = _operator_id(secret)
    if operator_id is None:
        return None
    row = await queries.get_operator(conn, operator_id=operator_id)
    # Constant-time: a caller learns nothing from how long a wrong secret takes to refuse.
    if row is None or not hmac.compare_digest(row["secret_hash"], _hash(secret)) \
            or row["revoked_at"] is not None:
        return None
    await queries.touch_operator(conn, operator_id=operator_id)
    return Operator(operator_id, row["name"])


async def open_session(conn: asyncpg.Connection, queries: Queries, operator: Operator, *,
                       ttl: float) -> tuple[str, str]:
    """A console session for ``operator``: the cookie's value and the CSRF token."""
    if operator.operator_id is None:
        raise AdminError("the CLI opens no console session")
    # The prefix tells the console's cookie check to look among operators' sessions.
    cookie = SESSION_PREFIX + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await queries.create_operator_session(
        conn, session_hash=_hash(cookie), operator_id=operator.operator_id, csrf_token=csrf,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl))
    return cookie, csrf


async def find_session(conn: asyncpg.Connection, queries: Queries, cookie: str, *,
                       idle: float) -> OperatorSession | None:
    """The live session of a live operator behind ``cookie``, seen within ``idle`` seconds;
    marks it seen."""
    row = await queries.find_operator_session(conn, session_hash=_hash(cookie),
                                              idle_seconds=float(idle))
    if row is None:
        return None
    return OperatorSession(Operator(row["operator_id"], row["name"]), row["session_hash"],
                           row["csrf_token"], row["created_at"], row["last_seen_at"],
                           row["expires_at"])


async def end_session(conn: asyncpg.Connection, queries: Queries, cookie: str) -> None:
    """Sign-out (recorded); nothing happens for a session that is not there."""
    row = await queries.end_operator_session(conn, session_hash=_hash(cookie))
    if row is not None:
        await record(conn, queries, Operator(row["operator_id"], row["name"]),
                     "console.sign_out")


async def record(conn: asyncpg.Connection, queries: Queries, operator: Operator, action: str,
                 *, tenant_id: uuid.UUID | None = None, arguments: dict[str, Any] | None = None,
                 outcome: str = "ok", detail: Any = None) -> None:
    """One row of operator_audit (secrets in ``arguments`` redacted)."""
    await queries.insert_operator_audit(
        conn, operator_id=operator.operator_id, actor=operator.actor, action=action,
        tenant_id=tenant_id, arguments=redact(arguments or {}), outcome=outcome, detail=detail)


async def audited(
    in_transaction: InTransaction, queries: Queries, operator: Operator, action: str, *,
    tenant_id: uuid.UUID | None = None, arguments: dict[str, Any] | None = None,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
) -> T:
    """Run ``work`` through ``in_transaction`` (the work audits itself, in its transaction, when
    it succeeds); when it fails, the failure is recorded in a transaction of its own, since the
    work's rolled back, and raised again."""
    try:
        return await in_transaction(work)
    except Exception as exc:
        message = str(exc) if isinstance(exc, AdminError | ServiceError) \
            else type(exc).__name__

        async def refused(conn: asyncpg.Connection) -> None:
            await record(conn, queries, operator, action, tenant_id=tenant_id,
                         arguments=arguments, outcome="error", detail={"error": message})

        try:
            await in_transaction(refused)
        except Exception as failure:
            # The refusal is still what the caller learns; the log keeps the lost record.
            log.warning("could not record a failed operator action", extra={
                "action": action, "actor": operator.actor, "error": str(failure)[:200]})
        raise
