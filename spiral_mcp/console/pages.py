"""The console's home and keys pages, rendered from the same domain functions as the API
(never by calling the API over HTTP). Changes go through /api/v1 from console.js."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .. import admin as admin_domain
from ..admin.keys import KEY_STATES
from ..admin.overview import tenant_overview
from ..config_values import SCOPES
from ..errors import ErrorCode, ServiceError
from ..server.keys import DATABASE
from ..sources.manage import list_sources
from .access import tenant_admin, tenant_reads
from .views import render

__all__ = ["routes"]

routes = web.RouteTableDef()

# What a new key gets unless the admin unticks it: an agent's everyday scopes, never admin.
_DEFAULT_SCOPES = ("read", "write")


def _server_url(request: web.Request, path: str) -> str:
    return f"{request.scheme}://{request.host}{path}"


@routes.get("")
async def home(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    database = request.config_dict[DATABASE]
    async with tenant_reads(request, admin) as conn:
        live = await database.queries.count_live_keys(conn)
        sources = await list_sources(conn, database.queries, admin.tenant_id)
        summary = await tenant_overview(conn, database.queries)
    # An admin signed in with a key holds one: the next is the first made for an agent.
    own = 1 if admin.principal is not None and admin.principal.credential == "api_key" else 0
    steps = [
        {"title": "Create a key for each agent", "href": "/admin/keys", "done": live > own,
         "text": "with only the scopes it needs; the secret is shown once."},
        {"title": "Add a source", "href": "/admin/sources", "done": bool(sources),
         "text": "Jira, GitHub or Asana: its issues sync into this tenant."},
        {"title": "Sync it and watch the history", "href": "/admin/sources",
         "done": summary["runs"] > 0, "text": "a sync or a backfill shows its progress live."},
        {"title": "Open a project dashboard", "href": "/admin/projects",
         "done": False, "text": "cumulative flow, throughput, lead and cycle times, WIP."},
        {"title": "Watch usage and the audit log", "href": "/admin/usage",
         "done": summary["calls"] > 0, "text": "calls, errors and latency per tool and key."},
    ]
    return render(request, "home.html", {
        "title": "Home",
        "tenant_line": f"Tenant {summary['tenant_name']}",
        "summary": {"live_keys": live, "sources": len(sources), "projects": summary["projects"],
                    "calls": summary["calls"]},
        "steps": steps,
        "mcp_url": _server_url(request, "/mcp"),
        "execute_url": _server_url(request, "/execute"),
    })


@routes.get("/keys")
async def keys(request: web.Request) -> web.Response:
    """Live keys, newest first (the key just made is at the top); revoked and expired ones
    behind a link each, in pages."""
    admin = tenant_admin(request)
    database = request.config_dict[DATABASE]
    state = request.query.get("state", "live")
    if state not in KEY_STATES:
        state = "live"
    problem = None
    found: list[dict[str, Any]] = []
    next_url = None
    async with tenant_reads(request, admin) as conn:
        try:
            page = await admin_domain.key_page(conn, database.queries, state=state,
                                               cursor=request.query.get("cursor") or None)
        except ServiceError as exc:  # a damaged cursor in the address
            if exc.code is not ErrorCode.VALIDATION_ERROR:
                raise
            problem = exc.message
        else:
            found = page["keys"]
            if page["next_cursor"]:
                next_url = "/admin/keys?" + urlencode({"state": state,
                                                       "cursor": page["next_cursor"]})
    signed_in_with = admin.principal.key_id if admin.principal is not None else None
    for key in found:
        key["current"] = key["key_id"] == signed_in_with
    return render(request, "keys.html", {
        "title": "API keys", "keys": found, "scopes": SCOPES, "state": state,
        "states": KEY_STATES, "next_url": next_url, "problem": problem,
        "default_scopes": _DEFAULT_SCOPES})
