"""What every HTTP transport shares: reading a body within bounds, JSON answers, SSE frames,
and running a list of decoded messages through the dispatcher."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ..oauth.challenges import bearer_challenge, token_scopes
from ..server.keys import DISPATCHER, PRINCIPAL, SESSIONS, SETTINGS
from .dispatcher import Dispatcher, InsufficientScope
from .exchange import Exchange
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    Message,
    Notification,
    Request,
    RpcError,
    decode,
    error_message,
    parse_message,
)
from .sessions import Session, SessionState, SessionStoreUnavailable

__all__ = [
    "BODY_READ_SECONDS",
    "KeyNoLongerValid",
    "StreamClosed",
    "accepts",
    "answer",
    "cancel_on_disconnect",
    "client_gone",
    "has_progress",
    "http_error",
    "json_body",
    "queued_messages",
    "read_body",
    "read_json",
    "rpc_error_response",
    "run_messages",
    "send",
    "send_event",
    "session_messages",
    "shown",
    "sse_stream",
    "step_up",
    "store_unavailable",
    "stream_events",
]

# A client that trickles its body this slowly is holding a connection hostage.
BODY_READ_SECONDS = 30.0
SSE_PING_SECONDS = 15.0
# An SSE client that has taken nothing for this long has stalled (its buffers and ours are
# full): aiohttp-sse (3.x) then aborts the connection rather than hold the sender forever.
SSE_SEND_SECONDS = 30.0
# JSON-RPC batches bigger than this are refused before any of it runs.
MAX_BATCH = 100
# How often a waiting stream checks that its client is still there.
STREAM_POLL_SECONDS = 0.5
# How often a stateless request checks whether its client is still connected.
DISCONNECT_POLL_SECONDS = 0.1

_T = TypeVar("_T")


# What a client is told to wait before retrying when the session store (Redis) is away.
STORE_RETRY_SECONDS = 2


def store_unavailable(exc: SessionStoreUnavailable | None = None) -> web.Response:
    """HTTP 503: the shared session store (Redis) cannot be reached; retry (never a 500)."""
    return json_body({"jsonrpc": "2.0", "id": None, "error": {
        "code": INTERNAL_ERROR, "message": "the session store (Redis) is unreachable; retry in a "
                                           f"moment (Retry-After: {STORE_RETRY_SECONDS} s)"}},
        status=503, headers={"Retry-After": str(STORE_RETRY_SECONDS)})


def json_body(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None
              ) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status,
                        content_type="application/json", headers=headers)


def rpc_error_response(error: RpcError, *, status: int = 400,
                       request_id: Any = None) -> web.Response:
    return json_body(error_message(request_id if request_id is not None else error.request_id,
                                   error), status=status)


async def read_json(request: web.Request) -> Any:
    """The body as a JSON value; RpcError(-32700) when it is not JSON. 413/408 as HTTP errors."""
    if request.content.is_eof():
        body = await request.read()  # all of it has arrived: nothing to wait for, no timer
    else:
        try:
            async with asyncio.timeout(BODY_READ_SECONDS):
                body = await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(text="the request body arrived too slowly") from None
    if not body:
        raise RpcError(PARSE_ERROR, "the body is empty")
    return decode(body)


def parse_batch(value: Any, *, allow_batch: bool) -> tuple[list[Message], list[dict[str, Any]]]:
    """Messages to run, and error answers for the entries that were not messages."""
    if isinstance(value, list):
        if not allow_batch:
            raise RpcError(INVALID_REQUEST, "JSON-RPC batches are not allowed here")
        if not value:
            raise RpcError(INVALID_REQUEST, "an empty batch is not a request")
        if len(value) > MAX_BATCH:
            raise RpcError(INVALID_REQUEST, f"a batch may hold at most {MAX_BATCH} messages")
        entries = value
    else:
        entries = [value]
    messages: list[Message] = []
    errors: list[dict[str, Any]] = []
    for entry in entries:
        try:
            messages.append(parse_message(entry))
        except RpcError as exc:
            if not isinstance(value, list):
                raise
            errors.append(error_message(exc.request_id, exc))
    return messages, errors


def step_up(request: web.Request, messages: list[Message]) -> web.Response | None:
    """HTTP 403 with a step-up challenge when the caller is an OAuth user whose token lacks a
    scope one of ``messages`` needs (none of them runs); None to go on. Asked before running
    them, as an answer's HTTP status cannot change once a stream has begun."""
    try:
        request.app[DISPATCHER].check_scopes(messages, request[PRINCIPAL])
    except InsufficientScope as exc:
        settings = request.app[SETTINGS]
        scopes = " ".join(token_scopes(settings, exc.scopes))
        message = (f"{'; '.join(exc.needed_by)}: this token lacks the scope {scopes}; "
                   "authorize it and retry with the new token")
        challenge = bearer_challenge(settings, error="insufficient_scope", description=message,
                                     scopes=exc.scopes)
        return json_body({"error": {"code": "INSUFFICIENT_SCOPE", "message": message}},
                         status=403, headers={"WWW-Authenticate": challenge})
    return None


