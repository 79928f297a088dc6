"""Query results as JSON: column names and types, rows as arrays, capped by rows and bytes."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import ipaddress
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

__all__ = ["Shaped", "column_type", "json_value", "shape_rows"]


def column_type(pg_type: Any) -> str:
    """A type as an agent writes it: ``text``, ``int8``, ``text[]``."""
    name = pg_type.name
    if pg_type.kind == "array" and name.startswith("_"):
        return f"{name[1:]}[]"
    return name


def json_value(value: Any) -> Any:
    """One value of a row as JSON: numbers stay numbers, times become ISO 8601 text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) \
            else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, asyncpg.Record):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Shaped:
    rows: list[list[Any]]
    truncated: bool
    truncated_by: str | None  # "max_rows", "max_bytes" or None


def shape_rows(records: Sequence[asyncpg.Record], *, max_rows: int, max_bytes: int) -> Shaped:
    """At most ``max_rows`` rows (one more was fetched to tell whether there were more) whose JSON
    stays within ``max_bytes``."""
    rows: list[list[Any]] = []
    size = 0
    for record in records[:max_rows]:
        row = [json_value(v) for v in record.values()]
        size += len(orjson.dumps(row))
        if size > max_bytes:
            return Shaped(rows, True, "max_bytes")
        rows.append(row)
    if len(records) > max_rows:
        return Shaped(rows, True, "max_rows")
    return Shaped(rows, False, None)
