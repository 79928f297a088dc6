"""The sync history of the caller's tenant: every run of its source instances (the schedule's,
the API's, the sources_sync tool's, the CLI's), newest first, in keyset pages."""

from __future__ import annotations

from typing import Any

from ..admin import instances, runs
from .routing import ApiCall, ApiRoutes

__all__ = ["routes"]

routes = ApiRoutes()


@routes.operation("GET", "/runs", summary="List sync runs", query="run_query",
                  response="run_list")
async def list_runs(call: ApiCall) -> dict[str, Any]:
    """Runs of every instance (or of ``instance_id``), of one ``status`` when given, newest
    first: started_at, finished_at, duration_ms, kind (sync or backfill), trigger, status,
    pages, items, changed, error. A run whose process died reads as failed. Pass
    ``next_cursor`` as ``cursor`` for the next page."""
    query = call.query
    async with call.tenant(readonly=True) as conn:
        return await runs.list_runs(conn, call.queries, limit=query.get("limit", 50),
                                    instance_id=query.get("instance_id"),
                                    status=query.get("status"), cursor=query.get("cursor"))


@routes.operation("GET", "/instances/{instance_id}/runs", summary="List an instance's sync runs",
                  query="instance_run_query", response="run_list")
async def list_instance_runs(call: ApiCall) -> dict[str, Any]:
    """The runs of one instance, as GET /runs lists them."""
    query = call.query
    instance_id = call.path["instance_id"]
    async with call.tenant(readonly=True) as conn:
        await instances.get_instance(conn, call.queries, instance_id)  # NOT_FOUND first
        return await runs.list_runs(conn, call.queries, limit=query.get("limit", 50),
                                    instance_id=instance_id, status=query.get("status"),
                                    cursor=query.get("cursor"))
