"""Signing in and out of the console, and who is signed in.

Sign-in takes an API key with the ``admin`` scope (or an OAuth access token holding it, checked
as for MCP), or an operator credential when the operator path is on; it opens a console session
(api/sessions.py) whose id travels only in an HttpOnly, SameSite=Strict cookie (``__Host-`` and
Secure over TLS). The credential itself is never kept by the browser. Sign-out ends the session
in the database, not only the cookie.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from ..api.auth import bearer_admin
from ..api.principal import OPERATOR
from ..api.sessions import cookie_name, session_admin, start_session, stop_session
from ..api.state import OPERATORS
from ..credentials import CredentialRefused
from ..errors import ServiceError
from .security import came_over_tls
from .state import SIGNED_IN, STATIC_URL, signed_in

__all__ = ["routes", "signed_in_only"]

log = logging.getLogger(__name__)

# Reached without a session: the sign-in page itself and the package's CSS/JS.
_OPEN = ("/admin/login", "/admin/static/")
_SIGN_IN = "/admin/login"
_LONGEST_CREDENTIAL = 8192

routes = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _same_origin(request: web.Request) -> bool:
    """A form post's Origin, when the browser sends one, names this very server: a page of
    another site cannot sign a browser in (login CSRF) or out."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    scheme = "https" if came_over_tls(request) else request.scheme
    return parts.scheme == scheme and parts.netloc == request.host


@web.middleware
async def signed_in_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page but sign-in needs a live console session; without one, the sign-in page."""
    if request.path.startswith(_OPEN) or request.match_info.http_exception is not None:
        return await handler(request)
    cookie = request.cookies.get(cookie_name(request))
    admin = await session_admin(request, cookie) if cookie else None
    if admin is None:
        if request.method != "GET":
            raise web.HTTPSeeOther(_SIGN_IN + "?expired=1")
        raise web.HTTPSeeOther(_SIGN_IN if request.path == "/admin" else
                               f"{_SIGN_IN}?expired=1")
    request[SIGNED_IN] = admin
    return await handler(request)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _login_page(request: web.Request, message: str | None = None, *, problem: bool = False,
                status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template("login.html", request, {
        "static_url": STATIC_URL, "message": message, "problem": problem,
        "operators": OPERATORS in request.config_dict}, status=status)


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    expired = request.query.get("expired") == "1"
    ended = request.query.get("ended") == "1"
    return _login_page(request, "Your session has ended; sign in again." if expired else
                       "You are signed out." if ended else None)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    if not _same_origin(request):
        return _login_page(request, "This sign-in came from another site and was refused.",
                           problem=True, status=403)
    form = await request.post()
    credential = str(form.get("credential", "")).strip()
    if not credential or len(credential) > _LONGEST_CREDENTIAL:
        return _login_page(request, "Paste an API key with the admin scope (spk_…).",
                           problem=True, status=400)
    try:
        admin = await bearer_admin(request, f"Bearer {credential}")
    except CredentialRefused as refused:
        return _login_page(request, refused.message, problem=True, status=refused.status)
    except ServiceError as exc:
        # PERMISSION_DENIED (no admin scope) says so; an outage says to retry.
        return _login_page(request, exc.message, problem=True,
                           status=403 if exc.retry_after is None else 503)
    cookie = await start_session(request, admin)
    response = _see_other("/admin/tenants" if admin.role == OPERATOR else "/admin")
    response.set_cookie(cookie_name(request), cookie, path="/", httponly=True,
                        samesite="Strict", secure=came_over_tls(request))
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    admin = signed_in(request)
    form = await request.post()
    token = str(form.get("csrf_token", ""))
    session = admin.session
    if session is None or not _same_origin(request) \
            or not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
        raise web.HTTPForbidden(text="the sign-out form is stale or came from another site; "
                                     "reload the page and sign out again")
    await stop_session(request, request.cookies[cookie_name(request)])
    response = _see_other(f"{_SIGN_IN}?ended=1")
    response.del_cookie(cookie_name(request), path="/", secure=came_over_tls(request),
                        samesite="Strict")
    return response
