"""Streamable HTTP at /mcp: the handshake eras (2025-03-26 … 2025-11-25, sessions) and the
stateless 2026-07-28 era, told apart by the MCP-Protocol-Version header as the official SDK does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from ..server.keys import (
    DISPATCHER,
    KEY_STILL_VALID,
    METRICS,
    PRINCIPAL,
    REQUEST_ID,
    SESSIONS,
    SETTINGS,
)
from .changes import ListenLimitError
from .exchange import LOG_LEVELS, Exchange, can_ask
from .http import (
    KeyNoLongerValid,
    StreamClosed,
    answer,
    client_gone,
    json_body,
    parse_batch,
    read_json,
    rpc_error_response,
    run_messages,
    send,
    send_event,
    sse_stream,
    step_up,
    store_unavailable,
    stream_events,
)
from .jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Request,
    RpcError,
    error_message,
    parse_message,
)
from .listen import listen
from .modern import LOG_LEVEL_META, REMOVED_NOTIFICATIONS, log_level
from .param_headers import check_param_headers, decoded_header
from .sessions import (
    Session,
    SessionLimitError,
    SessionState,
    SessionStoreUnavailable,
    check_client_description,
)
from .versions import (
    BATCHING_VERSIONS,
    DEFAULT_HEADERLESS_VERSION,
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    PROTOCOL_VERSION_META,
    check_stateless_version,
    missing_stateless_meta,
    negotiate,
    unsupported,
)

__all__ = ["routes"]

routes = web.RouteTableDef()

log = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
# The wire status of a JSON-RPC error in the stateless era (the official SDK's table).
MODERN_ERROR_STATUS = {-32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400,
                       -32022: 400, METHOD_NOT_FOUND: 404}


# The parameter each method mirrors in the Mcp-Name header (streamable-http.mdx, Standard
# Headers; the tasks extension adds its methods' taskId, so a load balancer can route them to
# the process holding the task).
_NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
             "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}

# From this version on, a resumable SSE answer begins with an event of no data, whose id the client
# may resume from (2025-11-25's priming event); older clients might not expect an empty event.
PRIMING_VERSION = "2025-11-25"

# How often a stateless request checks whether its client is still connected.
DISCONNECT_POLL_SECONDS = 0.1

_T = TypeVar("_T")


@functools.lru_cache(maxsize=64)
def _accept_allows(accept: str, media_types: tuple[str, ...]) -> bool:
    # A client sends the same Accept header on every request: answer each one once.
    offered = frozenset(part.split(";")[0].strip().lower() for part in accept.split(","))
    if "*/*" in offered:
        return True
    return all(m in offered or f"{m.split('/')[0]}/*" in offered for m in media_types)


def _accepts(request: web.Request, *media_types: str) -> bool:
    return _accept_allows(request.headers.get("Accept", ""), media_types)


def _is_json(request: web.Request) -> bool:
    return request.content_type == "application/json"


def _shown(header_value: str) -> str:
    """A header value fit to repeat in an answer: aiohttp decodes headers with surrogateescape,
    and a lone surrogate cannot be encoded as JSON (a 500), so whatever is not printable ASCII
    is escaped."""
    if header_value.isascii() and header_value.isprintable():
        return header_value
    return "".join(c if c.isascii() and c.isprintable() else f"\\u{ord(c):04x}"
                   for c in header_value)


def _http_error(status: int, message: str) -> web.Response:
    return json_body({"jsonrpc": "2.0", "id": None,
                      "error": {"code": INVALID_REQUEST, "message": message}}, status=status)


async def _read_body(request: web.Request, *media_types: str) -> Any:
    """The POST body as JSON, or the HTTP answer that refuses it: 406 when Accept lacks one of
    ``media_types``, 415 for another Content-Type, 400 (-32700) for a body that is not JSON."""
    if not _accepts(request, *media_types):
        return _http_error(406, f"Accept must list {' and '.join(media_types)}")
    if not _is_json(request):
        return _http_error(415, "Content-Type must be application/json")
    try:
        return await read_json(request)
    except RpcError as exc:
        return rpc_error_response(exc)


def _has_progress(message: Any) -> bool:
    return (isinstance(message, Request) and isinstance(message.params.get("_meta"), dict)
            and "progressToken" in message.params["_meta"])


def _may_ask(session: Session, message: Any) -> bool:
    # A tool call of a client that can be asked things answers as a stream, so what it asks
    # travels on the call's own stream, as the transport prescribes, not on a GET stream the
    # client may not have opened yet.
    return isinstance(message, Request) and message.method == "tools/call" and can_ask(session)


@routes.post("/mcp")
async def post(request: web.Request) -> web.StreamResponse:
    version = request.headers.get(VERSION_HEADER)
    if version is not None and version not in HANDSHAKE_VERSIONS:
        return await _post_stateless(request, version)
    value = await _read_body(request, "application/json", "text/event-stream")
    if isinstance(value, web.Response):
        return value
    if isinstance(value, dict) and value.get("method") == "initialize":
        return await _initialize(request, value)
    if isinstance(value, list) and any(
            isinstance(m, dict) and m.get("method") == "initialize" for m in value):
        return rpc_error_response(RpcError(INVALID_REQUEST, "initialize must not be batched"))
    calls = _tool_calls(request, value)
    session = await _session(request, calls=calls)
    if isinstance(session, web.Response):
        return session
    try:
        return await _run_on_session(request, value, session)
    finally:
        if calls:
            request.app[SESSIONS].release_unclaimed(session, [c[0] for c in calls])


def _tool_calls(request: web.Request, value: Any) -> list[tuple[Any, dict[str, Any]]] | None:
    """A shared store claims a tool call's place with the session's lookup (one round trip
    less): the call a single request body brings, with what the store records of it."""
    if not (request.app[SESSIONS].shares_streams and isinstance(value, dict)
            and value.get("method") == "tools/call" and isinstance(value.get("params"), dict)
            and isinstance(request_id := value.get("id"), str | int)
            and not isinstance(request_id, bool)):
        return None
    name = value["params"].get("name")
    return [(request_id, {"tool": name if isinstance(name, str) else None,
                          "actor": request[PRINCIPAL].user, "request": request[REQUEST_ID]})]


async def _run_on_session(request: web.Request, value: Any,
                          session: Session) -> web.StreamResponse:
    try:
        messages, errors = parse_batch(
            value, allow_batch=session.protocol_version in BATCHING_VERSIONS)
    except RpcError as exc:
        return rpc_error_response(exc)
    if (refusal := step_up(request, messages)) is not None:
        return refusal
    exchange = _exchange(request, session)
    headers = {SESSION_HEADER: session.id}
    if any(_has_progress(m) or _may_ask(session, m) for m in messages):
        return await _answer_as_stream(request, messages, errors, exchange, headers)
    answers = errors + await run_messages(request.app[DISPATCHER], messages, exchange,
                                          unanswered=functools.partial(_unanswered, session))
    await _keep(request, session)
    return answer(answers, batch=isinstance(value, list), headers=headers)


def _unanswered(session: Session, request: Request) -> dict[str, Any]:
    """The answer of a call that ended without one (cancelled by the client, by DELETE or at
    the end of shutdown's grace): the transport owes a POSTed request an answer, never an empty
    202, and the client ignores it if it was the one that cancelled."""
    reason = ("the session ended before the call finished" if session.state is SessionState.CLOSED
              else "the request was cancelled")
    return error_message(request.id, RpcError(INTERNAL_ERROR, reason))


async def _initialize(request: web.Request, value: dict[str, Any]) -> web.Response:
    try:
        message = parse_message(value)
    except RpcError as exc:
        return rpc_error_response(exc)
    if not isinstance(message, Request):
        return rpc_error_response(RpcError(INVALID_REQUEST, "initialize must be a request"))
    try:
        check_client_description(message.params)  # before a session is made for it
    except RpcError as exc:
        return rpc_error_response(exc, request_id=message.id)
    settings = request.app[SETTINGS]
    sessions = request.app[SESSIONS]
    try:
        session = await sessions.create(
            key_id=request[PRINCIPAL].key_id, tenant_id=request[PRINCIPAL].tenant_id,
            scopes=request[PRINCIPAL].scopes, transport="streamable",
            protocol_version=negotiate(message.params.get("protocolVersion")),
            max_concurrent_calls=settings.session_max_concurrent_calls,
        )
        result = request.app[DISPATCHER].initialize_result(
            message.params, session=session, transport="streamable")
        await sessions.save(session)
    except SessionLimitError as exc:
        return _http_error(429, str(exc))
    except SessionStoreUnavailable as exc:
        return store_unavailable(exc)
    return json_body({"jsonrpc": "2.0", "id": message.id, "result": result},
                     headers={SESSION_HEADER: session.id})


async def _keep(request: web.Request, session: Session) -> None:
    """Keep what a request changed of its session (level, subscriptions, readiness)."""
    try:
        await request.app[SESSIONS].save(session)
    except SessionStoreUnavailable:
        # The answer is made; the client learns of the outage from its next request.
        log.warning("could not save the session's changes: the session store is unreachable")


async def _session(request: web.Request, *,
                   calls: list[tuple[Any, dict[str, Any]]] | None = None
                   ) -> Session | web.Response:
    """The caller's session, or the HTTP answer for a missing, bad or foreign one (``calls``:
    see SessionStore.get)."""
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        return _http_error(400, f"{SESSION_HEADER} header is required after initialize")
    version = request.headers.get(VERSION_HEADER, DEFAULT_HEADERLESS_VERSION)
    if version not in HANDSHAKE_VERSIONS:
        return _http_error(400, f"unsupported {VERSION_HEADER}: {_shown(version)}")
    principal = request[PRINCIPAL]
    try:
        session = await request.app[SESSIONS].get(
            session_id, principal.key_id, tenant_id=principal.tenant_id, transport="streamable",
            calls=calls)
    except SessionStoreUnavailable as exc:
        return store_unavailable(exc)
    if session is None:
        # Unknown, ended, expired, or opened by another key: all the same to the caller.
        return _http_error(404, "session not found; initialize a new one")
    return session


def _exchange(request: web.Request, session: Session) -> Exchange:
    async def notify(message: dict[str, Any]) -> bool:
        # In JSON mode a request's notifications can only travel on the session's GET stream.
        return session.stream_open and session.post(message)

    return Exchange(principal=request[PRINCIPAL], protocol_version=session.protocol_version,
                    transport="streamable", http_request_id=request[REQUEST_ID],
                    session=session, notify=notify)


async def _answer_as_stream(request: web.Request, messages: list[Any], errors: list[Any],
                            exchange: Exchange, headers: dict[str, str], *,
                            cancel_on_disconnect: bool = False) -> web.StreamResponse:
    """An SSE answer: the requests' notifications (progress, log) first, then their answers.

    On a session shared through Redis, every event is recorded there too (shared_posts.py), so
    a client that lost this stream resumes it with GET and Last-Event-ID on any process: then
    what the calls send goes on being recorded after the client has gone.
    """
    stream = await sse_stream(request, headers=headers)
    recorder = (None if exchange.session is None else request.app[SESSIONS].post_stream(
        exchange.session, [m.id for m in messages if isinstance(m, Request)]))
    closed = False
    if recorder is not None and exchange.protocol_version >= PRIMING_VERSION:
        try:
            await send(stream, "", event="message", event_id=recorder.prime())
        except StreamClosed:
            closed = True

    async def notify(message: dict[str, Any]) -> bool:
        nonlocal closed
        event_id = recorder.record(message) if recorder is not None else None
        if not closed:
            try:
                await send_event(stream, message, event_id=event_id)
            except StreamClosed:
                closed = True  # the client went away; that is not a cancel
        return event_id is not None or not closed

    exchange.notify = notify
    try:
        unanswered = (functools.partial(_unanswered, exchange.session)
                      if exchange.session is not None else None)
        work = run_messages(request.app[DISPATCHER], messages, exchange, unanswered=unanswered)
        if cancel_on_disconnect:
            answered = await _cancel_on_disconnect(request, work)
            if answered is None:
                return stream  # the client cancelled by closing the stream; no one to answer
        else:
            answered = await work
        answers = errors + answered
        if exchange.session is not None:
            # Kept before the answers leave: the client's next request may reach another
            # process, which must see what these changed.
            await _keep(request, exchange.session)
        for message in answers:
            await notify(message)
    finally:
        if recorder is not None:
            recorder.finish()
        stream.stop_streaming()
    return stream


@routes.get("/mcp")
async def get(request: web.Request) -> web.StreamResponse:
    """The session's stream for server-initiated messages, resumable with Last-Event-ID."""
    version = request.headers.get(VERSION_HEADER)
    if version is not None and version in MODERN_VERSIONS:
        return _http_error(405, "the stateless protocol has no GET stream")
    if not _accepts(request, "text/event-stream"):
        return _http_error(406, "Accept must list text/event-stream")
    session = await _session(request)
    if isinstance(session, web.Response):
        return session
    sessions = request.app[SESSIONS]
    try:
        after = sessions.event_id(request.headers.get("Last-Event-ID", ""))
    except ValueError as exc:
        return _http_error(400, str(exc))
    try:
        # With a Last-Event-ID, a stream held elsewhere (by a process that may have died) is
        # taken over; without one, a second stream is refused.
        if not await sessions.open_stream(session, after=after):
            return _http_error(409, "this session already has a stream open")
    except SessionStoreUnavailable as exc:
        return store_unavailable(exc)
    metrics = request.app[METRICS]
    try:
        stream = await sse_stream(request, headers={SESSION_HEADER: session.id})
        try:
            async for event_id, message in stream_events(
                    request, session, after=after, resumable=True,
                    key_still_valid=request.get(KEY_STILL_VALID)):
                await send_event(stream, message, event_id=event_id)
                metrics.mcp_requests.labels(message.get("method", "response"), "stream").inc()
        except (StreamClosed, SessionStoreUnavailable):
            pass  # the client left or stalled, or Redis is away: it may resume (Last-Event-ID)
        except KeyNoLongerValid:
            # Its key (or its user's binding) can make no request any more: the session ends
            # (cancelling what runs on it) with the stream, rather than idling out half an hour
            # later. An access token expiring is routine, not an end: its user comes back with
            # a refreshed one, to the same session (keyed by the user, not the token), so only
            # the stream ends.
            principal = request[PRINCIPAL]
            if principal.credential != "oauth" or time.time() < (principal.expires_at or 0):
                await _end(request, session)
        stream.stop_streaming()
        return stream
    finally:
        with contextlib.suppress(SessionStoreUnavailable):  # its mark expires by itself
            await sessions.close_stream(session)


