"""``spiral-mcp stdio``: the server for one local client and one API key, over stdin and stdout.

It is the application ``spiral-mcp serve`` runs (``create_app``: the database, the explorer, key
checks, rate limits, the tools, the audit), started without listening anywhere: the stdio
transport takes its dispatcher. The key comes from SPIRAL_API_KEY and is checked before the
first message is read; a key that is missing, malformed or not accepted is one line on stderr
and a non-zero exit, which is what a client such as Claude Desktop shows in its log of the
server.

stdout carries the protocol and nothing else. Before anything can write, the process keeps a
private copy of its stdout for the transport and points file descriptor 1 at stderr, so a stray
print, a library's output or a child process (the embedded PostgreSQL's tools) lands on stderr;
the logs are JSON lines on stderr too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
from collections.abc import Iterable
from typing import NoReturn

from aiohttp import web

from ..auth import SUSPENDED, Principal, parse_key
from ..config import Settings
from ..errors import ServiceError
from ..handlers import Tool
from ..protocol.sessions import Session, SessionStore
from ..protocol.stdio import StdioServer
from .app import create_app
from .keys import AUTHENTICATOR, DISPATCHER, SESSIONS, SHUTDOWN
from .logs import configure_logging, request_id_var
from .run import STARTUP_ERRORS, new_event_loop, prepare_database

__all__ = ["KEY_ENV", "run"]

log = logging.getLogger(__name__)

KEY_ENV = "SPIRAL_API_KEY"
# Beyond SHUTDOWN_TIMEOUT: the time the calls it cut take to answer (a rollback, an audit row).
_CUT_ANSWER_SECONDS = 2.0


def run(settings: Settings, *, tools: Iterable[Tool] | None = None) -> NoReturn:
    """Serve MCP on stdin and stdout until EOF on stdin or SIGTERM; exit 0, or 1 (2 for a
    missing or malformed key) with one line on stderr. ``tools`` replaces the shipped tools, as
    in ``create_app``."""
    try:
        protocol_fd = _take_stdout()
    except OSError as exc:
        _fail(f"stdout is not usable: {exc.strerror or exc}", code=1)
    configure_logging(settings.log_level, stream=sys.stderr)
    # Read once, and kept from the child processes (the embedded PostgreSQL's tools).
    key = os.environ.pop(KEY_ENV, "").strip()
    if not key:
        _fail(f"{KEY_ENV} is not set: give the API key in it (spiral-mcp apikey create makes "
              "one; the first start of spiral-mcp serve on the embedded database prints one)",
              code=2)
    if parse_key(key) is None:
        _fail(f"{KEY_ENV} does not hold a spiral-mcp API key (spk_ and 107 more characters)",
              code=2)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            code = runner.run(_serve(settings, key, protocol_fd, tools))
    except STARTUP_ERRORS as exc:
        _fail(str(exc), code=1)
    except KeyboardInterrupt:  # before the server was ready, which then handles SIGINT itself
        sys.exit(130)
    sys.exit(code)


def _take_stdout() -> int:
    """A private descriptor of stdout for the protocol; descriptor 1 (sys.stdout, print, child
    processes) goes to stderr from now on. The copy is not inherited (PEP 446)."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    return protocol_fd


def _fail(message: str, *, code: int) -> NoReturn:
    _say_error(message)
    sys.exit(code)


def _say_error(message: str) -> None:
    """One line on stderr, after the log lines still buffered: the last line a client shows."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    print(f"spiral-mcp: error: {message}", file=sys.stderr, flush=True)


async def _serve(settings: Settings, key: str, protocol_fd: int,
                 tools: Iterable[Tool] | None) -> int:
    urls = await prepare_database(settings)
    # One client, one process: its session stays in memory even where REDIS_URL is set. No
    # HTTP, so no operator routes: no owner pool for them either, whatever OPERATOR_API says.
    app = create_app(dataclasses.replace(settings, operator_api=False),
                     database_url=urls.runtime, explorer_url=urls.explorer, tools=tools,
                     share_sessions=False)
    server: StdioServer | None = None

    async def drain(app: web.Application) -> None:
        # Before the app's own shutdown step, which drains the sessions: a request read before
        # EOF or SIGTERM is in flight and must run, though its task may not have reached the
        # session yet (the transport takes no new one). Shutdown's clock starts here: the calls
        # still running when SHUTDOWN_TIMEOUT is over are cut (answered and audited).
        if server is not None:
            app[SHUTDOWN].begin(app[DISPATCHER].registry.stop_calls)
            await server.drain(settings.shutdown_timeout + _CUT_ANSWER_SECONDS)

    app.on_shutdown.insert(0, drain)
    # The application's start and stop as `serve` runs them, with no site: nothing listens.
    runner = web.AppRunner(app, handle_signals=False)
    try:
        await runner.setup()
        authenticator = app[AUTHENTICATOR]
        try:
            principal = await authenticator.authenticate(key)
        except ServiceError as exc:
            raise ConnectionError(f"cannot check the API key: {exc.message}") from None
        if principal is None:
            _say_error(f"the API key in {KEY_ENV} is not accepted: {SUSPENDED}"
                       if authenticator.suspended(key) else
                       f"the API key in {KEY_ENV} is not accepted (unknown, revoked or "
                       "expired; spiral-mcp apikey list shows the keys)")
            return 1
        server = StdioServer(
            app[DISPATCHER], principal=principal,
            authenticate=functools.partial(authenticator.authenticate, key),
            new_session=functools.partial(_new_session, app[SESSIONS], settings),
            max_message_bytes=settings.max_body_bytes, request_id_var=request_id_var)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Not on Windows: there EOF on stdin is how a client stops the server.
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, _stop, server, signum)
        log.info("serving MCP on stdin and stdout", extra={
            "tenant": principal.tenant_text, "key": principal.key_name})
        await server.serve(input_fd=sys.stdin.fileno(), output_fd=protocol_fd)
    finally:
        await runner.cleanup()
    if server.key_refused:
        _say_error(f"the API key in {KEY_ENV} is no longer accepted: {SUSPENDED}"
                   if app[AUTHENTICATOR].suspended(key) else
                   f"the API key in {KEY_ENV} is no longer accepted (revoked or expired)")
        return 1
    return 0


def _stop(server: StdioServer, signum: int) -> None:
    log.info("stopping: no new requests; the calls in flight finish",
             extra={"signal": signal.Signals(signum).name})
    server.stop()


def _new_session(sessions: SessionStore, settings: Settings, principal: Principal,
                 version: str) -> Session:
    return sessions.open_session(key_id=principal.key_id, tenant_id=principal.tenant_id,
                                 scopes=principal.scopes, transport="stdio",
                                 protocol_version=version,
                                 max_concurrent_calls=settings.session_max_concurrent_calls)
