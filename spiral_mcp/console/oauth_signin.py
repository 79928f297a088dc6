"""Signing in to the console with OAuth (CONSOLE_OAUTH_CLIENT_ID set): the console is a client of
CONSOLE_OAUTH_ISSUER in the authorization code flow with PKCE (oauth/authorization.py).

``GET /admin/oauth/start`` (a link of the sign-in page, not a form: the CSP's ``form-action
'self'`` would stop a form's redirect to the issuer) sends the browser to the issuer, the
sign-in's state, nonce and PKCE verifier in a short-lived pre-sign-in cookie. That cookie is
``SameSite=Lax``, not Strict: the issuer's redirect back to ``/admin/oauth/callback`` is a
top-level navigation started by another site, which a browser sends Lax cookies with and Strict
ones not. Lax still keeps it from any cross-site subrequest or POST, and it is HttpOnly, lives
10 minutes and is spent by the first callback, whatever its outcome.

The callback checks the state, exchanges the code, and verifies the access token exactly as /mcp
verifies one (credentials.BearerCheck: the issuer's keys, this server as audience, the tenant of
the issuer's binding, the user of OAUTH_USER_CLAIMS); it must carry the ``admin`` scope. The
console session it opens belongs to that user (api/sessions.py ``create_for_user``).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from ..api.auth import ADMIN_SCOPE
from ..api.principal import AdminPrincipal
from ..api.sessions import came_over_tls, set_session_cookie
from ..config import Settings
from ..credentials import CredentialRefused
from ..errors import ServiceError
from ..oauth import TokenVerifier
from ..oauth.authorization import AuthorizationClient, PendingSignIn, SignInRefused
from ..oauth.challenges import token_scopes
from ..server.keys import BEARER, CONSOLE_OAUTH, CONSOLE_SESSIONS, SETTINGS
from .signin import login_page
from .state import STATIC_URL

__all__ = ["CALLBACK_PATH", "console_oauth_client", "routes"]

log = logging.getLogger(__name__)

CALLBACK_PATH = "/admin/oauth/callback"
_PENDING_COOKIE = "spiral_console_oauth"
# As the session cookie: the __Host- prefix (Secure, Path=/, no Domain) over TLS.
_TLS_PENDING_COOKIE = "__Host-spiral_console_oauth"
_PENDING_SECONDS = 600

routes = web.RouteTableDef()


def console_oauth_client(settings: Settings, verifier: TokenVerifier) -> AuthorizationClient:
    """The console's client at its issuer, returning to ``<OAUTH_RESOURCE's origin>/admin/oauth/
    callback``: the server's public address, the one OAUTH_RESOURCE already names."""
    assert settings.oauth_resource is not None
    parts = urlsplit(settings.oauth_resource)
    return AuthorizationClient(settings, verifier,
                               redirect_uri=f"{parts.scheme}://{parts.netloc}{CALLBACK_PATH}")


def _pending_cookie(request: web.Request) -> str:
    return _TLS_PENDING_COOKIE if came_over_tls(request) else _PENDING_COOKIE


def _refused(request: web.Request, message: str, *, status: int) -> web.Response:
    response = login_page(request, f"OAuth sign-in refused: {message}", problem=True,
                          status=status)
    _forget_pending(response, request)
    return response


def _not_configured(request: web.Request) -> web.Response:
    return login_page(request, "Signing in with OAuth is not configured on this server "
                      "(CONSOLE_OAUTH_CLIENT_ID).", problem=True, status=404)


def _forget_pending(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(_pending_cookie(request), path="/", secure=came_over_tls(request),
                        httponly=True, samesite="Lax")


@routes.get("/oauth/start")
async def start(request: web.Request) -> web.Response:
    client = request.config_dict.get(CONSOLE_OAUTH)
    if client is None:
        return _not_configured(request)
    try:
        url, pending = await client.start()
    except SignInRefused as exc:
        return _refused(request, str(exc), status=502)
    except ServiceError as exc:
        return _refused(request, exc.message, status=503)
    response = web.Response(status=303, headers={"Location": url})
    response.set_cookie(_pending_cookie(request), pending.cookie_value(), path="/",
                        max_age=_PENDING_SECONDS, httponly=True,
                        secure=came_over_tls(request), samesite="Lax")
    return response


@routes.get("/oauth/callback")
async def callback(request: web.Request) -> web.Response:
    client = request.config_dict.get(CONSOLE_OAUTH)
    if client is None:
        return _not_configured(request)
    pending = PendingSignIn.from_cookie(request.cookies.get(_pending_cookie(request)))
    try:
        access_token = await client.finish(pending, request.query)
        verified, principal = await request.config_dict[BEARER].token_principal(access_token)
    except SignInRefused as exc:
        return _refused(request, str(exc), status=400)
    except CredentialRefused as refused:
        return _refused(request, refused.message, status=403)
    except ServiceError as exc:
        return _refused(request, exc.message, status=503)
    if verified.issuer != client.issuer:
        return _refused(request, "the token was issued by another issuer than the one asked",
                        status=403)
    if ADMIN_SCOPE not in principal.scopes:
        wanted = " ".join(token_scopes(request.config_dict[SETTINGS], [ADMIN_SCOPE]))
        return _refused(request, f"{principal.user or principal.key_name} signed in, but the "
                        f"token lacks the admin scope ({wanted}); the console is for tenant "
                        "admins", status=403)
    admin = AdminPrincipal.tenant_admin(principal)
    sessions = request.config_dict[CONSOLE_SESSIONS]
    try:
        cookie, _, lifetime = await sessions.create_for_user(admin, verified)
    except ValueError as exc:
        return _refused(request, str(exc), status=403)
    # A page that moves on by itself, not a redirect: the browser came here from the issuer's
    # site, and a redirect would stay part of that cross-site navigation, which the
    # SameSite=Strict session cookie is not sent with; the page's own navigation is same-site.
    response = aiohttp_jinja2.render_template("signed_in.html", request, {
        "static_url": STATIC_URL, "who": admin.actor, "next": "/admin"})
    set_session_cookie(response, request, cookie, max_age=lifetime)
    _forget_pending(response, request)
    log.info("console sign-in", extra={"actor": admin.actor, "role": admin.role,
                                       "credential": "oauth"})
    return response
