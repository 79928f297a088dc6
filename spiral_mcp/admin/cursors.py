"""Keyset cursors over (at, id), newest first: the admin API's opaque ``next_cursor``. The id
is a bigint (audit rows, runs) or a UUID (keys).

A cursor names the last row of a page (its time and id) and the filters of the listing that
gave it, so a cursor handed to a listing with other filters is refused instead of silently
paging something else. It is not signed: whatever a caller forges still runs under its own
tenant's row-level security, so a forged position reveals nothing; it is checked for shape so
that a damaged one gets a clear 400, not a driver error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from .times import invalid

__all__ = ["Position", "decode_cursor", "encode_cursor"]

# A row's place in (at, id) order.
Position = tuple[datetime, int | uuid.UUID]

_INT8 = range(-(2**63), 2**63)


def _fingerprint(scope: str, filters: Mapping[str, Any]) -> str:
    canonical = orjson.dumps({"scope": scope, **filters}, option=orjson.OPT_SORT_KEYS,
                             default=str)
    return hashlib.sha256(canonical).hexdigest()[:16]


def _damaged() -> Exception:
    return invalid("cursor", "cursor is not valid: pass next_cursor exactly as a page gave it, "
                             "or leave it out for the first page")


def encode_cursor(scope: str, filters: Mapping[str, Any], position: Position) -> str:
    """The cursor after ``position`` in the listing ``scope`` with these ``filters``."""
    at, row_id = position
    payload = {"f": _fingerprint(scope, filters), "at": at.isoformat(),
               "id": str(row_id) if isinstance(row_id, uuid.UUID) else row_id}
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_cursor(scope: str, filters: Mapping[str, Any], cursor: str, *,
                  uuid_ids: bool = False) -> Position:
    """The position ``cursor`` names (its id a UUID when ``uuid_ids``, else a bigint);
    VALIDATION_ERROR when it is damaged or belongs to another listing or other filters."""
    try:
        # validate: urlsafe_b64decode alone skips characters outside the alphabet, so a cursor
        # with some appended would still pass as the original.
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        payload = orjson.loads(raw)
        fingerprint, at, row_id = payload["f"], datetime.fromisoformat(payload["at"]), payload["id"]
        if uuid_ids:
            row_id = uuid.UUID(row_id)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error,
            orjson.JSONDecodeError):
        raise _damaged() from None
    if at.tzinfo is None or not (uuid_ids or (type(row_id) is int and row_id in _INT8)):
        raise _damaged()
    if fingerprint != _fingerprint(scope, filters):
        names = ", ".join(sorted(filters))
        raise invalid("cursor", f"cursor belongs to a listing with other filters: pass the same "
                                f"{names} as the call that gave it")
    return at.astimezone(UTC), row_id
