"""The failures of admin actions, shared by the CLI (which prints them) and the admin API
(which answers VALIDATION_ERROR, or NOT_FOUND for :class:`AdminNotFound`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

__all__ = ["AdminError", "AdminNotFound", "rows_as_dicts"]


class AdminError(ValueError):
    """An admin request that cannot be carried out; the message says why."""


class AdminNotFound(AdminError):
    """The object an admin request names does not exist (or is another tenant's)."""


def rows_as_dicts(rows: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]
