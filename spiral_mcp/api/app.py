"""The admin API application, mounted by the server at ``/api/v1`` (a sub-application with its
own middleware: errors in the envelope, then who is calling)."""

from __future__ import annotations

from aiohttp import web

from . import audit, instances, keys, openapi, projects, runs, tasks, tenants, usage
from .auth import admin_auth
from .openapi import OPENAPI, encoded_document
from .routing import ApiRoutes, api_errors, bind
from .schemas import SchemaBook
from .state import SCHEMAS

__all__ = ["API_PREFIX", "api_application"]

API_PREFIX = "/api/v1"

# Every resource module's operations; a module added here is routed and documented.
_MODULES: tuple[ApiRoutes, ...] = (openapi.routes, keys.routes, tasks.routes, instances.routes,
                                   runs.routes, audit.routes, usage.routes, projects.routes,
                                   tenants.routes)


def api_application(*modules: ApiRoutes) -> web.Application:
    """The API with the shipped resource modules and any ``modules`` given (tests, helpers'
    resources): routes bound to their compiled schemas, and the OpenAPI document of them all."""
    book = SchemaBook.load()
    app = web.Application(middlewares=[api_errors, admin_auth])
    app[SCHEMAS] = book
    every = (*_MODULES, *modules)
    for module in every:
        for operation in module:
            app.router.add_route(operation.method, operation.path, bind(operation, book),
                                 name=operation.operation_id)
    app[OPENAPI] = encoded_document(every, book)
    return app
