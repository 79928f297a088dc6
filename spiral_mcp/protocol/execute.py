"""POST /execute: plain JSON-RPC 2.0 for scripts (one request or a batch, no handshake, the answer
in the body), and GET /tools: the tool list as plain JSON."""

from __future__ import annotations

from aiohttp import web

from ..server.keys import DISPATCHER, PRINCIPAL, REQUEST_ID, TEMPLATES
from .exchange import Exchange
from .http import (
    answer,
    json_body,
    parse_batch,
    read_json,
    rpc_error_response,
    run_messages,
    step_up,
)
from .jsonrpc import INVALID_REQUEST, RpcError
from .versions import LATEST_HANDSHAKE

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/execute")
async def execute(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return rpc_error_response(
            RpcError(INVALID_REQUEST, "Content-Type must be application/json"), status=415)
    try:
        value = await read_json(request)
        batch, errors = parse_batch(value, allow_batch=True)
    except RpcError as exc:
        return rpc_error_response(exc)
    if (refusal := step_up(request, batch)) is not None:
        return refusal
    exchange = Exchange(principal=request[PRINCIPAL], protocol_version=LATEST_HANDSHAKE,
                        transport="execute", http_request_id=request[REQUEST_ID])
    answers = errors + await run_messages(request.app[DISPATCHER], batch, exchange)
    return answer(answers, batch=isinstance(value, list))


@routes.get("/templates")
async def templates(request: web.Request) -> web.Response:
    """The report templates this key may call, with their descriptions, definitions and
    parameter schemas."""
    callable_ = {t["name"] for t in request.app[DISPATCHER].registry.visible(request[PRINCIPAL])}
    return json_body({"templates": [
        {"name": t.name, "title": t.title, "description": t.description,
         "definitions": t.definitions, "input_schema": t.input_schema, "row_cap": t.row_cap}
        for t in request.app[TEMPLATES] if t.name in callable_
    ]})


@routes.get("/tools")
async def tools(request: web.Request) -> web.Response:
    return json_body({"tools": request.app[DISPATCHER].registry.visible(request[PRINCIPAL])})
