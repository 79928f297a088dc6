"""The operator's page: every tenant, with its state and usage of the last 24 hours; creating,
suspending, resuming and deleting go through /api/v1/tenants from console.js.

Read on the operator path's own pool of the owner role (api/operator_access.py), through the same
domain functions as the API and the CLI, and recorded in operator_audit as the API's reads are.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from ..admin import operators, tenants
from ..api.operator_access import operator_of
from ..api.state import OPERATORS
from .access import operator
from .views import render

__all__ = ["routes"]

routes = web.RouteTableDef()

_USAGE_WINDOW = timedelta(hours=24)


@routes.get("/tenants")
async def tenants_page(request: web.Request) -> web.Response:
    admin = operator(request)
    access = request.config_dict[OPERATORS]
    queries = access.database.queries
    until = datetime.now(UTC)

    async def read(conn: asyncpg.Connection) -> tuple[list[dict], list[dict]]:
        found = await tenants.list_tenants(conn, queries)
        usage = await tenants.usage_by_tenant(conn, queries, since=until - _USAGE_WINDOW,
                                              until=until)
        await operators.record(conn, queries, operator_of(admin), "console.tenants")
        return found, usage

    found, usage = await access.transaction(read)
    by_tenant = {row["tenant_id"]: row for row in usage}
    shown = [{**tenant, "calls": by_tenant.get(tenant["tenant_id"], {}).get("calls", 0),
              "p95_ms": by_tenant.get(tenant["tenant_id"], {}).get("p95_ms")}
             for tenant in found]
    return render(request, "tenants.html", {"title": "Tenants", "tenants": shown})
