"""The OpenAPI 3.1 document of the admin API, built from the operations and the schema files,
and the public route that serves it (GET /api/v1/openapi.json)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from .routing import PUBLIC, ApiCall, ApiRoutes, Operation
from .schemas import SchemaBook, as_component

__all__ = ["OPENAPI", "openapi_document", "routes"]

OPENAPI = web.AppKey("api_openapi", bytes)
_COOKIE = "spiral_console"

routes = ApiRoutes()


@routes.operation("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document",
                  role=PUBLIC, raw=True)
async def openapi_json(call: ApiCall) -> web.Response:
    """The document, built once at start-up; no credential needed."""
    return web.Response(body=call.request.app[OPENAPI], content_type="application/json")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _parameters(op: Operation, book: SchemaBook) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [{
        "name": name, "in": "path", "required": True,
        "schema": {"type": "string", "format": "uuid"} if name == "id" or name.endswith("_id")
        else {"type": "string"},
    } for name in op.params]
    if op.query is not None:
        schema = book.schema(op.query)
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required,
                     "schema": as_component(prop)}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _success(op: Operation) -> dict[str, Any]:
    if op.raw:
        return {"description": op.summary,
                "content": {media: {"schema": {}} for media in op.produces}}
    data = _ref(op.response) if op.response is not None else {"type": "null"}
    return {"description": op.summary, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["success", "data", "tenant_id", "timing_ms"],
        "additionalProperties": False,
        "properties": {
            "success": {"const": True},
            "data": data,
            "tenant_id": {"type": ["string", "null"], "format": "uuid"},
            "timing_ms": {"type": "number"},
        },
    }}}}


def _operation(op: Operation, book: SchemaBook) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.path.strip("/").split("/")[0].removesuffix(".json")],
        "responses": {
            str(op.status): _success(op),
            "default": {"description": "an error, in the envelope",
                        "content": {"application/json": {"schema": _ref("error")}}},
        },
    }
    if op.description:
        doc["description"] = op.description
    if params := _parameters(op, book):
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(op.body)}}}
    doc["security"] = [] if op.role == PUBLIC else [{"bearer": []}, {"cookie": []}]
    return doc


def openapi_document(operations: Iterable[Operation], book: SchemaBook) -> dict[str, Any]:
    """The document of ``operations``; every schema file is a component."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, book)
    return {
        "openapi": "3.1.0",
        "info": {"title": "spiral-mcp admin API", "version": __version__,
                 "description": "Tenant admins manage their tenant (keys, sources, syncs, "
                                "audit, usage); operators manage tenants. Every answer is the "
                                "product's envelope."},
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {
            "schemas": {name: as_component(schema)
                        for name, schema in sorted(book.schemas.items())},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an API key (spk_...) with the admin scope, an OAuth "
                                          "access token with it, or an operator credential "
                                          "(spo_...)"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": _COOKIE,
                           "description": "the console's session (__Host-spiral_console over "
                                          "TLS); unsafe methods also need X-CSRF-Token"},
            },
        },
    }


def encoded_document(modules: Iterable[ApiRoutes], book: SchemaBook) -> bytes:
    return orjson.dumps(openapi_document([op for m in modules for op in m], book))
