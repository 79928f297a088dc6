"""Serving: check the address, prepare the database, build the app, listen, and stop gracefully
on SIGTERM.

The address is checked first: a port another process holds is said in one line before any
database is started, created, migrated or a key printed (and lost). aiohttp's runner stops
accepting on SIGTERM/SIGINT and waits for in-flight requests, then runs the cleanup contexts in
reverse (flush, close the pool). The app cuts the calls still running when SHUTDOWN_TIMEOUT is
over (``shutdown.py``), so their requests end then; aiohttp's own wait, longer by the wind-down,
is only a backstop.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import socket
import sys

from aiohttp import web

from .. import migrate
from ..config import Settings
from ..provision import EMBEDDED_DATABASE, DatabaseUrls, provision, start_embedded
from ..queries import QueryFileError
from ..roles import UnsafeRuntimeRole
from ..templates import TemplateError
from .app import create_app
from .first_start import bootstrap, print_listening
from .logs import configure_logging
from .shutdown import WIND_DOWN_SECONDS

__all__ = ["STARTUP_ERRORS", "ListenError", "check_address", "listen_error", "listening_sockets",
           "new_event_loop", "prepare_database", "serve"]

log = logging.getLogger(__name__)


# What can keep a server from starting, each said in one line: a runtime role that could cross
# tenants, a bad report template or SQL file, a database out of reach, a folder or port refused.
STARTUP_ERRORS = (UnsafeRuntimeRole, TemplateError, QueryFileError, ConnectionError, OSError)


# aiohttp's backlog: connections the kernel queues for a listening socket.
_BACKLOG = 128


class ListenError(OSError):
    """The server cannot listen where HOST and PORT say; the message names what to change."""


def listen_error(settings: Settings, exc: OSError) -> ListenError:
    if exc.errno == errno.EADDRINUSE:
        other = settings.port + 1 if settings.port < 65535 else 8056
        return ListenError(
            f"port {settings.port} on {settings.host} is in use (another spiral-mcp running?); "
            f"set PORT to a free one, e.g. PORT={other} make run")
    return ListenError(f"cannot listen on {settings.host}:{settings.port} "
                       f"({exc.strerror or exc}); change HOST or PORT")


def listening_sockets(settings: Settings, *, reuse_port: bool = False,
                      listen: bool = True) -> list[socket.socket]:
    """Sockets bound to every address HOST:PORT names, as aiohttp binds them (address reuse on,
    IPv6 sockets IPv6 only), listening unless ``listen`` is false; ``reuse_port``: several may
    be bound to the same address (SO_REUSEPORT). Raises ListenError, naming the setting to
    change."""
    try:
        addresses = socket.getaddrinfo(settings.host or None, settings.port,
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"HOST: cannot listen on {settings.host!r}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise listen_error(settings, exc) from None
            if listen:
                sock.listen(_BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def check_address(settings: Settings) -> None:
    """Raise ListenError, naming the setting to change, when HOST:PORT cannot be listened on.

    Bound as aiohttp will bind, then let go at once. Another process may still take the port
    before the server binds it; aiohttp's own bind then fails with the same words.
    """
    for sock in listening_sockets(settings, listen=False):
        sock.close()


async def _embedded_urls(settings: Settings) -> DatabaseUrls:
    superuser = await asyncio.to_thread(start_embedded, settings.data_dir)
    urls = await provision(superuser, EMBEDDED_DATABASE)
    log.info("embedded PostgreSQL ready", extra={"data_dir": str(settings.data_dir)})
    if settings.demo_data or settings.bootstrap_tenant is not None:
        assert urls.admin is not None
        await bootstrap(urls.admin, settings, name=settings.bootstrap_tenant or "Demo",
                        demo=settings.demo_data)
    return urls


async def _external_urls(settings: Settings) -> DatabaseUrls:
    assert settings.database_url is not None
    if settings.admin_database_url is not None:
        applied = await asyncio.to_thread(migrate.apply, settings.admin_database_url)
        if applied:
            log.info("applied migrations", extra={"migrations": list(applied)})
        if settings.bootstrap_tenant is not None:
            await bootstrap(settings.admin_database_url, settings,
                            name=settings.bootstrap_tenant, demo=False)
    return DatabaseUrls(runtime=settings.database_url, admin=settings.admin_database_url)


async def prepare_database(settings: Settings) -> DatabaseUrls:
    """The database ready to serve: the embedded one started, provisioned and (first start)
    given its demo tenant, or yours migrated and bootstrapped when ADMIN_DATABASE_URL says so."""
    return await (_embedded_urls(settings) if settings.embedded else _external_urls(settings))


async def _build(settings: Settings) -> web.Application:
    urls = await prepare_database(settings)
    return create_app(settings, database_url=urls.runtime, explorer_url=urls.explorer,
                      owner_url=urls.admin)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else the standard one.

    libuv's loop and transports cost the request path less per socket read, write and wake-up
    than the standard selector loop (the server does several of each per call: the client's
    request, the database round trips). uvloop does not exist on Windows, hence optional.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def settle_heap() -> None:
    """Called once the app has started. What start-up made (modules, schemas and their
    validators, the app) lives as long as the process, so the cyclic collector stops walking it
    (``gc.freeze``); and its youngest generation is collected every 50,000 allocations instead of
    700: a call allocates a few hundred objects and reference counting frees nearly all of them,
    so the frequent young collections found little and cost about 3.5% of a call's CPU
    (bench/README.md, "Workers")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _listening(settings: Settings) -> None:
    settle_heap()
    print_listening(settings)


def serve(settings: Settings) -> None:
    """Serve HTTP until SIGTERM or SIGINT: in this process, or with WORKERS > 1 in that many
    worker processes this one supervises (``workers.py``)."""
    if settings.workers > 1:
        from .workers import supervise

        sys.exit(supervise(settings))
    configure_logging(settings.log_level)
    try:
        check_address(settings)
    except ListenError as exc:
        print(f"spiral-mcp: error: {exc}", file=sys.stderr)
        sys.exit(1)
    loop = new_event_loop()
    log.info("starting", extra={"host": settings.host, "port": settings.port,
                                "event_loop": type(loop).__module__.split(".")[0]})
    try:
        web.run_app(
            _build(settings),
            loop=loop,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout + WIND_DOWN_SECONDS,
            access_log=None,
            # Called once the server listens: our one line instead of aiohttp's banner.
            print=lambda _banner: _listening(settings),
            handle_signals=True,
        )
    except STARTUP_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            exc = listen_error(settings, exc)  # taken while the database was being prepared
        print(f"spiral-mcp: error: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("stopped")
