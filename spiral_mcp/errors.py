"""Named failures of the service, as plain data.

A :class:`ServiceError` carries one of the envelope codes of DESIGN.md; the tool registry turns it
into an ``isError`` result and the HTTP layer into a JSON body. Nothing here knows about either.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["ErrorCode", "ServiceError"]


class ErrorCode(enum.StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    QUERY_TIMEOUT = "QUERY_TIMEOUT"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    IDEMPOTENCY_IN_PROGRESS = "IDEMPOTENCY_IN_PROGRESS"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class ServiceError(Exception):
    """A failure with a name, a message meant for the caller, and optional details."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: list[Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": str(self.code),
            "message": self.message,
            "details": self.details,
            "retry_after": self.retry_after,
        }
