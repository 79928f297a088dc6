"""The stateless 2026-07-28 era of POST /mcp: one request per POST, its _meta envelope and the
header checks (the specification's ladder), answered as JSON, or as SSE for a request that sends
progress or log messages, or a subscriptions/listen stream."""

from __future__ import annotations

from aiohttp import web

from ..server.keys import DISPATCHER, KEY_STILL_VALID, PRINCIPAL, REQUEST_ID
from .changes import ListenLimitError
from .exchange import LOG_LEVELS, Exchange
from .http import (
    accepts,
    cancel_on_disconnect,
    has_progress,
    http_error,
    json_body,
    read_body,
    rpc_error_response,
    shown,
    step_up,
)
from .jsonrpc import (
    HEADER_MISMATCH,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Request,
    RpcError,
    parse_message,
)
from .listen import listen
from .modern import LOG_LEVEL_META, REMOVED_NOTIFICATIONS, log_level
from .param_headers import check_param_headers, decoded_header
from .sse_answer import answer_as_stream
from .versions import (
    MODERN_VERSIONS,
    PROTOCOL_VERSION_META,
    VERSION_HEADER,
    check_stateless_version,
    missing_stateless_meta,
    unsupported,
)

__all__ = ["MODERN_ERROR_STATUS", "post"]

# The wire status of a JSON-RPC error in the stateless era (the official SDK's table).
MODERN_ERROR_STATUS = {-32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400,
                       -32022: 400, METHOD_NOT_FOUND: 404}

# The parameter each method mirrors in the Mcp-Name header (streamable-http.mdx, Standard
# Headers; the tasks extension adds its methods' taskId, so a load balancer can route them to
# the process holding the task).
_NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
             "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}


async def post(request: web.Request, version: str) -> web.StreamResponse:
    value = await read_body(request, "application/json")
    if isinstance(value, web.Response):
        return value
    if not isinstance(value, dict):
        return rpc_error_response(RpcError(
            INVALID_REQUEST, "the body must be one JSON-RPC request or notification"))
    if "id" not in value:
        if version not in MODERN_VERSIONS:
            return rpc_error_response(unsupported(shown(version)))
        if value.get("method") in REMOVED_NOTIFICATIONS:
            return rpc_error_response(RpcError(
                METHOD_NOT_FOUND, f"method not found: {shown(str(value['method']))}"),
                status=MODERN_ERROR_STATUS[METHOD_NOT_FOUND])
        return web.Response(status=202)
    try:
        message = parse_message(value)
    except RpcError as exc:
        return rpc_error_response(exc)
    if not isinstance(message, Request):
        return rpc_error_response(RpcError(INVALID_REQUEST, "expected a request"))
    if (rejection := _ladder(request, message)) is not None:
        return rpc_error_response(rejection, request_id=message.id)
    if (refusal := step_up(request, [message])) is not None:
        return refusal
    exchange = Exchange(principal=request[PRINCIPAL], protocol_version=version,
                        transport="streamable", http_request_id=request[REQUEST_ID])
    if message.method == "subscriptions/listen":
        return await _listen(request, message, exchange)
    if (has_progress(message) or _has_log_level(message)) \
            and accepts(request, "text/event-stream"):
        return await answer_as_stream(request, [message], [], exchange, {},
                                      until_disconnect=True)
    reply = await cancel_on_disconnect(
        request, request.app[DISPATCHER].handle_request(message, exchange))
    if reply is None:
        return web.Response(status=202)
    status = MODERN_ERROR_STATUS.get(reply["error"]["code"], 200) if "error" in reply else 200
    return json_body(reply, status=status)


def _has_log_level(message: Request) -> bool:
    meta = message.params.get("_meta")
    return isinstance(meta, dict) and meta.get(LOG_LEVEL_META) is not None


async def _listen(request: web.Request, message: Request,
                  exchange: Exchange) -> web.StreamResponse:
    if not accepts(request, "text/event-stream"):
        return http_error(406, "Accept must list text/event-stream for subscriptions/listen")
    try:
        return await listen(request, message, exchange, request.app[DISPATCHER],
                            key_still_valid=request.get(KEY_STILL_VALID))
    except RpcError as exc:
        return rpc_error_response(exc, request_id=message.id,
                                  status=MODERN_ERROR_STATUS.get(exc.code, 400))
    except ListenLimitError as exc:
        return rpc_error_response(RpcError(INVALID_REQUEST, str(exc)), request_id=message.id,
                                  status=429)


def _repeated(request: web.Request) -> RpcError | None:
    """HeaderMismatch for an ``Mcp-*`` or version header sent twice with different values: the
    checks below read the first, and a gateway routing on the same header may read the last
    or both joined, so the two would decide on different values."""
    seen: dict[str, str] = {}
    for name, value in request.headers.items():
        folded = name.lower()
        if not folded.startswith("mcp-"):
            continue
        if seen.setdefault(folded, value) != value:
            return RpcError(HEADER_MISMATCH, f"{name} header is sent more than once, with "
                                             "different values")
    return None


def _ladder(request: web.Request, message: Request) -> RpcError | None:
    """The stateless era's checks, in the specification's order; the first failure wins."""
    if (missing := missing_stateless_meta(message.params)) is not None:
        return missing
    if (repeated := _repeated(request)) is not None:
        return repeated
    body_version = message.params["_meta"][PROTOCOL_VERSION_META]
    if request.headers.get(VERSION_HEADER) != body_version:
        return RpcError(HEADER_MISMATCH,
                        f"{VERSION_HEADER} header does not match params._meta's protocol version")
    if request.headers.get("Mcp-Method") != message.method:
        return RpcError(HEADER_MISMATCH, "Mcp-Method header does not match the body's method")
    if (named := _NAMED_BY.get(message.method)) is not None:
        name = message.params.get(named)
        header = request.headers.get("Mcp-Name")
        if name is not None and (header is None or decoded_header(header) != name):
            return RpcError(HEADER_MISMATCH, f"Mcp-Name header does not match params.{named}")
    if message.method == "tools/call" and isinstance(message.params.get("name"), str):
        mirrored = request.app[DISPATCHER].registry.header_params(message.params["name"])
        if mirrored and (mismatch := check_param_headers(
                request.headers, mirrored, message.params.get("arguments"))) is not None:
            return mismatch
    if (problem := check_stateless_version(body_version)) is not None:
        return problem
    try:
        log_level(message.params, LOG_LEVELS)  # refused before a stream opens for its messages
    except RpcError as exc:
        return exc
    return None
