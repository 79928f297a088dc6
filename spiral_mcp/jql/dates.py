"""Date values of JQL: absolute dates, relative offsets and the date functions, resolved in UTC
against a fixed ``now`` (so one query gives one answer, and tests are exact)."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from spiral_mcp.jql.errors import JqlError
from spiral_mcp.jql.nodes import Func, Literal

__all__ = ["DateValue", "day_of", "resolve_date"]

_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})", re.ASCII)
_DATETIME = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?", re.ASCII
)
# "-7d", "+1d", "4w 2d", "-30m". m is minutes and M months, as in Jira; d, w, h, y in any case.
_RELATIVE = re.compile(r"([+-]?)\s*((?:\d{1,6}\s*[yYMwWdDhHm]\s*)+)", re.ASCII)
_RELATIVE_PART = re.compile(r"(\d{1,6})\s*([yYMwWdDhHm])", re.ASCII)
# A function offset may omit the unit, which then is the function's own period.
_OFFSET = re.compile(r"([+-]?)\s*(\d{1,6})", re.ASCII)
_MICROSECOND = timedelta(microseconds=1)
_EXPECTED = ('a date: 2026-01-31, "2026-01-31 14:00", a relative date like -7d, -2w, -4h, -30m '
             "or +1d, or a date function")


@dataclass(frozen=True)
class DateValue:
    """A resolved date: the instant ``start`` and, for a span written out (a day, a minute, a
    second), ``last``: its last microsecond, which ``=`` uses to mean "within". Inclusive, so the
    span of 9999-12-31 ends where datetime does instead of overflowing (timestamps have
    microseconds, so ``<= last`` is exactly "before the next span")."""

    start: datetime
    last: datetime | None = None


def day_of(value: DateValue) -> DateValue:
    """The whole UTC day holding ``value.start``: what a date means to a date-only field."""
    start = value.start.replace(hour=0, minute=0, second=0, microsecond=0)
    return DateValue(start, start.replace(hour=23, minute=59, second=59, microsecond=999999))


def _unit(raw: str) -> str:
    return raw if raw in ("M", "m") else raw.lower()


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        raise OverflowError
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _shift(moment: datetime, amount: int, unit: str) -> datetime:
    if unit == "y":
        return _add_months(moment, 12 * amount)
    if unit == "M":
        return _add_months(moment, amount)
    step = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1),
            "m": timedelta(minutes=1)}[unit]
    return moment + amount * step


def _relative(text: str, now: datetime) -> datetime | None:
    match = _RELATIVE.fullmatch(text.strip())
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    moment = now
    for amount, unit in _RELATIVE_PART.findall(match.group(2)):
        moment = _shift(moment, sign * int(amount), _unit(unit))
    return moment


def _absolute(text: str) -> DateValue | None:
    text = text.strip()
    if match := _DATE.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
        start = datetime(year, month, day, tzinfo=UTC)
        return day_of(DateValue(start))
    if match := _DATETIME.fullmatch(text):
        year, month, day, hour, minute = (int(g) for g in match.groups()[:5])
        seconds = match.group(6)
        start = datetime(year, month, day, hour, minute, int(seconds or 0), tzinfo=UTC)
        last = start.replace(microsecond=999999) if seconds else start.replace(
            second=59, microsecond=999999)
        return DateValue(start, last)
    return None


# Function -> (start or end, its own period: what an offset without a unit counts and what
# "end of" spans).
_FUNCTIONS = {
    "startOfDay": ("start", "d"), "startOfWeek": ("start", "w"),
    "startOfMonth": ("start", "M"), "startOfYear": ("start", "y"),
    "endOfDay": ("end", "d"), "endOfWeek": ("end", "w"),
    "endOfMonth": ("end", "M"), "endOfYear": ("end", "y"),
}


def _period_start(now: datetime, period: str) -> datetime:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "w":
        return day - timedelta(days=day.weekday())  # weeks start on Monday (ISO 8601)
    if period == "M":
        return day.replace(day=1)
    if period == "y":
        return day.replace(month=1, day=1)
    return day


def _function(func: Func, now: datetime) -> datetime:
    if func.name == "now":
        return now
    kind, period = _FUNCTIONS[func.name]
    amount, unit = 0, period
    if func.args:
        arg = func.args[0]
        text = arg.text.strip()
        if match := _OFFSET.fullmatch(text):
            amount = int(match.group(2)) * (-1 if match.group(1) == "-" else 1)
        elif (match := _RELATIVE.fullmatch(text)) and len(_RELATIVE_PART.findall(text)) == 1:
            number, raw_unit = _RELATIVE_PART.findall(text)[0]
            amount = int(number) * (-1 if match.group(1) == "-" else 1)
            unit = _unit(raw_unit)
        else:
            raise JqlError(arg.pos, arg.text, "an offset like -1, -1d, +2w, -3M or +4h")
    start = _period_start(now, period)
    if kind == "start":
        return _shift(start, amount, unit)
    # endOf: move whole periods first (so the end of next month is that month's last day),
    # otherwise shift the end itself.
    if unit == period:
        return _end_of(_shift(start, amount, period), period)
    return _shift(_end_of(start, period), amount, unit)


def _end_of(start: datetime, period: str) -> datetime:
    """The last microsecond of the period from ``start``: the next one's start, less 1 us. A
    period reaching past year 9999 ends where datetime does (the next start is out of range)."""
    try:
        return _shift(start, 1, period) - _MICROSECOND
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def resolve_date(value: Literal | Func, now: datetime) -> DateValue:
    """Resolve a date value against ``now`` (UTC), or raise :class:`JqlError` at its position."""
    try:
        if isinstance(value, Func):
            if value.name == "currentUser":
                raise JqlError(value.pos, f"{value.name}()", _EXPECTED)
            return DateValue(_function(value, now))
        if (absolute := _absolute(value.text)) is not None:
            return absolute
        if (moment := _relative(value.text, now)) is not None:
            return DateValue(moment)
    except (ValueError, OverflowError) as exc:  # 2026-02-30, year 99999, ...
        if isinstance(exc, JqlError):
            raise
        text = value.text if isinstance(value, Literal) else f"{value.name}()"
        raise JqlError(value.pos, text, _EXPECTED) from None
    raise JqlError(value.pos, value.text, _EXPECTED)
