"""The tool registry: what a tool is, and the one path every tool call takes.

A tool is data (name, title, description, schemas, annotations, scope, call class) plus one async
handler. Its schemas are JSON Schema 2020-12 files under ``spiral_mcp/schemas`` — the input as
``<name>.input.json`` and the ``data`` of a successful result as ``<name>.output.json`` — checked
and compiled once at start-up. A call goes: visibility and scope → rate limit → argument
validation → its tenant's share of slow work, for a tool that declares one → handler → envelope →
audit and metrics. Every failure of the tool itself is a result with ``isError`` (a tool the key's
scopes do not allow is PERMISSION_DENIED, naming the scope); only an unknown tool is a JSON-RPC
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from ..auth import Principal
from ..changed_data import AUDIT_LOG
from ..errors import ErrorCode, ServiceError
from ..protocol.jsonrpc import INVALID_PARAMS, RpcError
from ..schema_types import HeaderParam, header_params
from ..shares import ShareExhausted, Shares
from ..tracing import Tracer, failed, mcp_span
from .arguments import MAX_ARGUMENT_DEPTH, ArgumentCheck
from .audit import AuditEntry, AuditWriter, redact
from .context import InputRequired, ToolContext
from .idempotency import Claim, IdempotencyStore
from .listing import envelope_schema, listing

__all__ = ["MAX_ARGUMENT_DEPTH", "Tool", "ToolRegistry"]

log = logging.getLogger(__name__)

Handler = Callable[[ToolContext, dict[str, Any]], Awaitable[Any]]

CALL_CLASSES = ("read", "write", "query")

# The audit's error_code of a call that ended asking the client (stateless era); its outcome is
# "error", as a cancelled call's is: the call did not complete.
_INPUT_REQUIRED = "INPUT_REQUIRED"

@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """One tool as a handler module declares it."""

    name: str
    title: str
    description: str
    handler: Handler
    scope: str                      # the API-key scope a caller needs: read, write, query, admin
    call_class: str                 # the rate-limit budget it spends: read, write, query
    # The kind of slow work it is (explorer, report, sync), whose per-tenant share of concurrent
    # calls it runs in (shares.py); None: quick work, bounded by its rate limit alone.
    share: str | None = None
    read_only: bool = True          # no side effects; also the transaction's access mode
    destructive: bool = False
    idempotent: bool = True
    open_world: bool = False        # reaches systems outside the store (a synced source)
    aliases: tuple[str, ...] = ()   # accepted on tools/call, never listed
    input_schema: dict[str, Any] | None = None   # default: read from <name>.input.json
    output_schema: dict[str, Any] | None = None  # default: read from <name>.output.json
    # A text block put before a successful result's JSON (the explorer marks rows as data).
    result_note: str | None = None
    # "optional": the handler may become a task (ctx.become_task) for a client that takes tasks;
    # "required": a client that does not is refused (-32021); None: always a plain call.
    task: str | None = None
    icon: str | None = None         # an icon of spiral_mcp/icons; default: the toolset's
    # The kinds of the tenant's data a successful write changes (spiral_mcp/changed_data),
    # announced to the resources showing them once its transaction committed (a stored answer
    # replayed, or a call that wrote nothing, announces nothing); its audit row is told too.
    changes: frozenset[str] = frozenset()

    @property
    def toolset(self) -> str:
        return self.name.split("_", 1)[0]


@dataclasses.dataclass(frozen=True, slots=True)
class _Compiled:
    tool: Tool
    listing: dict[str, Any]
    data_schema: dict[str, Any]     # the complete schema of a successful result's data
    check_arguments: ArgumentCheck
    # Parameters mirrored into request headers (x-mcp-header), checked against them over HTTP.
    header_params: tuple[HeaderParam, ...] = ()


def _unheard(scope: str) -> None:
    pass


def _load_schema(directory: Path, filename: str) -> dict[str, Any]:
    path = directory / filename
    try:
        schema = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"{path}: schema file missing") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    Draft202012Validator.check_schema(schema)
    return schema


def _shutting_down() -> dict[str, Any]:
    """The error of a call cut at the end of shutdown's grace period, or refused after it."""
    return ServiceError(
        ErrorCode.CONNECTION_ERROR,
        "the server is shutting down; the call was stopped before it finished (retry it)",
        retry_after=1.0,
    ).to_dict()


