"""Signing in and out of the console, and who is signed in.

Sign-in takes an API key with the ``admin`` scope, or an operator credential (``spo_...``) when
the operator path is on, or (CONSOLE_OAUTH_CLIENT_ID set) goes through the OAuth issuer
(oauth_signin.py). It opens a console session (api/sessions.py) whose id travels only in an
HttpOnly, SameSite=Strict cookie (``__Host-`` and Secure over TLS); the credential itself is
never kept by the browser. Sign-out ends the session in the database, not only the cookie.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web

from ..api.auth import credential_admin, session_admin
from ..api.principal import OPERATOR, AdminPrincipal
from ..api.sessions import (
    OPERATOR_SESSION_PREFIX,
    clear_session_cookie,
    csrf_problem,
    same_origin,
    session_cookie,
    set_session_cookie,
)
from ..api.state import OPERATORS
from ..credentials import CredentialRefused
from ..errors import ErrorCode, ServiceError
from ..server.keys import CONSOLE_OAUTH, CONSOLE_SESSIONS
from .state import SIGNED_IN, STATIC_URL, signed_in

__all__ = ["login_page", "routes", "signed_in_only"]

log = logging.getLogger(__name__)

# Reached without a session: the sign-in pages (a key's, OAuth's) and the package's CSS/JS.
_OPEN = ("/admin/login", "/admin/oauth/", "/admin/static/")
_SIGN_IN = "/admin/login"
_LONGEST_CREDENTIAL = 8192

routes = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _from_elsewhere(request: web.Request) -> bool:
    """Whether a form post names another origin than this server: a page of another site
    cannot sign a browser in (login CSRF) or out. No Origin (an old browser): SameSite and the
    token decide."""
    origin = request.headers.get("Origin")
    return origin is not None and not same_origin(request, origin)


@web.middleware
async def signed_in_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page but sign-in needs a live console session; without one, the sign-in page."""
    if request.path.startswith(_OPEN) or request.match_info.http_exception is not None:
        return await handler(request)
    cookie = session_cookie(request)
    try:
        admin = await session_admin(request, cookie) if cookie else None
    except CredentialRefused:
        admin = None
    if admin is None:
        # The home page is where a first visit lands: no "session ended" for it.
        expired = cookie is not None or request.path not in ("/admin", "/admin/")
        raise web.HTTPSeeOther(_SIGN_IN + ("?expired=1" if expired else ""))
    request[SIGNED_IN] = admin
    return await handler(request)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def login_page(request: web.Request, message: str | None = None, *, problem: bool = False,
               status: int = 200) -> web.Response:
    """The sign-in page, with ``message`` (a ``problem`` shown as such); it offers "Sign in
    with <issuer>" when the console's OAuth client is configured."""
    client = request.config_dict.get(CONSOLE_OAUTH)
    return aiohttp_jinja2.render_template("login.html", request, {
        "static_url": STATIC_URL, "message": message, "problem": problem,
        "operators": OPERATORS in request.config_dict,
        "oauth_name": client.name if client is not None else None}, status=status)


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    expired = request.query.get("expired") == "1"
    ended = request.query.get("ended") == "1"
    return login_page(request, "Your session has ended; sign in again." if expired else
                       "You are signed out." if ended else None)


async def _open_session(request: web.Request, admin: AdminPrincipal) -> tuple[str, float]:
    """A new console session for ``admin``: its cookie value and how long it may last (both
    kinds last CONSOLE_SESSION_TTL at most)."""
    sessions = request.config_dict[CONSOLE_SESSIONS]
    if admin.role == OPERATOR:
        cookie, _ = await request.config_dict[OPERATORS].open_session(admin)
    else:
        cookie, _ = await sessions.create(admin)
    return cookie, sessions.ttl


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    if _from_elsewhere(request):
        return login_page(request, "This sign-in came from another site and was refused.",
                           problem=True, status=403)
    form = await request.post()
    credential = str(form.get("credential", "")).strip()
    if not credential or len(credential) > _LONGEST_CREDENTIAL:
        return login_page(request, "Paste an API key with the admin scope (spk_…).",
                           problem=True, status=400)
    try:
        admin = await credential_admin(request, credential)
        if admin.principal is not None and admin.principal.credential != "api_key":
            raise CredentialRefused(400, "VALIDATION_ERROR", "sign in with an API key (spk_…); "
                                    "an access token is not pasted here: OAuth users sign in "
                                    "through their issuer's button, where one is offered")
    except CredentialRefused as refused:
        return login_page(request, refused.message, problem=True, status=refused.status)
    except ServiceError as exc:
        # PERMISSION_DENIED (no admin scope) says so; an outage says to retry.
        status = 403 if exc.code is ErrorCode.PERMISSION_DENIED else 503
        return login_page(request, exc.message, problem=True, status=status)
    cookie, lifetime = await _open_session(request, admin)
    response = _see_other("/admin/tenants" if admin.role == OPERATOR else "/admin")
    set_session_cookie(response, request, cookie, max_age=lifetime)
    log.info("console sign-in", extra={"actor": admin.actor, "role": admin.role})
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    admin = signed_in(request)
    form = await request.post()
    assert admin.session is not None
    if (problem := csrf_problem(request, admin.session,
                                form_token=str(form.get("csrf_token", "")))) is not None:
        raise web.HTTPForbidden(text=f"sign-out refused: {problem}")
    cookie = session_cookie(request)
    assert cookie is not None
    if cookie.startswith(OPERATOR_SESSION_PREFIX):
        await request.config_dict[OPERATORS].end_session(cookie)
    else:
        await request.config_dict[CONSOLE_SESSIONS].end(cookie)
    response = _see_other(f"{_SIGN_IN}?ended=1")
    clear_session_cookie(response, request)
    return response
