"""Streamable HTTP at /mcp: the handshake eras (2025-03-26 … 2025-11-25, sessions) and the
stateless 2026-07-28 era, told apart by the MCP-Protocol-Version header as the official SDK does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any

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
from . import stateless_http
from .exchange import Exchange, can_ask
from .http import (
    KeyNoLongerValid,
    StreamClosed,
    accepts,
    answer,
    has_progress,
    http_error,
    json_body,
    parse_batch,
    read_body,
    rpc_error_response,
    run_messages,
    send_event,
    shown,
    sse_stream,
    step_up,
    store_unavailable,
    stream_events,
)
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    Request,
    RpcError,
    error_message,
    parse_message,
)
from .sessions import (
    Session,
    SessionLimitError,
    SessionState,
    SessionStoreUnavailable,
    check_client_description,
)
from .sse_answer import answer_as_stream
from .versions import (
    BATCHING_VERSIONS,
    DEFAULT_HEADERLESS_VERSION,
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    VERSION_HEADER,
    negotiate,
)

__all__ = ["routes"]

routes = web.RouteTableDef()

log = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
def _may_ask(session: Session, message: Any) -> bool:
    # A tool call of a client that can be asked things answers as a stream, so what it asks
    # travels on the call's own stream, as the transport prescribes, not on a GET stream the
    # client may not have opened yet.
    return isinstance(message, Request) and message.method == "tools/call" and can_ask(session)


@routes.post("/mcp")
async def post(request: web.Request) -> web.StreamResponse:
    version = request.headers.get(VERSION_HEADER)
    if version is not None and version not in HANDSHAKE_VERSIONS:
        return await stateless_http.post(request, version)
    value = await read_body(request, "application/json", "text/event-stream")
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
    if any(has_progress(m) or _may_ask(session, m) for m in messages):
        return await answer_as_stream(
            request, messages, errors, exchange, headers,
            unanswered=functools.partial(_unanswered, session),
            keep=functools.partial(_keep, request, session))
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
        return http_error(429, str(exc))
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
        return http_error(400, f"{SESSION_HEADER} header is required after initialize")
    version = request.headers.get(VERSION_HEADER, DEFAULT_HEADERLESS_VERSION)
    if version not in HANDSHAKE_VERSIONS:
        return http_error(400, f"unsupported {VERSION_HEADER}: {shown(version)}")
    principal = request[PRINCIPAL]
    try:
        session = await request.app[SESSIONS].get(
            session_id, principal.key_id, tenant_id=principal.tenant_id, transport="streamable",
            calls=calls)
    except SessionStoreUnavailable as exc:
        return store_unavailable(exc)
    if session is None:
        # Unknown, ended, expired, or opened by another key: all the same to the caller.
        return http_error(404, "session not found; initialize a new one")
    return session


def _exchange(request: web.Request, session: Session) -> Exchange:
    async def notify(message: dict[str, Any]) -> bool:
        # In JSON mode a request's notifications can only travel on the session's GET stream.
        return session.stream_open and session.post(message)

    return Exchange(principal=request[PRINCIPAL], protocol_version=session.protocol_version,
                    transport="streamable", http_request_id=request[REQUEST_ID],
                    session=session, notify=notify)


@routes.get("/mcp")
async def get(request: web.Request) -> web.StreamResponse:
    """The session's stream for server-initiated messages, resumable with Last-Event-ID."""
    version = request.headers.get(VERSION_HEADER)
    if version is not None and version in MODERN_VERSIONS:
        return http_error(405, "the stateless protocol has no GET stream")
    if not accepts(request, "text/event-stream"):
        return http_error(406, "Accept must list text/event-stream")
    session = await _session(request)
    if isinstance(session, web.Response):
        return session
    sessions = request.app[SESSIONS]
    try:
        after = sessions.event_id(request.headers.get("Last-Event-ID", ""))
    except ValueError as exc:
        return http_error(400, str(exc))
    try:
        # With a Last-Event-ID, a stream held elsewhere (by a process that may have died) is
        # taken over; without one, a second stream is refused.
        if not await sessions.open_stream(session, after=after):
            return http_error(409, "this session already has a stream open")
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
        return http_error(405, "the stateless protocol has no sessions to end")
    session = await _session(request)
    if isinstance(session, web.Response):
        return session
    if not await _end(request, session):
        return store_unavailable()
    return web.Response(status=204)


