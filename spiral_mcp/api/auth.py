"""Who calls the admin API, as an :class:`AdminPrincipal`; the API application's middleware.

- ``Authorization: Bearer spk_...`` (an API key) or an OAuth access token: verified exactly as
  for MCP (credentials.py); a tenant admin when its scopes hold ``admin``.
- ``Authorization: Bearer spo_...``: an operator, verified by the operator path (app key
  ``OPERATORS``) when it is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..credentials import CredentialRefused, bearer_credential
from ..errors import ErrorCode, ServiceError
from ..server.keys import BEARER, SETTINGS
from .envelope import error_response
from .principal import OPERATOR, TENANT_ADMIN, AdminPrincipal, ConsoleSession
from .routing import is_public
from .state import ADMIN_PRINCIPAL, OPERATORS

__all__ = ["OPERATOR", "TENANT_ADMIN", "AdminPrincipal", "ConsoleSession", "admin_auth",
           "bearer_admin"]

OPERATOR_PREFIX = "spo_"
ADMIN_SCOPE = "admin"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def bearer_admin(request: web.Request, header: str) -> AdminPrincipal:
    """The admin a bearer ``Authorization`` header names; CredentialRefused or ServiceError
    saying why it is none."""
    settings = request.config_dict[SETTINGS]
    credential = bearer_credential(settings, header)
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


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticates every matched route but the public ones; refusals in the envelope."""
    if request.match_info.http_exception is not None or is_public(request):
        return await handler(request)
    try:
        admin = await bearer_admin(request, request.headers.get("Authorization", ""))
    except CredentialRefused as refused:
        return error_response(refused.status, refused.code, refused.message,
                              headers=refused.headers)
    request[ADMIN_PRINCIPAL] = admin
    return await handler(request)
