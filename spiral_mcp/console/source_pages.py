"""The sources pages: the instances with the state of their last sync, the form to add one, and
one instance's page (test, sync and backfill with live progress, its history of runs)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from ..server.keys import DATABASE
from ..sources.manage import KINDS, list_sources
from ..sources.runs import list_runs
from .access import not_found, tenant_admin, tenant_reads
from .views import render

__all__ = ["routes"]

routes = web.RouteTableDef()

_RUNS_SHOWN = 50


def _projects(source: dict[str, Any]) -> dict[str, str]:
    return dict(source.get("config", {}).get("projects", {}))


@routes.get("/sources")
async def sources(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    queries = request.config_dict[DATABASE].queries
    async with tenant_reads(request, admin) as conn:
        found = await list_sources(conn, queries, admin.tenant_id)
        runs = await list_runs(conn, queries, limit=_RUNS_SHOWN)
    last: dict[uuid.UUID, str] = {}
    for run in runs:  # newest first: the first seen of an instance is its last
        last.setdefault(run["instance_id"], run["status"])
    shown = [{**source, "projects": sorted(_projects(source).values()),
              "last_status": last.get(source["instance_id"])} for source in found]
    return render(request, "sources.html", {
        "title": "Sources", "sources": shown, "kinds": KINDS})


@routes.get("/sources/{instance_id}")
async def source(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    try:
        instance_id = uuid.UUID(request.match_info["instance_id"])
    except ValueError:
        raise not_found("source with this id") from None
    queries = request.config_dict[DATABASE].queries
    async with tenant_reads(request, admin) as conn:
        found = [s for s in await list_sources(conn, queries, admin.tenant_id)
                 if s["instance_id"] == instance_id]
        if not found:
            # Another tenant's source is not found either (row-level security hides it).
            raise not_found("source with this id")
        runs = await list_runs(conn, queries, instance_id=instance_id, limit=_RUNS_SHOWN)
    running = next((run for run in runs if run["status"] == "running"), None)
    return render(request, "source.html", {
        "title": found[0]["name"], "source": {**found[0], "projects": _projects(found[0])},
        "runs": runs,
        "running_task": running["task_id"] if running and running.get("task_id") else None})
