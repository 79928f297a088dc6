"""The admin API's answers: the product's envelope (DESIGN.md) as JSON, with the HTTP status each
error code stands for.

success: ``{"success": true, "data": ..., "tenant_id": "<uuid>" | null, "timing_ms": 1.2}``
error:   ``{"success": false, "error": {"code", "message", "details", "retry_after"}}``
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from ..errors import ErrorCode, ServiceError

__all__ = ["STATUS", "error_response", "service_error_response", "success_response"]

# The HTTP status of each envelope code; the 401 codes of authentication (INVALID_TOKEN,
# UNAUTHENTICATED) and INVALID_API_KEY are not ErrorCodes and carry their status themselves.
STATUS: dict[str, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.IDEMPOTENCY_MISMATCH: 409,
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.CONNECTION_ERROR: 503,
    ErrorCode.QUERY_TIMEOUT: 504,
}


# A tenant's data, a new key's secret, or text the caller put in the path: no cache keeps an
# answer, and no browser reads one as anything but JSON.
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _json(body: dict[str, Any], *, status: int, headers: dict[str, str] | None) -> web.Response:
    # orjson writes datetimes as ISO 8601; default=str: asyncpg's own UUID type (not a
    # uuid.UUID) as its canonical text, as db.py encodes values for jsonb.
    return web.Response(body=orjson.dumps(body, default=str), status=status,
                        content_type="application/json", headers={**_HEADERS, **(headers or {})})


def success_response(data: Any, *, tenant_id: uuid.UUID | None, started: float,
                     status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``data`` in the success envelope; ``started`` is the call's ``time.perf_counter()``."""
    return _json({
        "success": True,
        "data": data,
        "tenant_id": None if tenant_id is None else str(tenant_id),
        "timing_ms": round((time.perf_counter() - started) * 1000, 2),
    }, status=status, headers=headers)


def error_response(status: int, code: str, message: str, *, details: list[Any] | None = None,
                   retry_after: float | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """An error envelope; a ``retry_after`` is also said in a Retry-After header."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return _json({"success": False, "error": {
        "code": code, "message": message, "details": details or [], "retry_after": retry_after,
    }}, status=status, headers=headers)


def service_error_response(exc: ServiceError) -> web.Response:
    """A ServiceError in the error envelope, at its code's status."""
    return error_response(STATUS.get(exc.code, 500), str(exc.code), exc.message,
                          details=exc.details, retry_after=exc.retry_after)
