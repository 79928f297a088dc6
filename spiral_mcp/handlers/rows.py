"""Database rows to JSON-ready dicts: timestamps as ISO 8601 text, decimals as numbers."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["jsonable", "row_dict", "row_dicts"]


# Most values of a row are these, and JSON takes them as they are: one lookup answers for them
# instead of the isinstance chain below (a row's worth of chains cost more than its query).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def row_dict(row: Mapping[str, Any], *, drop: Iterable[str] = ()) -> dict[str, Any]:
    skip = set(drop)
    # The plain test inline as well: a call of jsonable per plain value cost a third of the row.
    return {k: v if type(v) in _PLAIN else jsonable(v) for k, v in row.items() if k not in skip}


def row_dicts(
    rows: Iterable[Mapping[str, Any]], *, drop: Iterable[str] = ()
) -> list[dict[str, Any]]:
    return [row_dict(r, drop=drop) for r in rows]
