"""Decoding explorer results: every value PostgreSQL sends arrives, even one Python cannot hold.

Each row comes as one record (see ``runner``), which asyncpg decodes in one go: a value Python
cannot hold (a date after year 9999, a JSON number beyond a double) would fail the whole batch and
name no column. On explorer connections such a value decodes to :class:`Unreadable` instead, in
its place, and the result shaper names its column. Values asyncpg's own decoders get wrong or
refuse, though Python can say them, come right: infinite dates and times as PostgreSQL writes
them, the time 24:00:00, intervals of millions of years.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import asyncpg
import orjson

from ..db import init_connection

__all__ = ["Unreadable", "init_explorer_connection"]


@dataclasses.dataclass(frozen=True, slots=True)
class Unreadable:
    """In place of a value PostgreSQL holds but the explorer cannot return; ``what`` it is."""

    what: str


_OUT_OF_RANGE = Unreadable("a date or time outside the years 1-9999")
_EPOCH_DATE = dt.date(2000, 1, 1)  # PostgreSQL counts days and microseconds from here
_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# PostgreSQL's infinities, as the server writes them in text.
_DATE_INFINITIES = {2**31 - 1: "infinity", -(2**31): "-infinity"}
_TIME_INFINITIES = {2**63 - 1: "infinity", -(2**63): "-infinity"}
_JSONB_VERSION = 1
_DAY = 86_400_000_000


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:  # a number beyond a double, nesting over 1024 deep
        return Unreadable(f"a JSON value ({exc.msg})")


def _jsonb(data: bytes) -> Any:
    if data[0] != _JSONB_VERSION:
        return Unreadable(f"jsonb in an unknown binary format (version {data[0]})")
    return _json(memoryview(data)[1:])


def _date(value: tuple[int]) -> Any:
    (days,) = value
    if days in _DATE_INFINITIES:
        return _DATE_INFINITIES[days]
    try:
        return _EPOCH_DATE + dt.timedelta(days=days)
    except OverflowError:
        return _OUT_OF_RANGE


def _timestamp(epoch: dt.datetime) -> Any:
    def decode(value: tuple[int]) -> Any:
        (microseconds,) = value
        if microseconds in _TIME_INFINITIES:
            return _TIME_INFINITIES[microseconds]
        try:
            return epoch + dt.timedelta(microseconds=microseconds)
        except OverflowError:
            return _OUT_OF_RANGE
    return decode


def _clock(microseconds: int, tz: dt.timezone | None) -> Any:
    if microseconds == _DAY:  # PostgreSQL's 24:00:00, the end of a day; Python stops at 23:59
        return "24:00:00" + dt.time(tzinfo=tz).isoformat()[8:]
    seconds, micro = divmod(microseconds, 1_000_000)
    minutes, second = divmod(seconds, 60)
    return dt.time(*divmod(minutes, 60), second, micro, tzinfo=tz)


def _time(value: tuple[int]) -> Any:
    return _clock(value[0], None)


def _timetz(value: tuple[int, int]) -> Any:
    microseconds, west = value  # the offset in seconds west of UTC
    return _clock(microseconds, dt.timezone(dt.timedelta(seconds=-west)))


def _interval(value: tuple[int, int, int]) -> float:
    # The seconds asyncpg's own decoder means (a year of 365 days, a month of 30), as the result
    # gives them, without its int32 arithmetic that wraps around past some 5.8 million years,
    # or timedelta's limit of 2.7 million.
    months, days, microseconds = value
    years, months = divmod(months, 12) if months >= 0 else (-(-months // 12), -(-months % 12))
    return ((years * 365 + months * 30 + days) * 86_400_000_000 + microseconds) / 1_000_000


def _never_sent(_value: Any) -> Any:
    raise TypeError("the explorer sends no parameters of this type")


_DECODERS: tuple[tuple[str, str, Any], ...] = (
    ("json", "binary", _json),
    ("jsonb", "binary", _jsonb),
    ("date", "tuple", _date),
    ("timestamp", "tuple", _timestamp(_EPOCH)),
    ("timestamptz", "tuple", _timestamp(_EPOCH_UTC)),
    ("time", "tuple", _time),
    ("timetz", "tuple", _timetz),
    ("interval", "tuple", _interval),
)


async def init_explorer_connection(conn: asyncpg.Connection) -> None:
    """Set up an explorer connection: the runtime's codecs, then these decoders over them."""
    await init_connection(conn)
    for name, format_, decoder in _DECODERS:
        await conn.set_type_codec(name, schema="pg_catalog", encoder=_never_sent,
                                  decoder=decoder, format=format_)
