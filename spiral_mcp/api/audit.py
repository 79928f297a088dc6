"""The tenant's audit log: every tool call and admin change, filtered, newest first, in keyset
pages (GET /audit)."""

from __future__ import annotations

from typing import Any

from ..admin.audit import AUDIT_PAGE_DEFAULT, AuditFilters, audit_page
from .routing import ApiCall, ApiRoutes

__all__ = ["routes"]

routes = ApiRoutes()


@routes.operation("GET", "/audit", summary="Read the tenant's audit log", query="audit_query",
                  response="audit_page")
async def list_audit(call: ApiCall) -> dict[str, Any]:
    """Calls newest first, filtered by key, tool, outcome and time ([since, until)); follow
    next_cursor with the same filters for the next page. Arguments appear as they were
    audited, secrets redacted."""
    query = call.query
    filters = AuditFilters.parse(key_id=query.get("key_id"), tool=query.get("tool"),
                                 outcome=query.get("outcome"), since=query.get("since"),
                                 until=query.get("until"))
    async with call.tenant(readonly=True) as conn:
        return await audit_page(conn, call.queries, filters=filters,
                                limit=query.get("limit", AUDIT_PAGE_DEFAULT),
                                cursor=query.get("cursor"))
