"""The MCP dispatcher: one table from method name to handler, and the lifecycle around it.

Transports decode messages and hand each one here with an :class:`Exchange` that says who is
calling, over which session (if any) and how to send a notification related to the request. The
dispatcher knows no HTTP; it returns JSON-RPC response objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from ..auth import Principal
from ..db import Database
from ..errors import ErrorCode, ServiceError
from ..explorer import Explorer
from ..handlers import ToolRegistry
from ..handlers.context import InputRequired, ToolContext
from ..handlers.prompts import PromptRegistry
from ..handlers.resources import RESOURCE_NOT_FOUND, ResourceRegistry
from ..sources.access import SourceAccess
from ..tracing import mcp_span, meta_parent
from .changes import ChangeHub
from .exchange import LOG_LEVELS, Exchange, log_sender, progress_sender, session_asker
from .input_required import RequestStateSeal, Rounds
from .instructions import INSTRUCTIONS
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Message,
    Notification,
    Request,
    Response,
    RpcError,
    error_message,
    result_message,
)
from .modern import REMOVED_METHODS, SERVER_INFO_WITH_ICON, finish_result, log_level, modern_error
from .pagination import page
from .sessions import Session, SessionState, check_client_description
from .tasks import TASKS_EXTENSION, TaskRunner, client_capabilities
from .versions import SUPPORTED_VERSIONS, negotiate

__all__ = ["Dispatcher", "InsufficientScope"]

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100
MAX_URI_LENGTH = 2048
_COMPLETIONS = 100
_NOTIFICATIONS = frozenset({"notifications/initialized", "notifications/cancelled",
                            "notifications/progress", "notifications/roots/list_changed"})


def _uri(params: dict[str, Any]) -> str:
    uri = params.get("uri")
    if not isinstance(uri, str):
        raise RpcError(INVALID_PARAMS, 'a string "uri" is required')
    if len(uri) > MAX_URI_LENGTH:
        # A URI is the client's text and a subscription keeps it (in Redis too): bounded.
        raise RpcError(INVALID_PARAMS, f"a resource URI may be at most {MAX_URI_LENGTH} "
                                       "characters")
    return uri


@contextlib.asynccontextmanager
async def _as_rpc_errors(not_found: int) -> AsyncIterator[None]:
    """A resource reader's or prompt renderer's ServiceError as the JSON-RPC error it means
    (those methods answer with errors, not with result envelopes); NOT_FOUND as ``not_found``."""
    try:
        yield
    except ServiceError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            code = not_found
        elif exc.code == ErrorCode.VALIDATION_ERROR:
            code = INVALID_PARAMS
        else:
            code = INTERNAL_ERROR
        raise RpcError(code, exc.message, exc.to_dict()) from exc


# The methods that need a scope of their own, and the parameter naming what they use.
_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class InsufficientScope(Exception):
    """Requests of an OAuth user need product ``scopes`` its token did not grant; ``needed_by``
    names what needs them. The transport answers HTTP 403 with a step-up challenge naming the
    token scopes, so the client can ask the user for them and retry: a tool result saying
    PERMISSION_DENIED (what an API key gets, which cannot grow) would leave the model stuck."""

    def __init__(self, scopes: tuple[str, ...], needed_by: list[str]) -> None:
        super().__init__(f"{', '.join(needed_by)} needs more scope")
        self.scopes = scopes
        self.needed_by = needed_by


class Dispatcher:
    def __init__(self, *, registry: ToolRegistry, database: Database, metrics: Any,
                 explorer: Explorer | None = None, sources: SourceAccess | None = None,
                 resources: ResourceRegistry | None = None,
                 prompts: PromptRegistry | None = None, changes: ChangeHub,
                 tasks: TaskRunner | None = None,
                 request_state: RequestStateSeal | None = None) -> None:
        self.registry = registry
        # Seals the stateless era's requestState; without one given, a key of this process.
        self._request_state = request_state or RequestStateSeal(None, ttl=600.0)
        self._resources = resources or ResourceRegistry()
        self._prompts = prompts or PromptRegistry()
        # Whoever listens hears what changes: the tool and prompt lists, a tenant's resources.
        self.changes = changes
        registry.on_change = changes.tools_changed
        self._prompts.on_change = changes.prompts_changed
        self._database = database
        self._explorer = explorer
        self._sources = sources
        self._metrics = metrics
        self._tasks = tasks
        self._methods: dict[str, Callable[[dict[str, Any], Exchange], Awaitable[Any]]] = {
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
            "logging/setLevel": self._set_level,
            "server/discover": self._discover,
        }
        # Methods of what is registered only: a server with no resources has no resources/read.
        if self._resources:
            self._methods |= {
                "resources/list": self._resources_list,
                "resources/templates/list": self._resource_templates_list,
                "resources/read": self._resources_read,
                "resources/subscribe": self._resources_subscribe,
                "resources/unsubscribe": self._resources_unsubscribe,
            }
        if self._prompts:
            self._methods |= {"prompts/list": self._prompts_list, "prompts/get": self._prompts_get}
        if self._resources or self._prompts:
            self._methods["completion/complete"] = self._complete
        if tasks is not None:
            self._methods |= tasks.methods()

    def check_scopes(self, messages: Iterable[Message], principal: Principal) -> None:
        """Before any of ``messages`` runs: InsufficientScope when ``principal`` is an OAuth user
        and a request among them needs a scope its token lacks (every scope they need, in one
        challenge). API keys pass; their calls are refused in band, as tool results."""
        if principal.credential != "oauth":
            return
        needed: dict[str, None] = {}
        needed_by: list[str] = []
        for message in messages:
            if isinstance(message, Request) and (scope := self._scope_needed(message, principal)):
                needed[scope] = None
                needed_by.append(f"{message.method} {message.params.get(_NAMED[message.method])}")
        if needed:
            raise InsufficientScope(tuple(needed), needed_by)

    def _scope_needed(self, request: Request, principal: Principal) -> str | None:
        name = request.params.get(_NAMED.get(request.method, ""))
        if not isinstance(name, str):
            return None  # no such method here, or its call fails as invalid
        if request.method == "tools/call":
            return self.registry.scope_needed(name, principal)
        if request.method == "prompts/get":
            return self._prompts.scope_needed(name, principal)
        return self._resources.scope_needed(name, principal)

    @property
    def prompts(self) -> PromptRegistry:
        return self._prompts

    @property
    def resources(self) -> ResourceRegistry:
        return self._resources

    def capabilities(self) -> dict[str, Any]:
        # What the server really sends (see changes.py), on a listen stream or a session's GET
        # stream: tool and prompt list changes (ToolRegistry.add/remove, PromptRegistry's),
        # updates of a subscribed resource (ctx.resource_updated). The resource list itself is
        # fixed once serving, so no resources/list_changed.
        capabilities: dict[str, Any] = {"tools": {"listChanged": True}, "logging": {}}
        if self._resources:
            capabilities["resources"] = {"subscribe": True, "listChanged": False}
        if self._prompts:
            capabilities["prompts"] = {"listChanged": True}
        if self._resources or self._prompts:
            capabilities["completions"] = {}
        return capabilities

    async def handle_request(self, request: Request, exchange: Exchange) -> dict[str, Any] | None:
        """Answer one request; None when it was cancelled (a cancelled request gets no answer)."""
        self._metrics.mcp_requests.labels(self._method_label(request.method),
                                          exchange.transport).inc()
        handler = self._methods.get(request.method)
        try:
            if handler is None or (exchange.modern and request.method in REMOVED_METHODS) or (
                not exchange.modern and request.method == "server/discover"
            ):
                raise RpcError(METHOD_NOT_FOUND, f"method not found: {request.method}")
            self._check_lifecycle(request.method, exchange)
            if exchange.modern:
                log_level(request.params, LOG_LEVELS)  # an unknown level is refused first
            result = await self._run(handler, request, exchange)
        except RpcError as exc:
            if exchange.modern:
                exc = modern_error(exc, RESOURCE_NOT_FOUND)
            return error_message(request.id, exc)
        except InputRequired as exc:
            # Only an asking method's rounds raise it (tools/call, prompts/get, resources/read).
            result = exc.answer()
        except asyncio.CancelledError:
            # Re-raise when this very task is being cancelled (shutdown); a call stopped by
            # notifications/cancelled ends here and, as the protocol says, gets no answer.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None
        except Exception:
            log.exception("request failed", extra={"method": request.method})
            return error_message(request.id, RpcError(INTERNAL_ERROR, "internal error"))
        if exchange.modern and isinstance(result, dict):
            result = finish_result(request.method, result)
        return result_message(request.id, result)

    async def _run(self, handler: Any, request: Request, exchange: Exchange) -> Any:
        session = exchange.session
        if session is None or request.method != "tools/call":
            return await handler(request.params, exchange)
        # Tool calls on a session are registered by id so notifications/cancelled can stop
        # exactly that call, and counted to cap how many run at once on one session (a counter:
        # a call over the cap is refused, never queued, so a semaphore would only count).
        if session.state is SessionState.CLOSED:
            raise RpcError(INVALID_REQUEST, "the session has ended; initialize a new one")
        if session.state is SessionState.CLOSING:
            raise RpcError(INTERNAL_ERROR, "the server is shutting down and takes no new calls; "
                                           "retry on a new session")
        refusal = await session.claim_call(
            request.id, tool=name if isinstance(name := request.params.get("name"), str) else None,
            actor=exchange.principal.user,
            http_request_id=exchange.http_request_id)
        if refusal == "busy":
            raise RpcError(INTERNAL_ERROR, "too many calls in flight on this session; retry later")
        if refusal == "duplicate":
            # A cancellation names a request by id: two live calls with one id would be ambiguous.
            raise RpcError(INVALID_REQUEST, f"request id {request.id!r} is already in flight")
        if refusal is not None:
            raise RpcError(INTERNAL_ERROR, "the session store (Redis) is unreachable; retry in "
                                           "a moment")
        # The call runs in the request's own task (a task per call cost more than the rest of the
        # dispatch). A cancel takes the call out of ``inflight`` before it cancels the task: that
        # is how it is told apart from a cancellation of the request itself (shutdown), which is
        # passed on.
        task = asyncio.current_task()
        assert task is not None
        session.calls_running += 1
        session.inflight[request.id] = task
        try:
            return await handler(request.params, exchange)
        except asyncio.CancelledError:
            if session.inflight.get(request.id) is not task:
                task.uncancel()  # handle_request answers nothing unless more cancels remain
            raise
        finally:
            session.calls_running -= 1
            if session.inflight.get(request.id) is task:
                del session.inflight[request.id]
            await session.release_call(request.id)

    def _method_label(self, method: str) -> str:
        # Clients choose method names; a label per unknown name would grow without bound.
        return method if method in self._methods or method in _NOTIFICATIONS else "other"

    async def handle_notification(self, note: Notification, exchange: Exchange) -> None:
        self._metrics.mcp_requests.labels(self._method_label(note.method),
                                          exchange.transport).inc()
        session = exchange.session
        if session is None:
            return
        if note.method == "notifications/initialized":
            session.mark_ready()
        elif note.method == "notifications/cancelled":
            request_id = note.params.get("requestId")
            if isinstance(request_id, str | int) and not isinstance(request_id, bool):
                session.cancel_call(request_id)

    def _check_lifecycle(self, method: str, exchange: Exchange) -> None:
        session = exchange.session
        if session is None:
            return
        if method == "initialize" and session.handshake_done:
            raise RpcError(INVALID_REQUEST, "the session is already initialized")
        if method not in ("initialize", "ping") and not session.handshake_done:
            raise RpcError(INVALID_REQUEST, "send initialize first")

    # -- methods ---------------------------------------------------------------------------

    async def _initialize(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        # Stateless doors (/execute) need no handshake, and have no session; answer all the same.
        return self.initialize_result(params, session=exchange.session,
                                      transport=exchange.transport)

    def initialize_result(self, params: dict[str, Any], *, session: Session | None,
                          transport: str) -> dict[str, Any]:
        """Negotiate the version and describe the server; binds the version to ``session``."""
        version = negotiate(params.get("protocolVersion"))
        if session is not None:
            check_client_description(params)
            session.protocol_version = version
            session.handshake_done = True
            if isinstance(params.get("clientInfo"), dict):
                session.client_info = params["clientInfo"]
            if isinstance(params.get("capabilities"), dict):
                session.client_capabilities = params["capabilities"]
        if transport == "streamable":
            self._metrics.mcp_requests.labels("initialize", transport).inc()
        return {
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": dict(SERVER_INFO_WITH_ICON),
            "instructions": INSTRUCTIONS,
        }

    async def _discover(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        capabilities = self.capabilities()
        if self._tasks is not None:
            # Extensions are of the stateless era: the handshake eras never see this one.
            capabilities["extensions"] = {TASKS_EXTENSION: {}}
        # The server names itself in the result's _meta (modern.finish_result), not here.
        return {
            "supportedVersions": list(SUPPORTED_VERSIONS),
            "capabilities": capabilities,
            "instructions": INSTRUCTIONS,
        }

    async def _ping(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        return {}

    async def _set_level(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        level = params.get("level")
        if level not in LOG_LEVELS:
            raise RpcError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
        if exchange.session is not None:
            exchange.session.log_level = level
        return {}

    async def _tools_list(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        return page("tools", self.registry.visible(exchange.principal), params)

    def _context(self, exchange: Exchange, name: str) -> ToolContext:
        principal = exchange.principal
        return ToolContext(
            principal=principal, database=self._database, tool=name,
            explorer=self._explorer, sources=self._sources, request_id=exchange.http_request_id,
            resource_updated=functools.partial(self.changes.resource_updated,
                                               principal.tenant_id),
            data_changed=functools.partial(self.changes.data_changed, principal.tenant_id),
        )

    def _rounds(self, ctx: ToolContext, method: str, params: dict[str, Any],
                exchange: Exchange) -> None:
        """In the stateless era ``ctx`` asks through the request's rounds (its requestState
        checked first); an ask still unanswered ends the request in handle_request."""
        if exchange.modern:
            rounds = Rounds.begin(self._request_state, method=method, params=params,
                                  principal=exchange.principal)
            ctx.ask, ctx.client_capabilities = rounds.ask, rounds.capabilities

    def _traced(self, method: str, target: str | None, params: dict[str, Any],
                exchange: Exchange, **attributes: str) -> contextlib.AbstractContextManager[Any]:
        """The span of a resources/read or prompts/get (tool calls have theirs in the registry),
        parented as tracing.meta_parent says; nothing when tracing is off."""
        tracer = self.registry.tracer
        if tracer is None:
            return contextlib.nullcontext()
        principal = exchange.principal
        return mcp_span(tracer, method, target, parent=meta_parent(params), attributes={
            "spiral.tenant_id": principal.tenant_text, "spiral.key_id": str(principal.key_id),
            **attributes}, expected=(InputRequired,))

    async def _tools_call(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, 'tools/call needs a string "name"')
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        ctx = self._context(exchange, name)
        if self.registry.tracer is not None:
            ctx.trace_parent = meta_parent(params)
        self._rounds(ctx, "tools/call", params, exchange)
        # Without a token or a session nothing can be sent: the context's silent defaults serve,
        # and no closures are made for the call.
        if token is not None:
            ctx.progress = progress_sender(token, exchange)
        if exchange.session is not None:
            ctx.log = log_sender(name, exchange)
            ctx.ask = session_asker(exchange.session, exchange.notify)
            ctx.client_capabilities = exchange.session.client_capabilities
        elif exchange.modern and (level := log_level(params, LOG_LEVELS)) is not None:
            # The stateless era: a log level per request, in its _meta; none, no log messages.
            ctx.log = log_sender(name, exchange, level=level)
        if self._tasks is None:
            return await self.registry.call(name, params.get("arguments"), ctx)
        return await self._tasks.call_tool(
            lambda ctx: self.registry.call(name, params.get("arguments"), ctx), ctx,
            support=self.registry.task_support(name),
            capabilities=client_capabilities(params, exchange.protocol_version))

    async def _resources_list(self, params: dict[str, Any], exchange: Exchange
                              ) -> dict[str, Any]:
        return page("resources", self._resources.listed(exchange.principal), params)

    async def _resource_templates_list(self, params: dict[str, Any], exchange: Exchange
                                       ) -> dict[str, Any]:
        return page("resourceTemplates", self._resources.templates(exchange.principal), params)

    async def _resources_read(self, params: dict[str, Any], exchange: Exchange
                              ) -> dict[str, Any]:
        resource, values = self._resources.find(_uri(params), exchange.principal)
        ctx = self._context(exchange, resource.uri)
        self._rounds(ctx, "resources/read", params, exchange)
        # The resource's registered URI (a template's, for a templated one): the URI read may
        # name the tenant's items, as an argument does.
        with self._traced("resources/read", None, params, exchange, **{
                "spiral.resource": resource.uri}):
            async with _as_rpc_errors(not_found=RESOURCE_NOT_FOUND):
                await self.registry.admit(exchange.principal, resource.call_class)
                with self.registry.take_share(resource.share, exchange.principal):
                    contents = await resource.read(ctx, values)
        if exchange.modern:
            return {"contents": contents, "ttlMs": resource.ttl_ms}
        return {"contents": contents}

    async def _resources_subscribe(self, params: dict[str, Any], exchange: Exchange
                                   ) -> dict[str, Any]:
        uri = _uri(params)
        self._resources.find(uri, exchange.principal)  # only what exists and this key may read
        if exchange.session is None:
            raise RpcError(INVALID_REQUEST, "subscriptions need a session")
        if len(exchange.session.subscriptions) >= MAX_SUBSCRIPTIONS \
                and uri not in exchange.session.subscriptions:
            raise RpcError(INVALID_REQUEST, f"a session may hold at most {MAX_SUBSCRIPTIONS} "
                                            "subscriptions")
        exchange.session.subscriptions.add(uri)
        return {}

    async def _resources_unsubscribe(self, params: dict[str, Any], exchange: Exchange
                                     ) -> dict[str, Any]:
        uri = _uri(params)
        if exchange.session is not None:
            exchange.session.subscriptions.discard(uri)
        return {}

    async def _prompts_list(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        return page("prompts", self._prompts.listed(exchange.principal), params)

    async def _prompts_get(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        prompt = self._prompts.find(params.get("name"), exchange.principal)
        arguments = prompt.check(params.get("arguments"))
        ctx = self._context(exchange, prompt.name)
        self._rounds(ctx, "prompts/get", params, exchange)
        with self._traced("prompts/get", prompt.name, params, exchange,
                          **{"gen_ai.prompt.name": prompt.name}):
            async with _as_rpc_errors(not_found=INVALID_PARAMS):
                await self.registry.admit(exchange.principal, "read")
                messages = await prompt.render(ctx, arguments)
        return {"description": prompt.description, "messages": messages}

    async def _complete(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        """Values for a prompt's argument (its choices) or a resource template's (none known),
        starting with what the user has typed."""
        ref, argument = params.get("ref"), params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict) \
                or not isinstance(argument.get("name"), str) \
                or not isinstance(argument.get("value", ""), str):
            raise RpcError(INVALID_PARAMS,
                           'completion/complete needs a "ref" and an "argument" {name, value}')
        values: list[str] = []
        if ref.get("type") == "ref/prompt":
            prompt = self._prompts.find(ref.get("name"), exchange.principal)
            named = [a for a in prompt.arguments if a.name == argument["name"]]
            if not named:
                raise RpcError(INVALID_PARAMS, f"{prompt.name} has no argument {argument['name']}")
            async with _as_rpc_errors(not_found=INVALID_PARAMS):
                if named[0].complete is not None:  # it reads the tenant's data
                    await self.registry.admit(exchange.principal, "read")
                values = await named[0].completions(self._context(exchange, prompt.name),
                                                    argument.get("value", ""))
        elif ref.get("type") == "ref/resource":
            if self._resources.template(ref.get("uri"), exchange.principal) is None:
                raise RpcError(INVALID_PARAMS, f"unknown resource template: {ref.get('uri')}")
        else:
            raise RpcError(INVALID_PARAMS, 'ref.type must be "ref/prompt" or "ref/resource"')
        return {"completion": {"values": values[:_COMPLETIONS], "total": len(values),
                               "hasMore": len(values) > _COMPLETIONS}}

    def handle_response(self, response: Response, exchange: Exchange) -> None:
        """A client's answer to a request of ours goes to the call waiting for it."""
        if exchange.session is not None:
            exchange.session.answer(response.id, response.result, response.error)
