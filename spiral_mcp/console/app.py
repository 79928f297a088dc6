"""The web console, a sub-application the server mounts at ``/admin``.

Server-rendered Jinja2 pages (autoescape on: every value a tenant stored is text, never markup),
the package's own CSS and script under ``/admin/static`` (no CDN, no build step), security
headers on every answer, and a console session for every page but sign-in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..errors import ServiceError
from . import (
    insight_pages,
    oauth_signin,
    pages,
    project_pages,
    signin,
    source_pages,
    tenant_pages,
)
from .access import PageError
from .security import security_headers
from .signin import signed_in_only
from .views import duration, render, when

__all__ = ["CONSOLE_PREFIX", "console_application"]

CONSOLE_PREFIX = "/admin"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def page_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page refused to this admin (PageError), or one the store cannot serve now (a
    ServiceError: the database out of reach, a statement timing out), is the error page with
    its status and one line; never a JSON body or a traceback in the browser."""
    try:
        return await handler(request)
    except PageError as exc:
        return render(request, "error.html", {"title": exc.title, "message": exc.message},
                      status=exc.status)
    except ServiceError as exc:
        status = 503 if exc.retry_after else 500
        return render(request, "error.html", {
            "title": "Not available right now", "message": exc.message}, status=status)


async def _home(request: web.Request) -> web.Response:
    # /admin/ is where a typed address often ends: the home page is /admin.
    raise web.HTTPPermanentRedirect(CONSOLE_PREFIX)


def console_application() -> web.Application:
    app = web.Application(middlewares=[security_headers, signed_in_only, page_errors])
    package = resources.files("spiral_mcp.console")
    environment = aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("spiral_mcp.console", "templates"),
        # Every template is HTML: escape every value, whatever the file's name.
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["when"] = when
    environment.filters["duration"] = duration
    for module in (signin, oauth_signin, pages, source_pages, project_pages, insight_pages,
                   tenant_pages):
        app.router.add_routes(module.routes)
    app.router.add_get("/", _home)
    app.router.add_static("/static", Path(str(package / "static")), name="static",
                          append_version=False)
    return app
