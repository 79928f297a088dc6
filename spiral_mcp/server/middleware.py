"""HTTP middleware, outermost first: request context, Origin/Host guard, authentication (API keys,
and OAuth access tokens when configured).

Each is one concern. Errors leave here as small JSON bodies; no handler exception reaches a client
as a traceback.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from ..api.envelope import error_response
from ..api.sessions import same_origin
from ..auth import Authenticator, Principal
from ..credentials import CredentialRefused, bearer_credential
from ..errors import ServiceError
from .keys import (
    AUTHENTICATOR,
    BEARER,
    CORS_ORIGIN,
    KEY_STILL_VALID,
    METRICS,
    PRINCIPAL,
    REQUEST_ID,
    SETTINGS,
    TRACER,
)
from .logs import AccessRecord, request_id_var
from .tracing import end_request_span, start_request_span

__all__ = ["PUBLIC_PATHS", "SELF_AUTHENTICATING", "authenticate", "cors_headers",
           "is_discovery_path", "json_error", "origin_guard", "request_context"]

log = logging.getLogger("spiral_mcp.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths an operator or a load balancer reaches without a key; they reveal no tenant data.
PUBLIC_PATHS = frozenset({"/", "/health", "/ready", "/metrics"})
# The admin API and the console authenticate their own callers (an admin key, an operator
# credential or the console's cookie: api/auth.py), with answers in their own envelope.
_API_PATHS = "/api/v1/"
SELF_AUTHENTICATING = (_API_PATHS, "/admin")

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# A client may send any token as the HTTP method; a metrics series per unknown one would grow
# without bound.
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Where a browser client (the MCP Inspector in direct mode) sends requests that need a CORS
# preflight: a bearer key, JSON bodies and the MCP headers are never "simple".
_CORS_PATHS = frozenset({"/mcp", "/sse", "/messages", "/execute", "/tools", "/templates"})
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "authorization, content-type, mcp-session-id, "
                                    "mcp-protocol-version, mcp-method, mcp-name, last-event-id",
    "Access-Control-Max-Age": "3600",
}
# What a page's script may read of an answer beyond the basic headers: the session id it must
# send back, and the challenge of a 401.
_CORS_EXPOSE = "Mcp-Session-Id, WWW-Authenticate"


def is_discovery_path(path: str) -> bool:
    """Whether ``path`` is one an OAuth client probes to learn how to authenticate (routes in
    discovery.py): public, and readable from any origin, as metadata documents are meant to be.
    """
    return path.startswith("/.well-known/") or path == "/register"


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, access log line, metrics and (tracing on) a span for every request; the last
    net for errors."""
    client_id = request.headers.get("X-Request-Id", "")
    request_id = client_id if _CLIENT_REQUEST_ID.match(client_id) else secrets.token_hex(16)
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    tracer = request.app[TRACER]
    traced = None if tracer is None else start_request_span(tracer, request)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        except ServiceError as exc:
            response = json_error(503 if exc.retry_after else 500, str(exc.code), exc.message)
        except Exception:
            log.exception("unhandled error")
            response = json_error(500, "INTERNAL_ERROR", "internal error")
        status = response.status
        response.headers["X-Request-Id"] = request_id
        if isinstance(response, web.HTTPException):
            raise response
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else "unmatched"
        metrics = request.app[METRICS]
        method = request.method if request.method in _HTTP_METHODS else "other"
        metrics.http_requests.labels(route_name, method, str(status)).inc()
        metrics.http_duration.labels(route_name).observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            log.handle(AccessRecord(log.name, {
                "method": request.method, "path": request.path, "status": status,
                "duration_ms": round(elapsed * 1000, 2)}))
        if traced is not None:
            # After the access line, which carries the span's trace id.
            end_request_span(*traced, status=status, request_id=request_id)
        request_id_var.reset(token)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def _loopback_host(host_header: str) -> bool:
    # Cached: every request's Host header is checked, and clients repeat the same few values.
    try:
        return _is_loopback(urlsplit("//" + host_header).hostname or "")
    except ValueError:  # "[::1" and the like: no host at all, so not a loopback one
        return False


def _origin_allowed(origin: str, allowed_origins: tuple[str, ...]) -> bool:
    if origin in allowed_origins:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:  # a malformed Origin is a refusal, never a 500
        return False
    return parts.scheme in ("http", "https") and _is_loopback(parts.hostname or "")