async def _end(request: web.Request, session: Session) -> bool:
    """End the session everywhere; False when the store could not be reached."""
    try:
        await request.app[SESSIONS].remove(session)
    except SessionStoreUnavailable:
        return False
    return True


@routes.delete("/mcp")
async def delete(request: web.Request) -> web.Response:
    version = request.headers.get(VERSION_HEADER)
    if version is not None and version in MODERN_VERSIONS:
        return _http_error(405, "the stateless protocol has no sessions to end")
    session = await _session(request)
    if isinstance(session, web.Response):
        return session
    if not await _end(request, session):
        return store_unavailable()
    return web.Response(status=204)


# -- the stateless era (2026-07-28) ---------------------------------------------------------

async def _post_stateless(request: web.Request, version: str) -> web.StreamResponse:
    value = await _read_body(request, "application/json")
    if isinstance(value, web.Response):
        return value
    if not isinstance(value, dict):
        return rpc_error_response(RpcError(
            INVALID_REQUEST, "the body must be one JSON-RPC request or notification"))
    if "id" not in value:
        if version not in MODERN_VERSIONS:
            return rpc_error_response(unsupported(_shown(version)))
        if value.get("method") in REMOVED_NOTIFICATIONS:
            return rpc_error_response(RpcError(
                METHOD_NOT_FOUND, f"method not found: {_shown(str(value['method']))}"),
                status=MODERN_ERROR_STATUS[METHOD_NOT_FOUND])
        return web.Response(status=202)
    try:
        message = parse_message(value)
    except RpcError as exc:
        return rpc_error_response(exc)
    if not isinstance(message, Request):
        return rpc_error_response(RpcError(INVALID_REQUEST, "expected a request"))
    if (rejection := _ladder(request, message)) is not None:
        return rpc_error_response(rejection, request_id=message.id)
    if (refusal := step_up(request, [message])) is not None:
        return refusal
    exchange = Exchange(principal=request[PRINCIPAL], protocol_version=version,
                        transport="streamable", http_request_id=request[REQUEST_ID])
    if message.method == "subscriptions/listen":
        return await _listen(request, message, exchange)
    if (_has_progress(message) or _has_log_level(message)) \
            and _accepts(request, "text/event-stream"):
        return await _answer_as_stream(request, [message], [], exchange, {},
                                       cancel_on_disconnect=True)
    reply = await _cancel_on_disconnect(
        request, request.app[DISPATCHER].handle_request(message, exchange))
    if reply is None:
        return web.Response(status=202)
    status = MODERN_ERROR_STATUS.get(reply["error"]["code"], 200) if "error" in reply else 200
    return json_body(reply, status=status)


