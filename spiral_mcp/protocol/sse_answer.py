"""An SSE answer to POSTed requests, in either era of /mcp: their notifications (progress,
log messages, what a tool asks) first, then their answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..server.keys import DISPATCHER, SESSIONS
from .exchange import Exchange
from .http import StreamClosed, cancel_on_disconnect, run_messages, send, send_event, sse_stream
from .jsonrpc import Request

__all__ = ["PRIMING_VERSION", "answer_as_stream"]

# From this version on, a resumable SSE answer begins with an event of no data, whose id the client
# may resume from (2025-11-25's priming event); older clients might not expect an empty event.
PRIMING_VERSION = "2025-11-25"


async def answer_as_stream(
    request: web.Request, messages: list[Any], errors: list[Any], exchange: Exchange,
    headers: dict[str, str], *, until_disconnect: bool = False,
    unanswered: Callable[[Request], dict[str, Any]] | None = None,
    keep: Callable[[], Awaitable[None]] | None = None,
) -> web.StreamResponse:
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
        work = run_messages(request.app[DISPATCHER], messages, exchange, unanswered=unanswered)
        if until_disconnect:
            answered = await cancel_on_disconnect(request, work)
            if answered is None:
                return stream  # the client cancelled by closing the stream; no one to answer
        else:
            answered = await work
        answers = errors + answered
        if keep is not None:
            # Kept before the answers leave: the client's next request may reach another
            # process, which must see what these changed.
            await keep()
        for message in answers:
            await notify(message)
    finally:
        if recorder is not None:
            recorder.finish()
        stream.stop_streaming()
    return stream
