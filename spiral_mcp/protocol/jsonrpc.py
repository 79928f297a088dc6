"""JSON-RPC 2.0 on orjson: decoding bodies into messages, encoding answers, and the error type.

Decoding never raises anything but :class:`RpcError`; a body that is not UTF-8, not JSON, nested
too deep or carrying NaN/Infinity is a parse error (-32700), a JSON value that is not a message
is an invalid request (-32600).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "Notification",
    "Request",
    "Response",
    "RpcError",
    "decode",
    "encode",
    "error_message",
    "parse_message",
    "result_message",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# MCP 2026-07-28
HEADER_MISMATCH = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022

RequestId = str | int


class RpcError(Exception):
    """A JSON-RPC error: code, a message for the client, optional data. Plain data."""

    def __init__(
        self, code: int, message: str, data: Any = None, *, request_id: RequestId | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        # The id of the message that failed, when it had a usable one (for the error's "id").
        self.request_id = request_id

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A client's answer to a server request (sampling, elicitation): its result or error."""

    id: RequestId | None
    result: Any = None
    error: Any = None


Message = Request | Notification | Response


def _valid_id(value: Any) -> bool:
    # bool is an int in Python, but never a valid JSON-RPC id.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def parse_message(value: Any) -> Message:
    """Turn one decoded JSON value into a message, or raise -32600 carrying the id if any."""
    if not isinstance(value, dict):
        raise RpcError(INVALID_REQUEST, "a JSON-RPC message must be an object")
    raw_id = value.get("id")
    rid = raw_id if _valid_id(raw_id) else None
    if value.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'the "jsonrpc" member must be "2.0"', request_id=rid)
    if "method" not in value:
        if "result" in value or "error" in value:
            return Response(rid, value.get("result"), value.get("error"))
        raise RpcError(INVALID_REQUEST, 'a request needs a "method"', request_id=rid)
    method = value["method"]
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, '"method" must be a non-empty string', request_id=rid)
    params = value.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, '"params" must be an object', request_id=rid)
    if "id" not in value:
        return Notification(method, params)
    if not _valid_id(raw_id):
        raise RpcError(INVALID_REQUEST, '"id" must be a string or an integer')
    return Request(raw_id, method, params)


def decode(body: bytes) -> Any:
    """Parse a body into a JSON value; -32700 on anything that is not strict JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # Covers invalid UTF-8, NaN/Infinity (not JSON), and nesting beyond orjson's limit.
        raise RpcError(PARSE_ERROR, "the body is not valid JSON") from None


def encode(message: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    return orjson.dumps(message)


def result_message(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_message(request_id: RequestId | None, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_dict()}