def _has_log_level(message: Request) -> bool:
    meta = message.params.get("_meta")
    return isinstance(meta, dict) and meta.get(LOG_LEVEL_META) is not None


async def _listen(request: web.Request, message: Request,
                  exchange: Exchange) -> web.StreamResponse:
    if not _accepts(request, "text/event-stream"):
        return _http_error(406, "Accept must list text/event-stream for subscriptions/listen")
    try:
        return await listen(request, message, exchange, request.app[DISPATCHER],
                            key_still_valid=request.get(KEY_STILL_VALID))
    except RpcError as exc:
        return rpc_error_response(exc, request_id=message.id,
                                  status=MODERN_ERROR_STATUS.get(exc.code, 400))
    except ListenLimitError as exc:
        return rpc_error_response(RpcError(INVALID_REQUEST, str(exc)), request_id=message.id,
                                  status=429)


async def _cancel_on_disconnect(request: web.Request, work: Awaitable[_T]) -> _T | None:
    """Run ``work``; cancel it when the client goes away, and then return None.

    In the stateless era there are no client notifications: closing the response stream is how a
    client cancels a request. (The handshake eras differ: there a disconnect is not a cancel,
    notifications/cancelled is.) aiohttp does not cancel handlers on a lost connection by default,
    so the request's work watches its connection itself.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if client_gone(request):
                task.cancel()
                await asyncio.wait({task})
                return None
    except asyncio.CancelledError:
        task.cancel()
        raise


def _repeated(request: web.Request) -> RpcError | None:
    """HeaderMismatch for an ``Mcp-*`` or version header sent twice with different values: the
    checks below read the first, and a gateway routing on the same header may read the last
    or both joined, so the two would decide on different values."""
    seen: dict[str, str] = {}
    for name, value in request.headers.items():
        folded = name.lower()
        if not folded.startswith("mcp-"):
            continue
        if seen.setdefault(folded, value) != value:
            return RpcError(HEADER_MISMATCH, f"{name} header is sent more than once, with "
                                             "different values")
    return None


def _ladder(request: web.Request, message: Request) -> RpcError | None:
    """The stateless era's checks, in the specification's order; the first failure wins."""
    if (missing := missing_stateless_meta(message.params)) is not None:
        return missing
    if (repeated := _repeated(request)) is not None:
        return repeated
    body_version = message.params["_meta"][PROTOCOL_VERSION_META]
    if request.headers.get(VERSION_HEADER) != body_version:
        return RpcError(HEADER_MISMATCH,
                        f"{VERSION_HEADER} header does not match params._meta's protocol version")
    if request.headers.get("Mcp-Method") != message.method:
        return RpcError(HEADER_MISMATCH, "Mcp-Method header does not match the body's method")
    if (named := _NAMED_BY.get(message.method)) is not None:
        name = message.params.get(named)
        header = request.headers.get("Mcp-Name")
        if name is not None and (header is None or decoded_header(header) != name):
            return RpcError(HEADER_MISMATCH, f"Mcp-Name header does not match params.{named}")
    if message.method == "tools/call" and isinstance(message.params.get("name"), str):
        mirrored = request.app[DISPATCHER].registry.header_params(message.params["name"])
        if mirrored and (mismatch := check_param_headers(
                request.headers, mirrored, message.params.get("arguments"))) is not None:
            return mismatch
    if (problem := check_stateless_version(body_version)) is not None:
        return problem
    try:
        log_level(message.params, LOG_LEVELS)  # refused before a stream opens for its messages
    except RpcError as exc:
        return exc
    return None
