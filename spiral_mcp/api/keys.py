"""API keys of the caller's tenant: list, create (the secret in the 201 only), read, revoke."""

from __future__ import annotations

from typing import Any

from .. import admin
from .routing import ApiCall, ApiRoutes

__all__ = ["routes"]

routes = ApiRoutes()


@routes.operation("GET", "/keys", summary="List the tenant's API keys", response="key_list")
async def list_keys(call: ApiCall) -> dict[str, Any]:
    """Every key of the tenant, revoked and expired ones included, oldest first; never a hash
    or a secret."""
    async with call.tenant(readonly=True) as conn:
        keys = await admin.list_keys(conn, call.queries, call.admin.tenant_id)
    return {"keys": keys}
