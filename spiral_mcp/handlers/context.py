"""What a handler gets besides its arguments: who calls, the database, and how to talk back.

A handler never sees HTTP or the transport; progress and log messages go through the callbacks
here, and the transport decides which stream carries them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import asyncpg

from ..auth import Principal
from ..db import Database, TenantTransaction
from ..errors import ErrorCode, ServiceError
from ..explorer import Explorer
from ..sources.access import SourceAccess
from .audit import AuditEntry, redact
from .idempotency import Claim

__all__ = ["CLIENT_REQUESTS", "AskCallback", "InputRequired", "ToolContext", "ask_all",
           "client_can", "require_askable"]

_CONTENT_TYPES = frozenset({"text", "image", "audio", "resource", "resource_link"})

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
LogCallback = Callable[[str, Any], Awaitable[None]]

# The requests a server may put to a client, and the client capability each needs.
CLIENT_REQUESTS = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
                   "roots/list": "roots"}


class AskCallback(Protocol):
    """Puts a request to the client (sampling/createMessage, elicitation/create, roots/list) and
    returns its result. ``key`` names the question in the stateless era's ``inputRequests``
    (default: the method's kind and a digest of the params, so the same question keeps its
    key from one round to the next); a session ignores it."""

    def __call__(self, method: str, params: dict[str, Any], /, *,
                 key: str | None = None) -> Awaitable[dict[str, Any]]: ...


class InputRequired(Exception):
    """Raised by ``ctx.ask`` in the stateless era when the request does not carry the client's
    answer yet: the call ends (nothing may have been written: see ToolContext.ask) and is
    answered with an InputRequiredResult asking ``requests``; the client calls again with the
    answers, and the handler runs again from its start. A handler never catches it.
    ``answer`` makes that result (every question of the round, and the state to carry)."""

    def __init__(self, requests: Mapping[str, dict[str, Any]],
                 answer: Callable[[], dict[str, Any]]) -> None:
        super().__init__(f"the client's answer is needed: {', '.join(requests)}")
        self.requests = requests
        self.answer = answer


# Turns the call into a task (True) when the client takes tasks, see ToolContext.become_task.
BecomeTask = Callable[[], Awaitable[bool]]


# Announces that a resource (by URI) of the caller's tenant changed, to whoever subscribed to it.
ChangedCallback = Callable[[str], None]
# Announces that the caller's tenant's data of these kinds (spiral_mcp/changed_data) changed.
DataChangedCallback = Callable[[frozenset[str]], None]


def _nobody_listens(uri: str) -> None:
    return None


def _nobody_hears(kinds: frozenset[str]) -> None:
    return None


async def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


async def _no_log(level: str, data: Any) -> None:
    return None


async def _stay_inline() -> bool:
    return False


async def _cannot_ask(method: str, params: dict[str, Any], /, *,
                      key: str | None = None) -> dict[str, Any]:
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
    # Asks the client. On a session: a request to the client, answered within minutes (a person
    # may answer), UPSTREAM_ERROR when the client lacks the capability, cannot be reached,
    # refuses or is silent. In the stateless era: the answer the request carries, or
    # InputRequired, which ends the call; the client calls again with the answer and the
    # handler runs again from its start. So, the rule for asking: ask before anything
    # irreversible (a write, a source's change), never inside a transaction, and ask the same
    # questions again given the same arguments and answers. Check can_ask first to fall back
    # when the client cannot be asked; an ask it cannot answer is -32021 in the stateless era.
    ask: AskCallback = _cannot_ask
    # What the client declared it can do (initialize's capabilities on a session, the request's
    # _meta in the stateless era); None where nothing can be asked.
    client_capabilities: Mapping[str, Any] | None = None
    # ``await ctx.become_task()`` where a call may take long: when the client declared the tasks
    # extension, it gets a task handle now and polls tasks/get while the rest of the handler runs
    # (True; from then on progress, asks and the result go to the task); otherwise the call goes
    # on as a plain one (False). Only tools that declare task support (Tool.task) may become one.
    become_task: BecomeTask = _stay_inline
    # Bound to the caller's tenant by the dispatcher: a handler cannot announce a change in
    # another tenant's data.
    resource_updated: ChangedCallback = _nobody_listens
    # The same for kinds of data: every resource showing one of them (Resource.changed_by). The
    # registry calls it after a write tool's call committed (Tool.changes).
    data_changed: DataChangedCallback = _nobody_hears
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
    # With tracing on: the trace context the request named in its _meta (an OpenTelemetry
    # Context), the parent of the call's span; None: the HTTP request's span is.
    trace_parent: Any = None

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.principal.tenant_id

    def can_ask(self, method: str) -> bool:
        """Whether the client declared what ``method`` needs (for elicitation/create, a form)."""
        return self.ask is not _cannot_ask and client_can(self.client_capabilities, method)

    def attach(self, block: dict[str, Any]) -> None:
        """Add a content block (text, image, audio, an embedded resource or a resource link) to
        the result, for a client to show beside the envelope; the envelope's JSON stays the
        result's last block and its structuredContent."""
        if not isinstance(block, dict) or block.get("type") not in _CONTENT_TYPES:
            raise ValueError(f"not an MCP content block: {block!r:.80}")
        if self.attachments is None:
            self.attachments = []
        self.attachments.append(block)

    def transaction(self, *, readonly: bool, lag_ok: bool = False) -> TenantTransaction:
        """The tenant's transaction (``async with``): this call's one way to the data;
        ``lag_ok``: see :meth:`Database.tenant`."""
        return self.database.tenant(self.principal.tenant_id, readonly=readonly, lag_ok=lag_ok)

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


