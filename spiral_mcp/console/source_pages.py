"""The sources pages: the instances with the state of their last sync, the form to add one, and
one instance's page (test, sync and backfill with live progress, its history of runs)."""

from __future__ import annotations

import uuid

from aiohttp import web

from ..admin import AdminNotFound
from ..admin import instances as instance_domain
from ..admin.runs import list_runs
from ..server.keys import DATABASE
from ..sources.manage import KINDS
from .access import not_found, tenant_admin, tenant_reads
from .views import render

__all__ = ["routes"]

routes = web.RouteTableDef()

_RUNS_SHOWN = 50


@routes.get("/sources")
async def sources(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    async with tenant_reads(request, admin) as conn:
        found = await instance_domain.list_instances(conn, request.config_dict[DATABASE].queries)
    return render(request, "sources.html", {"title": "Sources", "sources": found, "kinds": KINDS})


@routes.get("/sources/{instance_id}")
async def source(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    try:
        instance_id = uuid.UUID(request.match_info["instance_id"])
    except ValueError:
        raise not_found("source with this id") from None
    queries = request.config_dict[DATABASE].queries
    async with tenant_reads(request, admin) as conn:
        try:
            # Another tenant's source is not found either (row-level security hides it).
            found = await instance_domain.get_instance(conn, queries, instance_id)
        except AdminNotFound:
            raise not_found("source with this id") from None
        runs = (await list_runs(conn, queries, instance_id=instance_id,
                                limit=_RUNS_SHOWN))["runs"]
    running = next((run for run in runs if run["status"] == "running"), None)
    return render(request, "source.html", {
        "title": found["name"], "source": found, "runs": runs,
        "running_task": running["task_id"] if running and running["task_id"] else None})
