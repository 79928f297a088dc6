"""The HTTP+SSE transport of protocol 2024-11-05: GET /sse holds the stream, POST /messages
brings the client's messages (202 Accepted), and every answer travels on the stream.

The transport has no resumption of its own. With sessions shared through Redis, the server
names each event ``<session>/<entry>``, and a GET /sse carrying such a ``Last-Event-ID`` (what an
EventSource sends when it reconnects by itself) takes the session's stream over on any process
and sends what the client missed: a process that dies or drains loses no legacy session."""

from __future__ import annotations

import contextlib
import logging
import re

from aiohttp import web

from ..server.keys import (
    BACKGROUND,
    DISPATCHER,
    KEY_STILL_VALID,
    PRINCIPAL,
    REQUEST_ID,
    SESSIONS,
    SETTINGS,
)
from .exchange import Exchange
from .http import (
    KeyNoLongerValid,
    StreamClosed,
    client_gone,
    parse_batch,
    read_json,
    run_messages,
    send,
    send_event,
    sse_stream,
    step_up,
    store_unavailable,
    stream_events,
)
from .jsonrpc import RpcError
from .sessions import Session, SessionLimitError, SessionStoreUnavailable

__all__ = ["routes"]

routes = web.RouteTableDef()

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


@routes.get("/sse")
async def stream(request: web.Request) -> web.StreamResponse:
    """A new session and its stream; with sessions shared through Redis, each event's id names
    its session, so a client whose stream broke (the process holding it died, or drained)
    reconnects with ``Last-Event-ID`` on any process and goes on with the same session, as an
    EventSource does by itself."""
    sessions = request.app[SESSIONS]
    try:
        resumed = await _resumed(request)
        session, after = resumed if resumed is not None else (await _new_session(request), None)
    except SessionLimitError as exc:
        raise web.HTTPTooManyRequests(text=str(exc)) from None
    except SessionStoreUnavailable:
        return store_unavailable()
    # Event ids only where another process can resume from them.
    ids = sessions.shares_streams
    left = True  # the client went away, or can make no request any more: the session ends
    held = True  # unless its stream was taken over meanwhile (the client resumed elsewhere)
    try:
        try:
            response = await sse_stream(request)
        except BaseException:
            with contextlib.suppress(SessionStoreUnavailable):
                await sessions.close_stream(session)
            raise
        try:
            await send(response, f"/messages?session_id={session.id}", event="endpoint",
                       event_id=_event_id(session, after or session.stream_start) if ids else None)
            async for entry, message in stream_events(
                    request, session, after=after, resumable=False,
                    key_still_valid=request.get(KEY_STILL_VALID)):
                await send_event(response, message,
                                 event_id=_event_id(session, entry) if ids else None)
            # Ended with the client still there: this process drains, or another one took the
            # stream over; either way the client goes on elsewhere.
            left = client_gone(request)
            response.stop_streaming()
        except (KeyNoLongerValid, SessionStoreUnavailable):
            response.stop_streaming()  # the session ends with its stream, below
        except StreamClosed:
            pass  # the client left or stalled; its session ends with its stream
        finally:
            with contextlib.suppress(SessionStoreUnavailable):
                held = await sessions.close_stream(session)
        return response
    finally:
        if left and held:
            with contextlib.suppress(SessionStoreUnavailable):  # else its keys expire
                await sessions.remove(session)


async def _new_session(request: web.Request) -> Session:
    sessions = request.app[SESSIONS]
    session = await sessions.create(
        key_id=request[PRINCIPAL].key_id, tenant_id=request[PRINCIPAL].tenant_id,
        scopes=request[PRINCIPAL].scopes, transport="sse", protocol_version="2024-11-05",
        max_concurrent_calls=request.app[SETTINGS].session_max_concurrent_calls,
    )
    await sessions.open_stream(session, after=None)
    return session


def _event_id(session: Session, entry: str | None) -> str:
    return f"{session.id}/{entry}"


async def _resumed(request: web.Request) -> tuple[Session, str] | None:
    """The caller's session and the event to resume after, from its ``Last-Event-ID``; None
    for a new session (no header, or sessions held in this process alone); 400, 404 or 409
    when the header names no stream of the caller's that can be resumed."""
    sessions = request.app[SESSIONS]
    header = request.headers.get("Last-Event-ID", "")
    if not header or not sessions.shares_streams:
        return None
    session_id, _, entry = header.partition("/")
    try:
        after = sessions.event_id(entry) if _SESSION_ID.match(session_id) else None
    except ValueError:
        after = None
    # A POST stream's id (``<stream>_<entry>``) is none of this transport's: its events are
    # the session stream's own entries.
    if after is None or "_" in after:
        raise web.HTTPBadRequest(text="Last-Event-ID must be an event id this server sent")
    principal = request[PRINCIPAL]
    session = await sessions.get(session_id, principal.key_id, tenant_id=principal.tenant_id,
                                 transport="sse")
    if session is None:
        raise web.HTTPNotFound(text="could not find session")
    # Taken over from whoever holds it (that process may be dead).
    if not await sessions.open_stream(session, after=after):
        raise web.HTTPConflict(text="this session's stream is open elsewhere")
    return session, after


@routes.post("/messages")
async def messages(request: web.Request) -> web.Response:
    session_id = request.query.get("session_id")
    if not session_id:
        raise web.HTTPBadRequest(text="session_id is required")
    if not _SESSION_ID.match(session_id):
        raise web.HTTPBadRequest(text="invalid session_id")
    principal = request[PRINCIPAL]
    try:
        session = await request.app[SESSIONS].get(session_id, principal.key_id,
                                                  tenant_id=principal.tenant_id, transport="sse")
    except SessionStoreUnavailable:
        return store_unavailable()
    if session is None:
        raise web.HTTPNotFound(text="could not find session")
    try:
        batch = parse_batch(await read_json(request), allow_batch=False)[0]
    except RpcError:
        raise web.HTTPBadRequest(text="could not parse message") from None
    if (refusal := step_up(request, batch)) is not None:
        return refusal
    exchange = Exchange(principal=request[PRINCIPAL], protocol_version=session.protocol_version,
                        transport="sse", http_request_id=request[REQUEST_ID], session=session)

    async def notify(message: dict) -> bool:
        return session.post(message)

    exchange.notify = notify
    # The answer goes on the stream, after this POST has been acknowledged. The stream may be
    # held by another process: posting to a shared session reaches it there.
    request.app[BACKGROUND].spawn(_run(request.app, batch, exchange, session))
    return web.Response(status=202, text="Accepted")


async def _run(app: web.Application, batch: list, exchange: Exchange, session: Session) -> None:
    answers = await run_messages(app[DISPATCHER], batch, exchange)
    # Kept before the answers leave: the client's next message may reach another process.
    try:
        await app[SESSIONS].save(session)
    except SessionStoreUnavailable:
        log.warning("could not save the session's changes: the session store is unreachable")
    for answer in answers:
        session.post(answer)
