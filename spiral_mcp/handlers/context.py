"""What a handler gets besides its arguments: who calls, the database, and how to talk back.

A handler never sees HTTP or the transport; progress and log messages go through the callbacks
here, and the transport decides which stream carries them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..auth import Principal
from ..db import Database, TenantTransaction
from ..errors import ErrorCode, ServiceError
from ..explorer import Explorer
from ..sources.access import SourceAccess
from .audit import AuditEntry, redact
from .idempotency import Claim

__all__ = ["ToolContext"]

_CONTENT_TYPES = frozenset({"text", "image", "audio", "resource", "resource_link"})

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
LogCallback = Callable[[str, Any], Awaitable[None]]
# Sends the client a request (sampling/createMessage, elicitation/create) and returns its result.
AskCallback = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


# Announces that a resource (by URI) of the caller's tenant changed, to whoever subscribed to it.
ChangedCallback = Callable[[str], None]


def _nobody_listens(uri: str) -> None:
    return None


async def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


async def _no_log(level: str, data: Any) -> None:
    return None


async def _cannot_ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
    raise ServiceError(ErrorCode.UPSTREAM_ERROR,
                       "this call cannot ask the client anything: it came without a session")


@dataclasses.dataclass(slots=True, kw_only=True)
class ToolContext:
    principal: Principal
    database: Database
    tool: str
    # The data explorer (its own pool, as the explorer role), for the explorer toolset.
    explorer: Explorer | None = None
    # The server's way to its tenants' sources (credentials, adapters), for the sources toolset
    # and writes to mirrored projects; None: this server reaches no source.
    sources: SourceAccess | None = None
    request_id: str | None = None
    progress: ProgressCallback = _no_progress
    log: LogCallback = _no_log
    # UPSTREAM_ERROR when the client lacks the capability, cannot be reached, refuses or is silent.
    # The answer may take minutes (a person): never ask inside a transaction, which would hold a
    # pooled connection all that time.
    ask: AskCallback = _cannot_ask
    # Bound to the caller's tenant by the dispatcher: a handler cannot announce a change in
    # another tenant's data.
    resource_updated: ChangedCallback = _nobody_listens
    # Set when the handler wrote its audit row inside its own transaction (writes do, so the
    # change and its audit commit together); otherwise the registry writes it after the call.
    audited: bool = False
    # Set when the result is a stored answer to an earlier call with the same idempotency key.
    replayed: bool = False
    # The idempotency key this call holds, if it was given one.
    claim: Claim | None = None
    # Set once a change may have reached a source (write-through): if the call fails after that,
    # its idempotency key is kept until its lease ends, so a retry cannot make the change twice.
    outcome_unknown: bool = False
    # What the call produced, for its audit row's `after` (the explorer: row count, duration).
    audit_after: Any = None
    # MCP content blocks a successful result carries before its JSON text (see attach).
    attachments: list[dict[str, Any]] | None = None

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.principal.tenant_id

    def attach(self, block: dict[str, Any]) -> None:
        """Add a content block (text, image, audio, an embedded resource or a resource link) to
        the result, for a client to show beside the envelope; the envelope's JSON stays the
        result's last block and its structuredContent."""
        if not isinstance(block, dict) or block.get("type") not in _CONTENT_TYPES:
            raise ValueError(f"not an MCP content block: {block!r:.80}")
        if self.attachments is None:
            self.attachments = []
        self.attachments.append(block)

    def transaction(self, *, readonly: bool) -> TenantTransaction:
        """The tenant's transaction (``async with``): this call's one way to the data."""
        return self.database.tenant(self.principal.tenant_id, readonly=readonly)

    async def commit_write(
        self,
        conn: asyncpg.Connection,
        *,
        arguments: dict[str, Any],
        result: Any,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """In the write's own transaction: its audit row (with before/after values) and, when the
        call holds an idempotency key, its stored result — so all of it commits or none does."""
        if self.claim is not None and not await self.database.queries.idempotency_complete(
                conn, tool=self.claim.tool, key=self.claim.key,
                claimed_at=self.claim.claimed_at, response=result):
            # The call outlived its lease and another took the key over: raising rolls this
            # write back, so the key's result stays that of one call.
            raise ServiceError(
                ErrorCode.IDEMPOTENCY_IN_PROGRESS,
                f"idempotency key {self.claim.key!r} was taken over by another call while this "
                "one ran past its lease; nothing was written. Retry with the key for its result.",
                retry_after=1.0,
            )
        entry = AuditEntry(
            tenant_id=self.principal.tenant_id, key_id=self.principal.key_id,
            actor=self.principal.user, tool=self.tool, arguments=redact(arguments),
            outcome="ok", error_code=None, duration_ms=None, request_id=self.request_id,
            before=before, after=after,
        )
        await self.database.queries.insert_audit(conn, **entry.row())
        self.audited = True
