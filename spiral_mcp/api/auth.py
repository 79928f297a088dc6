"""Who calls the admin API, as an :class:`AdminPrincipal`; the API application's middleware.

- ``Authorization: Bearer spk_...`` (an API key) or an OAuth access token: verified exactly as
  for MCP (credentials.py); a tenant admin when its scopes hold ``admin``.
- ``Authorization: Bearer spo_...``: an operator, verified by the operator path (app key
  ``OPERATORS``) when it is on.
- No Authorization header, the console's session cookie: the session's admin (api/sessions.py);
  an unsafe method then also needs the session's CSRF token and no foreign Origin. A bearer
  credential needs no CSRF token: a browser never sends one on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..credentials import CredentialRefused, bearer_credential
from ..errors import ErrorCode, ServiceError
from ..server.keys import BEARER, CONSOLE_SESSIONS, RATE_LIMITER, SETTINGS
from .envelope import error_response
from .principal import OPERATOR, TENANT_ADMIN, AdminPrincipal, ConsoleSession
from .routing import is_public
from .sessions import OPERATOR_SESSION_PREFIX, UNSAFE_METHODS, csrf_problem, session_cookie
from .state import ADMIN_PRINCIPAL, OPERATORS

__all__ = ["OPERATOR", "TENANT_ADMIN", "AdminPrincipal", "ConsoleSession", "admin_auth",
           "bearer_admin", "credential_admin", "request_admin", "session_admin"]

OPERATOR_PREFIX = "spo_"
ADMIN_SCOPE = "admin"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def bearer_admin(request: web.Request, header: str) -> AdminPrincipal:
    """The admin a bearer ``Authorization`` header names; CredentialRefused or ServiceError
    saying why it is none."""
    return await credential_admin(request, bearer_credential(request.config_dict[SETTINGS],
                                                             header))


async def credential_admin(request: web.Request, credential: str) -> AdminPrincipal:
    """The admin ``credential`` is (an admin API key or OAuth token, or an operator's
    ``spo_...``): what the console's sign-in checks a pasted secret with. CredentialRefused
    (not valid) or ServiceError (PERMISSION_DENIED: no admin scope; CONNECTION_ERROR) say why
    it is none."""
    if credential.startswith(OPERATOR_PREFIX):
        operators = request.config_dict.get(OPERATORS)
        if operators is None:
            raise CredentialRefused(401, "UNAUTHENTICATED",
                                    "operator access is off on this server (OPERATOR_API)")
        operator = await operators.principal(credential)
        if operator is None:
            raise CredentialRefused(401, "UNAUTHENTICATED",
                                    "the operator credential is not valid: it is unknown or "
                                    "revoked; spiral-mcp operator create makes a new one")
        return operator
    principal = await request.config_dict[BEARER].principal(credential)
    if ADMIN_SCOPE not in principal.scopes:
        what = "key" if principal.credential == "api_key" else "access token"
        raise ServiceError(ErrorCode.PERMISSION_DENIED,
                           f"this {what} lacks the admin scope")
    return AdminPrincipal.tenant_admin(principal)


async def session_admin(request: web.Request, cookie: str) -> AdminPrincipal:
    """The admin of the console session ``cookie``; CredentialRefused when it has ended."""
    if cookie.startswith(OPERATOR_SESSION_PREFIX):
        operators = request.config_dict.get(OPERATORS)
        admin = None if operators is None else await operators.session(cookie)
    else:
        admin = await request.config_dict[CONSOLE_SESSIONS].admin(cookie)
    if admin is None:
        raise CredentialRefused(401, "UNAUTHENTICATED",
                                "the console session has ended (signed out, expired, its key "
                                "revoked or its OAuth sign-in no longer bound to the tenant); "
                                "sign in again at /admin/login")
    return admin


async def request_admin(request: web.Request, *,
                        form_token: str | None = None) -> AdminPrincipal:
    """Who makes ``request``: its bearer credential, else its console session (with the CSRF
    check of an unsafe method: the X-CSRF-Token header, or ``form_token``, the csrf_token field
    of a console form the caller has read). CredentialRefused or ServiceError say why nobody."""
    header = request.headers.get("Authorization")
    cookie = session_cookie(request)
    if header is not None or cookie is None:
        return await bearer_admin(request, header or "")
    admin = await session_admin(request, cookie)
    if request.method in UNSAFE_METHODS:
        assert admin.session is not None
        if (problem := csrf_problem(request, admin.session, form_token=form_token)) is not None:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, problem)
    return admin


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticates every matched route but the public ones, and spends one call of the
    caller's rate limit; refusals in the envelope."""
    if request.match_info.http_exception is not None or is_public(request):
        return await handler(request)
    try:
        admin = await request_admin(request)
    except CredentialRefused as refused:
        return error_response(refused.status, refused.code, refused.message,
                              headers=refused.headers)
    if admin.principal is not None:
        # A tenant admin's calls draw on its key's budget as its tool calls do: reads on the
        # read budget, changes on the write one (RATE_LIMITED, 429 with Retry-After).
        await request.config_dict[RATE_LIMITER].admit(
            tenant_id=admin.principal.tenant_id, key_id=admin.principal.key_id,
            call_class="write" if request.method in UNSAFE_METHODS else "read")
    request[ADMIN_PRINCIPAL] = admin
    return await handler(request)
