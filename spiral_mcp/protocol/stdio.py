"""MCP over stdin and stdout: newline-delimited JSON-RPC between one local client and the server
it started as a subprocess (Claude Desktop, Claude Code, ``uvx``), for one API key.

Both eras share the process, as the 2026-07-28 revision lets a dual-era server do: a request
whose ``params._meta`` names a stateless version, and ``server/discover`` (the stdio probe), is
served statelessly; ``initialize`` opens the process's one session (2024-11-05 … 2025-11-25),
in which the requests without that ``_meta`` run. JSON-RPC batches only on a 2025-03-26 session.

Every request runs in a task of its own, so a long call holds up neither a ping nor a cancel;
``notifications/cancelled`` cancels that task, in either era, and the request gets no answer.
A stateless ``subscriptions/listen`` is such a task too: it stays open, writing its change
notifications (each tagged with its subscription id) among the other lines, until the client
cancels it, the key is no longer accepted (no answer), or reading ends (answered, a graceful end).
The session's change notifications, which HTTP sends on its GET stream, are lines too.
``initialize``, notifications and the client's answers are taken in the order they come, so a
line written after ``initialize`` finds the session. Whatever goes out (answers, progress, log
messages, a tool's questions to the client) is one whole line, one write each. A line that is
not JSON gets -32700 and reading goes on; a line longer than the message limit gets -32600.

Reading ends at EOF on stdin, when stdout is gone, when the key is no longer accepted, or at
:meth:`StdioServer.stop` (SIGTERM), after which answers and cancellations are still read but no
new request is taken; :meth:`StdioServer.drain` then waits for the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..auth import Principal
from ..errors import ServiceError
from .changes import Listener, ListenLimitError
from .dispatcher import Dispatcher
from .exchange import Exchange
from .http import STREAM_POLL_SECONDS, parse_batch, run_messages
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    Notification,
    Request,
    Response,
    RpcError,
    decode,
    encode,
    error_message,
    parse_message,
)
from .listen import acknowledgment, graceful_end, open_listener
from .sessions import Session, SessionLimitError
from .stdio_pipes import Output, open_input, open_output, skip_line
from .versions import (
    BATCHING_VERSIONS,
    CLIENT_CAPABILITIES_META,
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE,
    PROTOCOL_VERSION_META,
    check_stateless_version,
    missing_stateless_meta,
    negotiate,
)

__all__ = ["Authenticate", "NewSession", "StdioServer"]

log = logging.getLogger(__name__)

# The process's key checked again (through the authenticator's cache): its principal, or None
# once the key is revoked or has expired.
Authenticate = Callable[[], Awaitable[Principal | None]]
# Opens the process's session for the key's principal and the negotiated handshake version.
NewSession = Callable[[Principal, str], Session]

# Requests in flight at once; one more is refused, not queued. Tool calls are further bounded by
# the rate limits (and, on the session, by SESSION_MAX_CONCURRENT_CALLS).
MAX_IN_FLIGHT = 100
# How long cancelled requests get to end (a rollback) once drain has given up waiting.
_CANCEL_GRACE = 2.0


class StdioServer:
    """Serves one client on a pair of file descriptors with the given dispatcher."""

    def __init__(self, dispatcher: Dispatcher, *, principal: Principal,
                 authenticate: Authenticate, new_session: NewSession, max_message_bytes: int,
                 request_id_var: contextvars.ContextVar[str | None] | None = None) -> None:
        self._dispatcher = dispatcher
        self._principal = principal
        self._authenticate = authenticate
        self._new_session = new_session
        self._max_message_bytes = max_message_bytes
        self._request_id_var = request_id_var
        self._session: Session | None = None
        self._output: Output | None = None
        self._reading: asyncio.Task[None] | None = None
        self._forwarding: asyncio.Task[None] | None = None
        # Each request's task by JSON-RPC id, so notifications/cancelled finds it.
        self._inflight: dict[Any, asyncio.Task[None]] = {}
        # The tasks the client cancelled (their end is not an error), and every task running.
        self._cancelled: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        # The open subscriptions/listen requests, ended (and answered) by stop.
        self._listeners: set[Listener] = set()
        self._input_open = True
        # Set when a request found the key no longer accepted: the process ends, non-zero.
        self.key_refused = False

    async def serve(self, *, input_fd: int, output_fd: int) -> None:
        """Read and answer messages; return once reading should end (see the module's text).
        Reading goes on in the background until :meth:`drain`."""
        reader = await open_input(input_fd, self._max_message_bytes)
        self._output = await open_output(output_fd)
        self._reading = asyncio.create_task(self._read(reader), name="stdio-read")
        await self._stopped.wait()

    def stop(self) -> None:
        """Take no new request; what runs finishes, and answers and cancellations still count.
        The listen requests end: nothing they wait for comes once the server stops."""
        self._stopped.set()
        for listener in self._listeners:
            listener.queue.put_nowait(None)

    async def drain(self, grace: float) -> None:
        """Wait for the requests in flight, cancelling what still runs after ``grace`` seconds;
        then stop reading and close stdout, so the client sees its end."""
        self.stop()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_CANCEL_GRACE)
        for task in (self._reading, self._forwarding):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._output is not None:
            await self._output.close()

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (line := await self._next_line(reader)) is not None:
                if not line.strip():
                    continue
                try:
                    await self._receive(line)
                except Exception:  # a fault of ours in one message must not end the reading
                    log.exception("a message from the client could not be handled")
        finally:
            self._client_gone()

    async def _next_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next line, or None at EOF; a line over the limit is skipped and answered."""
        while True:
            try:
                return await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                return exc.partial or None  # the last line may come without its newline
            except asyncio.LimitOverrunError:
                await skip_line(reader)
                await self._send(error_message(None, RpcError(
                    INVALID_REQUEST, f"a message may be at most {self._max_message_bytes} bytes "
                                     "(MAX_BODY_BYTES)")))

    def _client_gone(self) -> None:
        """stdin has ended: nobody can answer a question of ours any more, and no request comes."""
        self._input_open = False
        session = self._session
        if session is not None:
            for request_id in list(session.asked):
                session.answer(request_id, None, {"message": "the client closed stdin"})
        self.stop()

    async def _receive(self, line: bytes) -> None:
        try:
            value = decode(line)
            if isinstance(value, list):
                await self._start(None, self._batch(value))
                return
            message = parse_message(value)
        except RpcError as exc:
            await self._send(error_message(exc.request_id, exc))
            return
        if isinstance(message, Response):
            if self._session is not None:
                self._dispatcher.handle_response(message, self._exchange(self._principal))
        elif isinstance(message, Notification):
            if message.method == "notifications/cancelled":
                self._cancel(message.params.get("requestId"))
            # Also on the session: initialized marks it ready. (A cancelled tool call is then
            # cancelled twice, and the dispatcher tells its own cancel from this one's.)
            await self._dispatcher.handle_notification(message, self._exchange(self._principal))
        elif message.method == "initialize" and not _stateless(message) \
                and not self._stopped.is_set():
            await self._initialize(message)
        elif message.id in self._inflight:
            # A cancellation names a request by id: two live requests with one id are ambiguous.
            await self._send(error_message(message.id, RpcError(
                INVALID_REQUEST, f"request id {message.id!r} is already in flight")))
        else:
            await self._start(message.id, self._answer(message))

    async def _start(self, request_id: Any, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task of its own, unless the server is stopping (decided as the
        line is read: what came before EOF still runs) or too much is in flight."""
        reason = None
        if self._stopped.is_set():
            reason = "the server is shutting down and takes no new requests"
        elif len(self._tasks) >= MAX_IN_FLIGHT:
            reason = f"{MAX_IN_FLIGHT} requests are in flight; retry later"
        if reason is not None:
            work.close()  # never started
            await self._send(error_message(request_id, RpcError(INTERNAL_ERROR, reason)))
            return
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        if request_id is not None:
            self._inflight[request_id] = task

        def done(_: asyncio.Future[None]) -> None:
            self._tasks.discard(task)
            self._cancelled.discard(task)
            if self._inflight.get(request_id) is task:
                del self._inflight[request_id]
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("a request could not be answered", exc_info=exc)

        task.add_done_callback(done)

    def _cancel(self, request_id: Any) -> None:
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return
        task = self._inflight.pop(request_id, None)
        if task is not None and not task.done():
            self._cancelled.add(task)
            task.cancel()

    # -- answering --------------------------------------------------------------------------

    async def _answer(self, request: Request) -> None:
        try:
            try:
                exchange = self._exchange(await self._checked_principal(), request)
                self._log_as(exchange)
                if exchange.modern and request.method == "subscriptions/listen":
                    await self._listen(request, exchange)
                    return
                reply = await self._dispatcher.handle_request(request, exchange)
            except RpcError as exc:
                reply = error_message(request.id, exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # Cancelled by the client: no answer, as the protocol says. Any other cancel
            # (drain giving up) goes on.
            if task in self._cancelled and task is not None and task.uncancel() == 0:
                return
            raise
        if reply is not None:
            await self._send(reply)

    async def _listen(self, request: Request, exchange: Exchange) -> None:
        """Serve one listen request (see the module's text); RpcError before it opens for a
        malformed filter or a cap reached."""
        try:
            listener = open_listener(self._dispatcher, request, exchange)
        except ListenLimitError as exc:
            raise RpcError(INVALID_REQUEST, str(exc)) from None
        self._listeners.add(listener)
        try:
            if self._stopped.is_set():  # stopped while the key was checked: end at once
                listener.queue.put_nowait(None)
            if not await self._send(acknowledgment(listener)):
                return
            while (note := await self._next_change(listener)) is not None:
                if not await self._send(note):
                    return
            if not self.key_refused:
                await self._send(graceful_end(request))
        finally:
            self._listeners.discard(listener)
            self._dispatcher.changes.stop(listener)

    async def _next_change(self, listener: Listener) -> dict[str, Any] | None:
        """The listener's next notification; None once it ends. The key is checked again while
        waiting, as an HTTP listen stream's is: a revoked key must not go on hearing changes,
        and with no other request it would not be noticed."""
        while True:
            try:
                return await asyncio.wait_for(listener.queue.get(), STREAM_POLL_SECONDS)
            except TimeoutError:
                pass
            try:
                await self._checked_principal()
            except RpcError:
                if self.key_refused:
                    return None
                # The key could not be checked (the database is away): keep listening.

    async def _initialize(self, request: Request) -> None:
        """``initialize`` opens the session, before any later line is read."""
        try:
            principal = await self._checked_principal()
            if self._session is None:
                session = self._new_session(
                    principal, negotiate(request.params.get("protocolVersion")))
                # Its stdout is always open: the change hub posts to it as to a GET stream.
                session.stream_open = True
                self._session = session
                self._forwarding = asyncio.create_task(self._forward(session),
                                                       name="stdio-session-changes")
        except RpcError as exc:
            await self._send(error_message(request.id, exc))
            return
        except SessionLimitError as exc:
            await self._send(error_message(request.id, RpcError(INTERNAL_ERROR, str(exc))))
            return
        # A second initialize finds the session initialized, and the dispatcher refuses it.
        reply = await self._dispatcher.handle_request(request, self._exchange(principal))
        if reply is not None:
            await self._send(reply)

    async def _forward(self, session: Session) -> None:
        """The session's change notifications (a list changed, a subscribed resource was
        updated), which HTTP sends on the session's GET stream: here, lines on stdout. Ends with
        the session."""
        while (message := await session.outbox.get()) is not None:
            if not await self._send(message):
                return

    async def _batch(self, value: list[Any]) -> None:
        session = self._session
        try:
            if any(isinstance(m, dict) and m.get("method") == "initialize" for m in value):
                raise RpcError(INVALID_REQUEST, "initialize must not be batched")
            messages, errors = parse_batch(value, allow_batch=session is not None
                                           and session.protocol_version in BATCHING_VERSIONS)
            exchange = self._exchange(await self._checked_principal())
        except RpcError as exc:
            await self._send(error_message(exc.request_id, exc))
            return
        self._log_as(exchange)
        answers = errors + await run_messages(self._dispatcher, messages, exchange)
        if answers:
            await self._send(answers)

    async def _checked_principal(self) -> Principal:
        """The key's principal as it stands now; a key no longer accepted stops the server."""
        try:
            principal = await self._authenticate()
        except ServiceError as exc:
            raise RpcError(INTERNAL_ERROR, f"cannot check the API key: {exc.message}",
                           exc.to_dict()) from None
        if principal is None:
            self.key_refused = True
            self.stop()
            raise RpcError(INVALID_REQUEST, "the API key is no longer accepted (revoked or "
                                            "expired); the server stops")
        self._principal = principal
        return principal

    def _exchange(self, principal: Principal, request: Request | None = None) -> Exchange:
        """The request's era and surroundings; RpcError for a request that has neither a
        stateless envelope nor a session to run in."""
        # Named as an HTTP request is: the audit rows and log lines of the call carry it.
        request_id = secrets.token_hex(16)
        if request is not None and _stateless(request):
            error = missing_stateless_meta(request.params)
            version = request.params["_meta"][PROTOCOL_VERSION_META] if error is None else None
            error = error or check_stateless_version(version)
            if error is not None:
                raise error
            return Exchange(principal=principal, protocol_version=version, transport="stdio",
                            http_request_id=request_id, notify=self._notify)
        session = self._session
        if session is None and request is not None and request.method != "ping":
            raise RpcError(INVALID_PARAMS, "send initialize first, or name a stateless protocol "
                                           f"version in params._meta ({PROTOCOL_VERSION_META!r}, "
                                           f"with {CLIENT_CAPABILITIES_META!r})")
        return Exchange(principal=principal, transport="stdio", http_request_id=request_id,
                        protocol_version=session.protocol_version if session else LATEST_HANDSHAKE,
                        session=session, notify=self._notify)

    def _log_as(self, exchange: Exchange) -> None:
        """The log lines of this task carry the request's id (the task has its own context)."""
        if self._request_id_var is not None:
            self._request_id_var.set(exchange.http_request_id)

    # -- writing ----------------------------------------------------------------------------

    async def _notify(self, message: dict[str, Any]) -> bool:
        # A request of ours (sampling, elicitation) needs a client that can still answer.
        if "id" in message and not self._input_open:
            return False
        return await self._send(message)

    async def _send(self, message: dict[str, Any] | list[dict[str, Any]]) -> bool:
        """Write one message as one line; False once stdout is gone (which stops the server)."""
        output = self._output
        if output is None or output.closed:
            return False
        try:
            await output.write(encode(message) + b"\n")
        except OSError:  # the client closed its end of stdout: nobody hears us any more
            output.closed = True
            self.stop()
            return False
        return True


def _stateless(request: Request) -> bool:
    """Whether a request belongs to the stateless era: the stdio probe, or a request whose
    ``_meta`` names a version that is not a handshake one (checked as a stateless one)."""
    if request.method == "server/discover":
        return True
    meta = request.params.get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_META in meta \
        and meta[PROTOCOL_VERSION_META] not in HANDSHAKE_VERSIONS