def client_can(capabilities: Mapping[str, Any] | None, method: str,
               params: Mapping[str, Any] | None = None) -> bool:
    """Whether ``capabilities`` (what a client declared) let a server put ``method`` to it. An
    elicitation in form mode (the default) needs an elicitation capability that takes forms: an
    empty one does (the form mode predates the modes' names); one that names modes must name
    "form"."""
    capability = CLIENT_REQUESTS.get(method)
    if capabilities is None or capability not in capabilities:
        return False
    if method != "elicitation/create" or (params or {}).get("mode", "form") != "form":
        return True
    declared = capabilities[capability]
    return isinstance(declared, Mapping) and (
        "form" in declared or not ({"form", "url"} & declared.keys()))


def require_askable(capabilities: Mapping[str, Any] | None, method: str,
                    params: Mapping[str, Any]) -> None:
    """For an asker that waits on the client's answer (a session's, a task's): ValueError for a
    request no server may put to a client, UPSTREAM_ERROR for one the client did not declare."""
    capability = CLIENT_REQUESTS.get(method)
    if capability is None:
        raise ValueError(f"not a request a server may send a client: {method}")
    if not client_can(capabilities, method, params):
        raise ServiceError(ErrorCode.UPSTREAM_ERROR, f"the client does not offer {capability}")


async def ask_all(ctx: ToolContext, requests: Mapping[str, tuple[str, dict[str, Any]]]
                  ) -> dict[str, dict[str, Any]]:
    """Several questions at once, by key: ``{key: (method, params)}`` → ``{key: result}``. In the
    stateless era they travel together in one InputRequiredResult; on a session they are
    asked side by side."""
    keys = list(requests)
    results = await asyncio.gather(
        *(ctx.ask(method, params, key=key) for key, (method, params) in requests.items()),
        return_exceptions=True)
    waiting = None
    for result in results:
        if isinstance(result, InputRequired):
            waiting = result  # the asker gathers every question of the round: any one will do
        elif isinstance(result, BaseException):
            raise result
    if waiting is not None:
        raise waiting
    return dict(zip(keys, results, strict=True))
