"""Usage of the tenant's tools over time, from its audit log: calls, errors, error rate and
duration percentiles per bucket (hour or day, cut in UTC) and per tool or per key.

The result is columnar: one axis of bucket starts (every bucket of the window, empty ones
too), and per series one list a figure, aligned with the axis. That is what the metrics
dashboard's charts draw, and what a script sums, without reshaping.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ..queries import Queries
from .times import invalid, parse_key_id, parse_window

__all__ = ["BUCKETS", "BY", "MAX_BUCKETS", "MAX_SERIES", "UsageWindow", "fold_series",
           "usage_report"]

# A bucket's length, and the window a request without since gets.
BUCKETS: dict[str, tuple[timedelta, timedelta]] = {
    "hour": (timedelta(hours=1), timedelta(hours=24)),
    "day": (timedelta(days=1), timedelta(days=30)),
}
# What a series is: one tool, or one key.
BY = ("tool", "key")
# Bounds the work of one request (the rows it aggregates) and the points of one chart.
MAX_BUCKETS = 400
# Series of one report: the busiest ones, the rest summed into one ("other keys"): keys minted
# and used in a loop must not grow the answer without end.
MAX_SERIES = 20
# Buckets are cut from here (the SQL's date_bin origin): at UTC hours and UTC midnights.
_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
_INSTANT = timedelta(microseconds=1)  # timestamptz's resolution
_FIGURES = ("calls", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms")


@dataclasses.dataclass(frozen=True, slots=True)
class UsageWindow:
    """[since, until) cut into buckets of one length; ``starts`` lists every bucket's start."""

    bucket: str
    since: datetime
    until: datetime

    @classmethod
    def parse(cls, *, since: str | None = None, until: str | None = None,
              bucket: str = "hour", now: datetime | None = None) -> UsageWindow:
        if bucket not in BUCKETS:
            raise invalid("bucket", f"bucket must be one of {', '.join(BUCKETS)}, "
                                    f"not {bucket[:40]!r}")
        stride, default_span = BUCKETS[bucket]
        start, end = parse_window(since, until)
        end = end or now or datetime.now(UTC)
        if start is None:
            # Whole buckets back from the one holding until's last instant (the current
            # bucket, in progress, when until is now): no chart starts on a partial bucket.
            start = _floor(end - _INSTANT, stride) - default_span + stride
        if start >= end:  # since given alone, after now
            raise invalid("since", f"since ({start.isoformat()}) must be before until "
                                   f"({end.isoformat()}; now when not given)")
        window = cls(bucket, start, end)
        if (count := len(window.starts)) > MAX_BUCKETS:
            raise invalid("until", f"the window from since to until holds {count} {bucket} "
                                   f"buckets, more than {MAX_BUCKETS}: narrow it"
                                   + (" or ask for bucket=day" if bucket == "hour" else ""))
        return window

    @property
    def stride(self) -> timedelta:
        return BUCKETS[self.bucket][0]

    @property
    def starts(self) -> list[datetime]:
        first = _floor(self.since, self.stride)
        count = -((first - self.until) // self.stride)  # ceil((until - first) / stride)
        return [first + i * self.stride for i in range(count)]


def _floor(moment: datetime, stride: timedelta) -> datetime:
    """The start of the bucket ``moment`` is in."""
    return _ORIGIN + (moment - _ORIGIN) // stride * stride


def _figures(calls: int, errors: int, percentiles: list[float | None] | None) -> dict[str, Any]:
    p50, p95, p99 = percentiles or (None, None, None)
    return {"calls": calls, "errors": errors,
            "error_rate": errors / calls if calls else None,
            "p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99)}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


_EMPTY = _figures(0, 0, None)


def _other(by: str, calls: list[int], errors: list[int], folded: int) -> dict[str, Any]:
    """The series summing ``folded`` quieter ones: calls and errors add up, percentiles do not
    (left empty)."""
    width = len(calls)
    return {"name": f"other {by}s", "tool": None, "key_id": None, "folded": folded,
            "calls": calls, "errors": errors,
            "error_rate": [e / c if c else None for c, e in zip(calls, errors, strict=True)],
            "p50_ms": [None] * width, "p95_ms": [None] * width, "p99_ms": [None] * width,
            "totals": _figures(sum(calls), sum(errors), None)}


def fold_series(series: list[dict[str, Any]], keep: int, by: str) -> list[dict[str, Any]]:
    """``series`` (busiest first), at most ``keep``: all past the first ``keep - 1`` summed
    into one."""
    if len(series) <= keep:
        return series
    rest = series[keep - 1:]
    width = len(rest[0]["calls"])
    calls = [sum(s["calls"][i] for s in rest) for i in range(width)]
    errors = [sum(s["errors"][i] for s in rest) for i in range(width)]
    folded = sum(s.get("folded", 1) for s in rest)
    return [*series[:keep - 1], _other(by, calls, errors, folded)]


async def usage_report(conn: asyncpg.Connection, queries: Queries, *, window: UsageWindow,
                       by: str = "tool", tool: str | None = None,
                       key_id: str | None = None) -> dict[str, Any]:
    """Usage in ``window`` per tool (``by="tool"``) or per key (``by="key"``), optionally of
    one tool or one key. Series come busiest first, at most MAX_SERIES: past the busiest
    MAX_SERIES - 1 the rest are summed into one ("other tools" / "other keys", its ``folded``
    saying how many). A key's series is named after the key ("no key" for calls made without
    one, e.g. by an OAuth user)."""
    if by not in BY:
        raise invalid("by", f"by must be one of {', '.join(BY)}, not {by[:40]!r}")
    key = parse_key_id(key_id)
    await queries.audit_plan_per_call(conn)
    rows = await queries.usage_buckets(
        conn, stride=window.stride, since=window.since, until=window.until, tool=tool,
        key_id=key, by_key=by == "key")
    starts = window.starts
    index = {start: i for i, start in enumerate(starts)}
    totals = _EMPTY
    # First the whole window of each series, to keep the busiest (the SQL sends those rows
    # first); only those get lists of their own, the others add into one.
    whole: dict[tuple[str | None, uuid.UUID | None], dict[str, Any]] = {}
    for row in rows:
        if row["all_series"]:
            totals = _figures(row["calls"], row["errors"], row["percentiles"])
        elif row["whole_window"]:
            whole[(row["tool"], row["key_id"])] = _figures(row["calls"], row["errors"],
                                                           row["percentiles"])
    ranked = sorted(whole, key=lambda ident: (-whole[ident]["calls"], str(ident)))
    kept = ranked if len(ranked) <= MAX_SERIES else ranked[:MAX_SERIES - 1]
    series = {ident: {"tool": ident[0], "key_id": ident[1], "totals": whole[ident],
                      **{name: [_EMPTY[name]] * len(starts) for name in _FIGURES}}
              for ident in kept}
    other_calls, other_errors = [0] * len(starts), [0] * len(starts)
    for row in rows:
        if row["whole_window"]:
            continue
        at = index[row["bucket"]]
        one = series.get((row["tool"], row["key_id"]))
        if one is None:
            other_calls[at] += row["calls"]
            other_errors[at] += row["errors"]
            continue
        figures = _figures(row["calls"], row["errors"], row["percentiles"])
        for name in _FIGURES:
            one[name][at] = figures[name]
    if by == "key":
        await _name_keys(conn, queries, list(series.values()))
    else:
        for one in series.values():
            one["name"] = one["tool"]
    listed = sorted(series.values(), key=lambda s: (-s["totals"]["calls"], s["name"]))
    if len(kept) < len(ranked):
        listed.append(_other(by, other_calls, other_errors, len(ranked) - len(kept)))
    return {
        "since": window.since, "until": window.until, "bucket": window.bucket, "by": by,
        "buckets": starts, "series": listed, "totals": totals,
    }


async def _name_keys(conn: asyncpg.Connection, queries: Queries,
                     series: list[dict[str, Any]]) -> None:
    ids = [s["key_id"] for s in series if s["key_id"] is not None]
    names = {r["key_id"]: r["name"] for r in await queries.usage_key_names(conn, key_ids=ids)}
    for one in series:
        one["name"] = ("no key" if one["key_id"] is None
                       else names.get(one["key_id"], str(one["key_id"])))
