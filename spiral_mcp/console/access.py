"""What a page may show to whom, and the tenant transaction it reads in.

A tenant admin's pages read only under its own tenant's transaction (row-level security, as the
tools and the API do): another tenant's object is simply not there, so its page is "not found".
An operator's pages are the operator's only: a tenant admin's cookie gets "this page is for
operators", which says nothing of any tenant.
"""

from __future__ import annotations

from aiohttp import web

from ..api.principal import OPERATOR, TENANT_ADMIN, AdminPrincipal
from ..db import TenantTransaction
from ..server.keys import DATABASE
from .state import signed_in

__all__ = ["PageError", "not_found", "operator", "tenant_admin", "tenant_reads"]


class PageError(Exception):
    """A page that cannot be shown to this admin: rendered as the error page (app.py)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def tenant_admin(request: web.Request) -> AdminPrincipal:
    """The signed-in tenant admin; an operator is sent to the tenants page (the tenant pages
    have no tenant to show it)."""
    admin = signed_in(request)
    if admin.role != TENANT_ADMIN:
        raise web.HTTPSeeOther("/admin/tenants")
    return admin


def operator(request: web.Request) -> AdminPrincipal:
    admin = signed_in(request)
    if admin.role != OPERATOR:
        raise PageError(403, "For operators only",
                        "This page is for operators; a tenant admin's session cannot open it.")
    return admin


def tenant_reads(request: web.Request, admin: AdminPrincipal) -> TenantTransaction:
    """A read-only transaction in the admin's own tenant."""
    assert admin.tenant_id is not None
    return request.config_dict[DATABASE].tenant(admin.tenant_id, readonly=True)


def not_found(what: str) -> PageError:
    return PageError(404, "Not found", f"There is no {what} here.")