async def run_messages(
    dispatcher: Dispatcher, messages: list[Message], exchange: Exchange, *,
    unanswered: Callable[[Request], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run messages in order; the answers of the requests among them.

    A cancelled request has no answer of its own; ``unanswered`` makes one where the transport
    owes every request an answer (a POSTed request never gets an empty 202).
    """
    answers = []
    for message in messages:
        if isinstance(message, Request):
            answer_ = await dispatcher.handle_request(message, exchange)
            if answer_ is None and unanswered is not None:
                answer_ = unanswered(message)
            if answer_ is not None:
                answers.append(answer_)
        elif isinstance(message, Notification):
            await dispatcher.handle_notification(message, exchange)
        else:
            dispatcher.handle_response(message, exchange)
    return answers


def answer(answers: list[dict[str, Any]], *, batch: bool,
           headers: dict[str, str] | None = None) -> web.Response:
    """The HTTP answer: 202 when nothing needs answering, else the JSON (array for a batch)."""
    if not answers:
        return web.Response(status=202, headers=headers)
    return json_body(answers if batch else answers[0], headers=headers)


class StreamClosed(Exception):
    """An SSE stream cannot take more: its client left, or stalled and was cut off."""


class KeyNoLongerValid(Exception):
    """The key that opened a stream was revoked or has expired: the stream and its session end."""


async def sse_stream(request: web.Request, *, headers: dict[str, str] | None = None
                     ) -> EventSourceResponse:
    stream = EventSourceResponse(headers=headers, allow_all_methods=True,
                                 ping_interval=SSE_PING_SECONDS, send_timeout=SSE_SEND_SECONDS)
    await stream.prepare(request)
    return stream


async def send(stream: EventSourceResponse, data: str, *, event: str,
               event_id: int | str | None = None) -> None:
    """Send one SSE event; StreamClosed when the client is gone or stalled.

    One exception for every way a send fails, so no transport lets one escape: a TimeoutError
    (a stalled client) would otherwise reach a tool as an OSError and read as a database fault.
    """
    try:
        await stream.send(data, event=event, id=str(event_id) if event_id is not None else None)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise StreamClosed(str(exc)) from exc


async def send_event(stream: EventSourceResponse, message: dict[str, Any], *,
                     event_id: int | str | None = None) -> None:
    await send(stream, orjson.dumps(message).decode(), event="message", event_id=event_id)


def client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed (aiohttp offers no event for it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def session_messages(
    request: web.Request, session: Session, *,
    key_still_valid: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The session's queued messages, until the session ends, the client leaves, or the server
    shuts down and no call runs on the session any more (see queued_messages)."""
    def drained() -> bool:
        # Asked only with the outbox empty: a legacy call's answer is queued after the call has
        # ended, and must still go out.
        return session.state is SessionState.CLOSING and session.idle

    async for message in queued_messages(request, session.outbox, key_still_valid=key_still_valid,
                                         drained=drained, owner=f"session {session.id}"):
        yield message


async def stream_events(
    request: web.Request, session: Session, *, after: str | None, resumable: bool,
    key_still_valid: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """The messages of the session's stream with their event ids: those after ``after`` first
    (Last-Event-ID), then each new one, until the stream ends as session_messages says.

    In memory, ids count this process's events (``resumable``: kept for a resumption); a
    shared store reads the session's Redis stream, whose entry ids are the event ids.
    """
    store = request.app[SESSIONS]
    if store.shares_streams:
        async for item in store.events(request, session, after=after,
                                       key_still_valid=key_still_valid):
            yield item
        return
    if after is not None:
        for event_id, message in session.replay_after(int(after)):
            yield str(event_id), message
    async for message in session_messages(request, session, key_still_valid=key_still_valid):
        # Recorded before sending: a message the client misses is replayed on resumption.
        yield (str(session.record_sent(message)) if resumable else None), message


async def queued_messages(
    request: web.Request, queue: asyncio.Queue[dict[str, Any] | None], *,
    key_still_valid: Callable[[], Awaitable[bool]] | None = None,
    drained: Callable[[], bool] = lambda: False, owner: str = "stream",
) -> AsyncIterator[dict[str, Any]]:
    """A long-lived stream's queued messages, until None is queued, ``drained()`` says yes with
    the queue empty, or the client leaves.

    The server runs with aiohttp's default of not cancelling a handler whose client went away,
    so a stream waiting for its next message must notice the departure itself; otherwise the
    session would keep a dead stream forever (a reconnect would get 409, a legacy SSE session
    would never end), and a listen stream would hold its place under the caps.

    ``key_still_valid`` is asked every STREAM_POLL_SECONDS, busy or idle: once the key that
    opened the stream is revoked or expired, KeyNoLongerValid ends it. Otherwise only its next
    request would be refused, and a client waiting on the stream (an SDK awaiting an answer on
    GET /sse) would wait forever.
    """
    next_check = time.monotonic() + STREAM_POLL_SECONDS
    while not client_gone(request):
        if key_still_valid is not None and time.monotonic() >= next_check:
            if not await key_still_valid():
                raise KeyNoLongerValid(f"the credential of {owner} is no longer valid")
            next_check = time.monotonic() + STREAM_POLL_SECONDS
        try:
            message = await asyncio.wait_for(queue.get(), STREAM_POLL_SECONDS)
        except TimeoutError:
            if drained():
                return
            continue
        if message is None:
            return
        yield message


# -- requests --------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _accept_allows(accept: str, media_types: tuple[str, ...]) -> bool:
    # A client sends the same Accept header on every request: answer each one once.
    offered = frozenset(part.split(";")[0].strip().lower() for part in accept.split(","))
    if "*/*" in offered:
        return True
    return all(m in offered or f"{m.split('/')[0]}/*" in offered for m in media_types)


def accepts(request: web.Request, *media_types: str) -> bool:
    return _accept_allows(request.headers.get("Accept", ""), media_types)


def _is_json(request: web.Request) -> bool:
    return request.content_type == "application/json"


def shown(header_value: str) -> str:
    """A header value fit to repeat in an answer: aiohttp decodes headers with surrogateescape,
    and a lone surrogate cannot be encoded as JSON (a 500), so whatever is not printable ASCII
    is escaped."""
    if header_value.isascii() and header_value.isprintable():
        return header_value
    return "".join(c if c.isascii() and c.isprintable() else f"\\u{ord(c):04x}"
                   for c in header_value)


def http_error(status: int, message: str) -> web.Response:
    return json_body({"jsonrpc": "2.0", "id": None,
                      "error": {"code": INVALID_REQUEST, "message": message}}, status=status)


async def read_body(request: web.Request, *media_types: str) -> Any:
    """The POST body as JSON, or the HTTP answer that refuses it: 406 when Accept lacks one of
    ``media_types``, 415 for another Content-Type, 400 (-32700) for a body that is not JSON."""
    if not accepts(request, *media_types):
        return http_error(406, f"Accept must list {' and '.join(media_types)}")
    if not _is_json(request):
        return http_error(415, "Content-Type must be application/json")
    try:
        return await read_json(request)
    except RpcError as exc:
        return rpc_error_response(exc)


def has_progress(message: Any) -> bool:
    return (isinstance(message, Request) and isinstance(message.params.get("_meta"), dict)
            and "progressToken" in message.params["_meta"])


async def cancel_on_disconnect(request: web.Request, work: Awaitable[_T]) -> _T | None:
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