def _guard_refusal(request: web.Request, code: str, message: str) -> web.Response:
    """A 403 of the guard: in the admin API's envelope under /api/v1, else as json_error."""
    if request.path.startswith(_API_PATHS):
        return error_response(403, code, message)
    return json_error(403, code, message)


def _console_same_origin(request: web.Request, origin: str) -> bool:
    """The console's own pages calling the console and the admin API: same-origin requests,
    whatever host the server is reached at. (Not for MCP's routes: a rebinding domain is "same
    origin" with itself; the console's cookie is never sent to such a domain, and api/auth.py
    checks Origin again for cookie-authenticated changes.)"""
    return request.path.startswith(SELF_AUTHENTICATING) and same_origin(request, origin)


@web.middleware
async def origin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site browser calls and DNS-rebinding attempts.

    A page on another origin could otherwise drive a local server through the user's browser
    (MCP transports, "Security Warning"); a rebinding domain reaches a loopback server with a
    foreign Host header.
    """
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    # A page of any origin may read the public metadata (a browser client discovering how to
    # sign in); it holds nothing a credential would unlock.
    public = is_discovery_path(request.path)
    if origin is not None and not public \
            and not _origin_allowed(origin, settings.allowed_origins) \
            and not _console_same_origin(request, origin):
        return _guard_refusal(request, "FORBIDDEN_ORIGIN", f"origin {origin!r} is not allowed")
    if _is_loopback(settings.host) and not _loopback_host(request.headers.get("Host", "")):
        return _guard_refusal(request, "FORBIDDEN_HOST",
                              "this server only answers requests addressed to a loopback host")
    if origin is not None:
        request[CORS_ORIGIN] = "*" if public else origin
        if request.method == "OPTIONS" and (public or request.path in _CORS_PATHS):
            # A preflight carries no key (browsers never send credentials with it), so it is
            # answered here, before authentication.
            return web.Response(status=204, headers=_CORS_PREFLIGHT)
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: let an allowed origin's page read the answer (streams included,
    whose headers leave before their handler returns)."""
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSE
        response.headers.add("Vary", "Origin")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but the public ones needs ``Authorization: Bearer <credential>``: an API key
    (``spk_...``), or, with OAuth configured (OAUTH_ISSUERS), an access token of a trusted
    issuer bound to a tenant."""
    if request.path in PUBLIC_PATHS or is_discovery_path(request.path) \
            or request.path.startswith(SELF_AUTHENTICATING) \
            or request.match_info.http_exception is not None:
        return await handler(request)
    try:
        credential = bearer_credential(request.app[SETTINGS],
                                       request.headers.get("Authorization", ""))
        principal = await request.app[BEARER].principal(credential)
    except CredentialRefused as refused:
        return json_error(refused.status, refused.code, refused.message, **refused.headers)
    except ServiceError as exc:
        retry = str(max(1, round(exc.retry_after or 1)))
        return json_error(503, str(exc.code), exc.message, **{"Retry-After": retry})
    request[PRINCIPAL] = principal
    if request.method == "GET" or request.headers.get("Mcp-Method") == "subscriptions/listen":
        # Only these open a stream that outlives its authentication (GET /sse, GET /mcp, and
        # the stateless era's listen stream, a POST).
        request[KEY_STILL_VALID] = (
            functools.partial(_user_still_valid, principal) if principal.still_valid else
            functools.partial(_key_still_valid, request.app[AUTHENTICATOR], credential))
    return await handler(request)


async def _user_still_valid(principal: Principal) -> bool:
    """Whether a stream opened with an access token may go on: until the token's exp (a token
    cannot be revoked here, which is why authorization servers issue short-lived ones), and
    while its user's binding stands."""
    assert principal.still_valid is not None
    return time.time() < (principal.expires_at or 0) and await principal.still_valid()


async def _key_still_valid(authenticator: Authenticator, secret: str) -> bool:
    """Whether a stream's key still authenticates, as a new request would find it: no longer
    once revoked (seen within AUTH_CACHE_TTL) or expired. Taken as valid while the database
    cannot be asked: an outage must not end every stream at once."""
    try:
        return await authenticator.authenticate(secret) is not None
    except ServiceError:
        return True
