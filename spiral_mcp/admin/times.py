"""Times and windows of the admin queries (audit log, usage): RFC 3339 in, aware UTC out.

Each refusal is a VALIDATION_ERROR naming the parameter and what to send instead.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from ..errors import ErrorCode, ServiceError

__all__ = ["invalid", "parse_key_id", "parse_time", "parse_window"]

# RFC 3339's date-time: a full date, a time, an offset (Z or +hh:mm). fromisoformat alone would
# also take a bare date, a week date or a time without an offset (read as local time).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})")
# The times a window may name. Near datetime's own ends (years 1 and 9999) an offset or a
# bucket's arithmetic leaves the range Python can hold: refused here, named, never a 500.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def invalid(name: str, message: str) -> ServiceError:
    """A refused query parameter ``name``: ``message`` is the one line the caller reads."""
    return ServiceError(ErrorCode.VALIDATION_ERROR, message,
                        details=[{"path": f"/{name}", "message": message}])


def parse_time(name: str, raw: str) -> datetime:
    """``raw`` (RFC 3339, with an offset) as an aware UTC datetime."""
    text = raw.strip()
    if _RFC3339.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
        except OverflowError:  # the offset takes it past year 1 or 9999
            moment = _LATEST
        except ValueError:
            moment = None  # a month 13, a day 32: said below like any other
        if moment is not None:
            if _EARLIEST <= moment < _LATEST:
                return moment
            raise invalid(name, f"{name} must be between {_EARLIEST.year} and "
                                f"{_LATEST.year} (UTC), not {raw[:40]!r}")
    hint = ""
    if re.search(r"\d \d{2}:\d{2}$", text):
        # A "+01:00" offset sent unescaped in a URL arrives as " 01:00".
        hint = " (in a URL, write the + of an offset as %2B)"
    raise invalid(name, f"{name} must be an RFC 3339 time with an offset, such as "
                        f"2026-12-07T06:00:00Z, not {raw[:40]!r}{hint}")


def parse_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """The optional ``since`` (inclusive) and ``until`` (exclusive) bounds, in order."""
    start = parse_time("since", since) if since is not None else None
    end = parse_time("until", until) if until is not None else None
    if start is not None and end is not None and start >= end:
        raise invalid("until", f"until ({end.isoformat()}) must be after since "
                               f"({start.isoformat()})")
    return start, end


def parse_key_id(raw: str | None) -> uuid.UUID | None:
    """The ``key_id`` filter: a key's id (a UUID) or nothing."""
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise invalid("key_id", f"key_id must be a key's id (a UUID), not {raw[:40]!r}") from None