def _missing_scope(tool: Tool, principal: Principal) -> ServiceError:
    has = ", ".join(sorted(principal.scopes)) or "none"
    return ServiceError(
        ErrorCode.PERMISSION_DENIED,
        f"{tool.name} needs the API-key scope '{tool.scope}', which this key does not have "
        f"(its scopes: {has}); use a key with '{tool.scope}'",
        details=[{"scope": tool.scope, "key_scopes": sorted(principal.scopes)}],
    )


class ToolRegistry:
    """Every tool of the running server, with compiled validators; built once at start-up."""

    def __init__(
        self,
        tools: Iterable[Tool],
        *,
        enabled_toolsets: frozenset[str] | None,
        read_only_mode: bool,
        rate_limiter: Any,
        shares: Shares,
        audit: AuditWriter,
        idempotency: IdempotencyStore,
        metrics: Any,
        schema_dir: Path | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        schema_dir = schema_dir or Path(str(resources.files("spiral_mcp.schemas")))
        self._schema_dir = schema_dir
        # Told the scope of a tool added or removed once serving (its keys' lists changed).
        self.on_change: Callable[[str], None] = _unheard
        self._rate_limiter = rate_limiter
        self._shares = shares
        self._audit = audit
        self._idempotency = idempotency
        self._metrics = metrics
        # None: tracing is off (the one check a call makes for it).
        self.tracer = tracer
        self._tools: dict[str, _Compiled] = {}
        self._aliases: dict[str, str] = {}
        # The task of every call running now (a task runs one call at a time), and those cut
        # by shutdown (see stop_calls); once cut, no call starts.
        self._running: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self._idle = asyncio.Event()
        self._idle.set()
        for tool in tools:
            if enabled_toolsets is not None and tool.toolset not in enabled_toolsets:
                continue
            if read_only_mode and not tool.read_only:
                continue
            self._add(tool, schema_dir)

    def _add(self, tool: Tool, schema_dir: Path) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name} is declared twice")
        if tool.call_class not in CALL_CLASSES:
            raise ValueError(f"tool {tool.name}: unknown call class {tool.call_class!r}")
        if tool.task not in (None, "optional", "required"):
            raise ValueError(f"tool {tool.name}: task must be optional, required or None")
        if tool.share is not None and tool.share not in self._shares:
            raise ValueError(f"tool {tool.name}: no share of slow work named {tool.share!r}")
        input_schema = tool.input_schema or _load_schema(schema_dir, f"{tool.name}.input.json")
        data_schema = tool.output_schema or _load_schema(schema_dir, f"{tool.name}.output.json")
        Draft202012Validator.check_schema(input_schema)
        try:
            mirrored = header_params(input_schema)
        except ValueError as exc:
            raise ValueError(f"tool {tool.name}: {exc}") from None
        listed = listing(
            name=tool.name, title=tool.title, description=tool.description,
            input_schema=input_schema, data_schema=data_schema, read_only=tool.read_only,
            destructive=tool.destructive, idempotent=tool.idempotent,
            open_world=tool.open_world, icon=tool.icon or tool.toolset)
        self._tools[tool.name] = _Compiled(tool, listed, data_schema,
                                           ArgumentCheck(tool.name, input_schema), mirrored)
        for alias in tool.aliases:
            self._aliases[alias] = tool.name

    def add(self, tool: Tool) -> None:
        """Serve one more tool from now on; the keys that may call it are told their list
        changed."""
        self._add(tool, self._schema_dir)
        self.on_change(tool.scope)

    def remove(self, name: str) -> None:
        """Serve ``name`` no more (a call of it running now finishes); its keys are told."""
        compiled = self._tools.pop(name, None)
        if compiled is None:
            raise KeyError(f"no tool {name}")
        for alias in compiled.tool.aliases:
            self._aliases.pop(alias, None)
        self.on_change(compiled.tool.scope)

    async def _run(self, tool: Tool, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        key = arguments.get("idempotency_key") if not tool.read_only else None
        if key is None:
            return await tool.handler(ctx, arguments)
        outcome = await self._idempotency.claim(ctx.tenant_id, tool.name, key, arguments)
        if not isinstance(outcome, Claim):
            ctx.replayed = True
            return outcome
        ctx.claim = outcome
        try:
            return await tool.handler(ctx, arguments)
        except BaseException:
            # Nothing was written (the write's transaction rolled back): let a retry run. Unless
            # a source may have carried the change out: then the key stays claimed until its
            # lease ends, and a retry meanwhile is told the call is in progress.
            if not ctx.outcome_unknown:
                await self._idempotency.release(ctx.tenant_id, outcome)
            raise

    def _account(self, tool: Tool, ctx: ToolContext, arguments: Any, error_code: str | None,
                 elapsed: float) -> None:
        """Metrics and, unless the handler wrote its own in its transaction, the audit row."""
        metrics = self._metrics
        status = "ok" if error_code is None else (
            "input_required" if error_code == _INPUT_REQUIRED else "error")
        metrics.tool_calls.labels(tool.name, status).inc()
        metrics.tool_duration.labels(tool.name).observe(elapsed)
        if not ctx.audited:
            self._audit.enqueue(AuditEntry(
                tenant_id=ctx.principal.tenant_id, key_id=ctx.principal.key_id,
                actor=ctx.principal.user, tool=tool.name,
                arguments=(redact(arguments, depth=MAX_ARGUMENT_DEPTH)
                           if isinstance(arguments, dict) else None),
                outcome="error" if error_code else "ok", error_code=error_code,
                duration_ms=round(elapsed * 1000, 3), request_id=ctx.request_id,
                after=ctx.audit_after,
            ))

    def visible(self, principal: Principal) -> list[dict[str, Any]]:
        """The tool listings this key may call, in a stable order."""
        return [c.listing for name, c in sorted(self._tools.items())
                if c.tool.scope in principal.scopes]

    def scope_needed(self, name: str, principal: Principal) -> str | None:
        """The scope tool ``name`` (or alias) needs that ``principal`` lacks; None when it has
        it, or there is no such tool (its call fails as unknown later)."""
        compiled = self._tools.get(self._aliases.get(name, name))
        if compiled is None or compiled.tool.scope in principal.scopes:
            return None
        return compiled.tool.scope

    def task_support(self, name: str) -> str | None:
        """What a tool declares about running as a task (Tool.task); None for an unknown one."""
        compiled = self._tools.get(self._aliases.get(name, name))
        return compiled.tool.task if compiled is not None else None

    def header_params(self, name: str) -> tuple[HeaderParam, ...]:
        """The parameters tool ``name`` (or alias) mirrors into request headers; none for a
        tool that does not exist (its call fails as unknown later)."""
        compiled = self._tools.get(self._aliases.get(name, name))
        return compiled.header_params if compiled is not None else ()

    def __contains__(self, name: str) -> bool:
        return name in self._tools or name in self._aliases

    def result_schema(self, name: str, principal: Principal) -> dict[str, Any] | None:
        """The complete schema of the results of the tool ``name`` (its listing shows the
        envelope), or None when there is no such tool or this key may not call it."""
        compiled = self._tools.get(name)
        if compiled is None or compiled.tool.scope not in principal.scopes:
            return None
        return envelope_schema(compiled.data_schema)

    async def admit(self, principal: Principal, call_class: str) -> None:
        """Spend one call of ``call_class`` from the key's budget, or RATE_LIMITED. Tool calls,
        resource reads and prompts all draw on it."""
        await self._rate_limiter.admit(tenant_id=principal.tenant_id, key_id=principal.key_id,
                                       call_class=call_class)

    def take_share(self, kind: str | None, principal: Principal) -> AbstractContextManager[None]:
        """A place in the tenant's share of ``kind`` for the call (none needed for None), or
        RATE_LIMITED at once. A tool takes it after validation and before an idempotency key is
        claimed: a refused call did nothing and may be retried as it is."""
        if kind is None:
            return contextlib.nullcontext()
        try:
            return self._shares.take(kind, principal.tenant_id)
        except ShareExhausted as exc:
            raise ServiceError(
                ErrorCode.RATE_LIMITED, str(exc), retry_after=exc.retry_after,
                details=[{"share": exc.kind, "limit": exc.limit}],
            ) from None

    def stop_calls(self) -> int:
        """Shutdown's grace period is over: cut every call still running (each is answered
        CONNECTION_ERROR and audited, as its handler's cleanup, a rollback, completes) and
        refuse calls from now on. How many were cut."""
        self._stopped = True
        cut = 0
        for task in self._running - self._cut:
            if task.cancelling():
                continue  # already being stopped (a cancelled call, a task stopped by its runner)
            self._cut.add(task)
            task.cancel()
            cut += 1
        return cut

    async def calls_ended(self) -> None:
        """Return once no call runs."""
        await self._idle.wait()

    async def call(self, name: str, arguments: Any, ctx: ToolContext) -> dict[str, Any]:
        """Run one tool call; return the MCP CallToolResult."""
        compiled = self._tools.get(self._aliases.get(name, name))
        if compiled is None:
            raise RpcError(INVALID_PARAMS, f"unknown tool: {name}")
        tool = compiled.tool
        ctx.tool = tool.name  # called by an alias, it is still audited under its own name
        started = time.perf_counter()
        arguments = {} if arguments is None else arguments
        if self._stopped:
            # The rest of a batch, or a request that slipped in: nothing starts once calls
            # are cut.
            return self._result(tool, ctx, _shutting_down(), arguments, started)
        # Every suspension point of the call is inside the try below, so a cancel of this task
        # while it is registered lands there (see stop_calls).
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        self._idle.clear()
        try:
            if self.tracer is None:
                return await self._call(tool, compiled, ctx, arguments, started, task)
            return await self._traced_call(tool, compiled, ctx, arguments, started, task)
        finally:
            self._running.discard(task)
            self._cut.discard(task)
            if not self._running:
                self._idle.set()

    async def _traced_call(self, tool: Tool, compiled: _Compiled, ctx: ToolContext,
                           arguments: Any, started: float, task: asyncio.Task[Any]
                           ) -> dict[str, Any]:
        """The call in a span ``tools/call <tool>``: who called (tenant and key ids: an
        operator's to see, no secret) and how it ended; never an argument."""
        assert self.tracer is not None
        principal = ctx.principal
        attributes: dict[str, Any] = {
            "gen_ai.tool.name": tool.name, "gen_ai.operation.name": "execute_tool",
            "spiral.tenant_id": principal.tenant_text, "spiral.key_id": str(principal.key_id),
            "spiral.credential": principal.credential}
        if ctx.request_id is not None:
            attributes["spiral.request_id"] = ctx.request_id
        with mcp_span(self.tracer, "tools/call", tool.name, parent=ctx.trace_parent,
                      attributes=attributes, expected=(InputRequired,)) as span:
            result = await self._call(tool, compiled, ctx, arguments, started, task)
            envelope = result["structuredContent"]
            if envelope["success"]:
                span.set_attribute("spiral.outcome", "ok")
                if ctx.replayed:
                    span.set_attribute("spiral.replayed", True)
            else:
                # error.type "tool_error" as the MCP conventions say for an isError result;
                # which error, in our own attribute.
                span.set_attributes({"spiral.outcome": "error",
                                     "spiral.error_code": envelope["error"]["code"]})
                failed(span, "tool_error")
            return result

    async def _call(self, tool: Tool, compiled: _Compiled, ctx: ToolContext,
                    arguments: Any, started: float, task: asyncio.Task[Any]
                    ) -> dict[str, Any]:
        try:
            # Named, not hidden: every tenant is served the same tools, so saying which scope a
            # tool needs tells a key nothing about anyone's data, and "unknown tool" for a tool
            # README lists sent people looking for a typo. tools/list still shows only the
            # tools a key may call. Checked before the rate limit: a refusal spends no budget.
            if tool.scope not in ctx.principal.scopes:
                raise _missing_scope(tool, ctx.principal)
            await self.admit(ctx.principal, tool.call_class)
            arguments = compiled.check_arguments(arguments)
            with self.take_share(tool.share, ctx.principal):
                data = await self._run(tool, ctx, arguments)
            if tool.changes and ctx.audited and not ctx.replayed:
                # The handler returned, so its transaction (audit row included) committed.
                ctx.data_changed(tool.changes | {AUDIT_LOG})
            envelope: dict[str, Any] = {
                "success": True,
                "data": data,
                "tenant_id": ctx.principal.tenant_text,
                "timing_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if ctx.replayed:
                envelope["replayed"] = True
        except ServiceError as exc:
            envelope = {"success": False, "error": exc.to_dict()}
        except (InputRequired, RpcError) as exc:
            # Not the tool's result: a question for the client (the call ends until it answers;
            # its idempotency key, released, is claimed again by the call that brings the
            # answer) or a protocol error of the request's (-32021: it asks what the client
            # cannot answer; an answer that is not one). Accounted for, and passed on.
            code = _INPUT_REQUIRED if isinstance(exc, InputRequired) else "PROTOCOL_ERROR"
            self._account(tool, ctx, arguments, code, time.perf_counter() - started)
            raise
        except asyncio.CancelledError:
            if task not in self._cut:
                # Cancelled by the client: no answer goes out, but the call is still accounted
                # for.
                self._account(tool, ctx, arguments, "CANCELLED", time.perf_counter() - started)
                raise
            envelope = {"success": False, "error": _shutting_down()}
        except Exception:
            log.exception("tool failed", extra={"tool": tool.name})
            envelope = {"success": False, "error": ServiceError(
                ErrorCode.INTERNAL_ERROR, "the tool failed unexpectedly; the error is logged",
            ).to_dict()}
        if task in self._cut:
            # Cut by shutdown. The handler may have turned the cancel into an error of its own
            # (the rollback it interrupted) or, done already, let it pass: either way the call
            # is answered now, and its task is no longer being cancelled.
            task.uncancel()
            if not envelope["success"]:
                envelope = {"success": False, "error": _shutting_down()}
        return self._result(tool, ctx, envelope, arguments, started)

    def _result(self, tool: Tool, ctx: ToolContext, envelope: dict[str, Any], arguments: Any,
                started: float) -> dict[str, Any]:
        """Account for the call (metrics, audit) and wrap its envelope as a CallToolResult."""
        error_code = None if envelope["success"] else envelope["error"]["code"]
        self._account(tool, ctx, arguments, error_code, time.perf_counter() - started)
        content = [{"type": "text", "text": orjson.dumps(envelope).decode()}]
        if error_code is None:
            if ctx.attachments:
                content[:0] = ctx.attachments
            if tool.result_note is not None:
                content.insert(0, {"type": "text", "text": tool.result_note})
        return {
            "content": content,
            "structuredContent": envelope,
            "isError": error_code is not None,
        }
