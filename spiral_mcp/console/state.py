"""What a console request carries, and where the package's static files are served."""

from __future__ import annotations

from aiohttp import web

from ..api.principal import AdminPrincipal

__all__ = ["SIGNED_IN", "STATIC_URL", "signed_in"]

STATIC_URL = "/admin/static"

# The admin of the request's console session, set by signin.signed_in_only.
SIGNED_IN = web.RequestKey("console_admin", AdminPrincipal)


def signed_in(request: web.Request) -> AdminPrincipal:
    return request[SIGNED_IN]
