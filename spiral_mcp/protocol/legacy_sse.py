"""The HTTP+SSE transport of protocol 2024-11-05: GET /sse holds the stream, POST /messages
brings the client's messages (202 Accepted), and every answer travels on the stream."""

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
    settings = request.app[SETTINGS]
    sessions = request.app[SESSIONS]
    try:
        session = await sessions.create(
            key_id=request[PRINCIPAL].key_id, tenant_id=request[PRINCIPAL].tenant_id,
            scopes=request[PRINCIPAL].scopes, transport="sse", protocol_version="2024-11-05",
            max_concurrent_calls=settings.session_max_concurrent_calls,
        )
        await sessions.open_stream(session, after=None)
    except SessionLimitError as exc:
        raise web.HTTPTooManyRequests(text=str(exc)) from None
    except SessionStoreUnavailable:
        return store_unavailable()
    try:
        try:
            response = await sse_stream(request)
        except BaseException:
            # The client left before the stream began: the session must not outlive it.
            with contextlib.suppress(SessionStoreUnavailable):
                await sessions.close_stream(session)
            raise
        try:
            await send(response, f"/messages?session_id={session.id}", event="endpoint")
            async for _, message in stream_events(request, session, after=None, resumable=False,
                                                  key_still_valid=request.get(KEY_STILL_VALID)):
                await send_event(response, message)
            response.stop_streaming()
        except (KeyNoLongerValid, SessionStoreUnavailable):
            response.stop_streaming()  # the session ends with its stream, below
        except StreamClosed:
            pass  # the client left or stalled; its session ends with its stream
        finally:
            with contextlib.suppress(SessionStoreUnavailable):
                await sessions.close_stream(session)
        return response
    finally:
        # A legacy session cannot be resumed: it ends with its stream (where the store is
        # away, its keys expire by themselves).
        with contextlib.suppress(SessionStoreUnavailable):
            await sessions.remove(session)


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
