"""One request's surroundings, and what a call may send its client while it runs.

A transport fills in an :class:`Exchange` per request: who calls, in which era, over which
session, and how to send a message on the request's own stream. From it the dispatcher makes the
call's senders: progress, log messages, and (on a session) requests to the client that the call
waits on (``ctx.ask``; the stateless era asks by multi round-trip requests instead, see
input_required.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from ..auth import Principal
from ..errors import ErrorCode, ServiceError
from ..handlers.context import (
    CLIENT_REQUESTS,
    AskCallback,
    LogCallback,
    ProgressCallback,
    require_askable,
)
from .sessions import ClientError, Session
from .versions import MODERN_VERSIONS

__all__ = ["CLIENT_ANSWER_SECONDS", "LOG_LEVELS", "Exchange", "Notify", "can_ask",
           "log_sender", "progress_sender", "session_asker"]

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

# Sends a message on the request's stream; False when no stream could take it.
Notify = Callable[[dict[str, Any]], Awaitable[bool]]

# How long a tool call waits for the client to answer a request of ours: a person may be the one
# answering an elicitation.
CLIENT_ANSWER_SECONDS = 300.0


async def _drop(message: dict[str, Any]) -> bool:
    return False


def can_ask(session: Session) -> bool:
    """Whether the client declared a capability a tool may use to ask it something."""
    return not session.client_capabilities.keys().isdisjoint(CLIENT_REQUESTS.values())


@dataclasses.dataclass(slots=True, kw_only=True)
class Exchange:
    """One request's surroundings, filled in by the transport."""

    principal: Principal
    protocol_version: str
    transport: str
    http_request_id: str | None = None
    session: Session | None = None
    # Sends a notification related to this request (progress, log) on the right stream.
    notify: Notify = _drop

    @property
    def modern(self) -> bool:
        return self.protocol_version in MODERN_VERSIONS


def progress_sender(token: Any, exchange: Exchange) -> ProgressCallback:
    async def progress(done: float, total: float | None, message: str | None) -> None:
        params: dict[str, Any] = {"progressToken": token, "progress": done}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await exchange.notify({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": params})

    return progress


def log_sender(logger: str, exchange: Exchange, *, level: str | None = None) -> LogCallback:
    """Sends a call's log messages at or above ``level`` (by default, the session's)."""
    async def send(message_level: str, data: Any) -> None:
        session = exchange.session
        least = level or (session.log_level if session is not None else None)
        if least is None or LOG_LEVELS.index(message_level) < LOG_LEVELS.index(least):
            return
        await exchange.notify({"jsonrpc": "2.0", "method": "notifications/message",
                               "params": {"level": message_level, "logger": logger,
                                          "data": data}})

    return send


def session_asker(session: Session, notify: Notify) -> AskCallback:
    """ctx.ask on a session: a request to the client on the call's stream, and its answer."""
    async def ask(method: str, params: dict[str, Any], /, *,
                  key: str | None = None) -> dict[str, Any]:
        require_askable(session.client_capabilities, method, params)
        request_id: str | None = None
        sent = False
        try:
            request_id, answer = session.expect_answer()
            sent = await notify({"jsonrpc": "2.0", "id": request_id, "method": method,
                                 "params": params})
            if not sent:
                raise ServiceError(ErrorCode.UPSTREAM_ERROR,
                                   f"could not send {method}: no stream to the client is open")
            async with asyncio.timeout(CLIENT_ANSWER_SECONDS):
                result = await answer
        except TimeoutError:
            raise ServiceError(ErrorCode.UPSTREAM_ERROR, f"the client did not answer "
                               f"{method} within {CLIENT_ANSWER_SECONDS:g} s") from None
        except ClientError as exc:
            raise ServiceError(ErrorCode.UPSTREAM_ERROR,
                               f"the client refused {method}: {exc}") from None
        finally:
            if request_id is not None:
                session.asked.pop(request_id, None)
                if answer.done() and not answer.cancelled():
                    answer.exception()  # retrieved, whatever happened meanwhile
                elif sent:
                    # Given up on (timed out, or the call was cancelled): tell the client,
                    # so it stops asking its user or its model.
                    answer.cancel()
                    await notify({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                  "params": {"requestId": request_id}})
        if not isinstance(result, dict):
            raise ServiceError(ErrorCode.UPSTREAM_ERROR,
                               f"the client's answer to {method} is not an object")
        return result

    return ask
