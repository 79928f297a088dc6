"""Query results as JSON: column names and types, rows as arrays, capped by rows and bytes."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import ipaddress
import math
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from .codecs import Unreadable

__all__ = ["Shaper", "UnreadableValue", "column_type", "json_value"]


class UnreadableValue(ValueError):
    """A row holds a value the explorer cannot return (see ``codecs``): ``what`` it is, and
    the index of the ``column`` it is in (inside a record or array there)."""

    def __init__(self, what: str, column: int = -1) -> None:
        super().__init__(what)
        self.what = what
        self.column = column


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
        # A numeric beyond a double (1e400) as its text: as a float it would be infinite, and
        # infinity is no JSON number (it would be written as null).
        number = float(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Unreadable):
        raise UnreadableValue(value.what)
    if isinstance(value, asyncpg.Record):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)


class Shaper:
    """Rows taken one at a time as JSON arrays, until ``max_rows`` of them or ``max_bytes`` of
    JSON: the caller fetches in batches and stops as soon as ``full``."""

    def __init__(self, *, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows: list[list[Any]] = []
        self.size = 0
        self.truncated_by: str | None = None  # "max_rows", "max_bytes" or None

    @property
    def full(self) -> bool:
        return self.truncated_by is not None

    def add(self, values: Sequence[Any] | None) -> None:
        """One more row; None stands for a row the server found too large to send."""
        if self.full:
            return
        if len(self.rows) == self.max_rows:
            self.truncated_by = "max_rows"  # one more row than asked for: there were more
            return
        row = None if values is None else self._row(values)
        size = self.max_bytes + 1 if row is None else len(orjson.dumps(row))
        if self.size + size > self.max_bytes:
            self.truncated_by = "max_bytes"
            return
        self.size += size
        self.rows.append(row)

    @staticmethod
    def _row(values: Sequence[Any]) -> list[Any]:
        row = []
        for column, value in enumerate(values):
            try:
                row.append(json_value(value))
            except UnreadableValue as exc:
                raise UnreadableValue(exc.what, column) from None
        return row

    def batch_size(self) -> int:
        """How many rows to fetch next: what may still fit, judged by the rows so far (at most
        256, so one batch of rows near the size limit stays a few megabytes)."""
        left = self.max_rows + 1 - len(self.rows)
        if not self.rows:
            return min(left, 16)
        average = max(self.size // len(self.rows), 1)
        return max(1, min(left, 256, (self.max_bytes - self.size) // average + 1))
