"""``subscriptions/listen`` (2026-07-28): a request that stays open and carries the change
notifications the client opted in to (basic/patterns/subscriptions.mdx). Over HTTP the POST's
answer is an SSE stream (:func:`listen`); over stdio the notifications share stdout with
everything else (protocol/stdio.py), which is why each one names its subscription.

The acknowledgment goes first, stating the filter the server agreed to; every message carries the
subscription id (the request's JSON-RPC id) in ``_meta``. The stream ends when the client cancels
it (closes the SSE stream; over stdio, notifications/cancelled), when the key that opened it is
revoked or expires, or at shutdown, where the request is answered first (a graceful end, as the
pattern asks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .changes import SUBSCRIPTION_ID_META, ChangeFilter, Listener
from .dispatcher import Dispatcher
from .exchange import Exchange
from .http import (
    KeyNoLongerValid,
    StreamClosed,
    client_gone,
    queued_messages,
    send_event,
    sse_stream,
)
from .jsonrpc import Request, result_message

__all__ = ["ACKNOWLEDGED", "acknowledgment", "graceful_end", "listen", "open_listener"]

ACKNOWLEDGED = "notifications/subscriptions/acknowledged"


def open_listener(dispatcher: Dispatcher, message: Request, exchange: Exchange) -> Listener:
    """The stream's listener: the filter as asked (-32602 when malformed), narrowed to what this
    server sends (no resource list changes: its resources are fixed once serving) and the URIs
    this key may read; ListenLimitError at a cap."""
    principal = exchange.principal
    agreed = ChangeFilter.parse(message.params).narrowed(
        tools=True, prompts=bool(dispatcher.prompts), resources_list=False,
        readable=lambda uri: dispatcher.resources.readable(uri, principal))
    return dispatcher.changes.listen(principal, message.id, agreed)


def acknowledgment(listener: Listener) -> dict[str, Any]:
    """The stream's first message: the filter the server agreed to."""
    return listener.tagged(ACKNOWLEDGED, {"notifications": listener.filter.wire()})


def graceful_end(message: Request) -> dict[str, Any]:
    """The listen request's answer when the server ends the stream (shutdown)."""
    return result_message(message.id, {"resultType": "complete",
                                       "_meta": {SUBSCRIPTION_ID_META: message.id}})


async def listen(request: web.Request, message: Request, exchange: Exchange,
                 dispatcher: Dispatcher, *,
                 key_still_valid: Callable[[], Awaitable[bool]] | None) -> web.StreamResponse:
    """Serve one listen stream. Raises RpcError (a malformed filter) or ListenLimitError before
    the stream opens, for the transport to answer."""
    hub = dispatcher.changes
    listener = open_listener(dispatcher, message, exchange)
    try:
        # aiohttp-sse sends X-Accel-Buffering: no, so proxies do not hold notifications back.
        stream = await sse_stream(request)
        try:
            await send_event(stream, acknowledgment(listener))
            async for note in queued_messages(request, listener.queue,
                                              key_still_valid=key_still_valid,
                                              owner=f"listen stream {message.id!r}"):
                await send_event(stream, note)
            if client_gone(request):
                return stream
            # Ended by the server (shutdown): the request's answer says it ended gracefully.
            await send_event(stream, graceful_end(message))
        except (StreamClosed, KeyNoLongerValid):
            pass  # the client left, or its key no longer opens anything: no one to tell
        stream.stop_streaming()
        return stream
    finally:
        hub.stop(listener)
