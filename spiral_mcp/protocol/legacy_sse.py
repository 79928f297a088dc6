"""The HTTP+SSE transport of protocol 2024-11-05: GET /sse holds the stream, POST /messages
brings the client's messages (202 Accepted), and every answer travels on the stream."""

from __future__ import annotations

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
    session_messages,
    sse_stream,
    step_up,
)
from .jsonrpc import RpcError
from .sessions import Session, SessionLimitError

__all__ = ["routes"]

routes = web.RouteTableDef()

_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


@routes.get("/sse")
async def stream(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    sessions = request.app[SESSIONS]
    try:
        session = sessions.create(
            key_id=request[PRINCIPAL].key_id, tenant_id=request[PRINCIPAL].tenant_id,
            scopes=request[PRINCIPAL].scopes, transport="sse", protocol_version="2024-11-05",
            max_concurrent_calls=settings.session_max_concurrent_calls,
        )
    except SessionLimitError as exc:
        raise web.HTTPTooManyRequests(text=str(exc)) from None
    session.stream_open = True
    try:
        response = await sse_stream(request)
    except BaseException:
        # The client left before the stream began: the session must not outlive it.
        session.stream_open = False
        sessions.remove(session)
        raise
    try:
        await send(response, f"/messages?session_id={session.id}", event="endpoint")
        async for message in session_messages(request, session,
                                              key_still_valid=request.get(KEY_STILL_VALID)):
            await send_event(response, message)
        response.stop_streaming()
    except KeyNoLongerValid:
        response.stop_streaming()  # the session ends with its stream, below
    except StreamClosed:
        pass  # the client left or stalled; its session ends with its stream
    finally:
        session.stream_open = False
        sessions.remove(session)
    return response


@routes.post("/messages")
async def messages(request: web.Request) -> web.Response:
    session_id = request.query.get("session_id")
    if not session_id:
        raise web.HTTPBadRequest(text="session_id is required")
    if not _SESSION_ID.match(session_id):
        raise web.HTTPBadRequest(text="invalid session_id")
    session = request.app[SESSIONS].get(session_id, request[PRINCIPAL].key_id, transport="sse")
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
    # The answer goes on the stream, after this POST has been acknowledged.
    request.app[BACKGROUND].spawn(_run(request.app, batch, exchange, session))
    return web.Response(status=202, text="Accepted")


async def _run(app: web.Application, batch: list, exchange: Exchange, session: Session) -> None:
    for answer in await run_messages(app[DISPATCHER], batch, exchange):
        session.post(answer)

