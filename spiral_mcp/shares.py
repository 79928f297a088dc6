"""Shares of slow work: how many calls of each slow kind one tenant may run at once.

Rate limits (``ratelimit.py``) bound how often a tenant calls, not how long its calls hold what
they hold. An explorer query holds one of the explorer pool's connections for up to
EXPLORER_TIMEOUT_S, a report template one of the runtime pool's for up to DB_STATEMENT_TIMEOUT, an
on-demand sync a database connection of its own for as long as its source takes. Twelve slow
queries well inside a rate limit took the whole explorer pool, and every other tenant's query
waited for a connection until it failed. A share caps what one tenant holds at once, so the rest
is there for everyone else. A call over its tenant's share is refused at once (the registry
answers RATE_LIMITED with ``retry_after``), never queued: a refused call holds nothing.

Counted in this process, on purpose. What a share protects, the pools, belongs to the process
(each has its own), so a count per process is exactly what keeps each pool fair; it costs no round
trip and cannot leak, since a process that dies takes its counts with it. A count kept in Redis
would need a lease renewed for as long as a call runs (a sync: hours), and a crashed process's
slots would stay taken until their leases ran out. Across N processes a tenant holds at most N
shares, as the N pools together hold at most N pools' worth of connections: the database's own
connection limit is sized for that already.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from types import TracebackType

from .config import Settings

__all__ = ["Share", "ShareExhausted", "Shares"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Share:
    """The limits of one kind of slow work in one process."""

    what: str                 # how a refusal names the calls, e.g. "explorer calls"
    per_tenant: int           # one tenant's calls at once
    total: int | None = None  # every tenant's together; for work no pool bounds (a sync's own
    #                           connection), None where a pool does
    retry_after: float = 1.0  # the wait a refusal suggests

    def __post_init__(self) -> None:
        if self.per_tenant < 1 or (self.total is not None and self.total < 1):
            raise ValueError(f"a share of {self.what} must allow at least one call")


class ShareExhausted(Exception):
    """The tenant (or, for a kind with a total, the process) runs as many calls as it may."""

    def __init__(self, message: str, *, kind: str, limit: int, retry_after: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.limit = limit
        self.retry_after = retry_after


class _Slot:
    """One running call's place in its share; given back when its block ends, however."""

    __slots__ = ("_key", "_returned", "_shares")

    def __init__(self, shares: Shares, key: tuple[str, uuid.UUID]) -> None:
        self._shares = shares
        self._key = key
        self._returned = False

    def __enter__(self) -> None:
        if self._returned:
            raise RuntimeError("cannot enter the slot; it was already given back")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._returned:
            raise RuntimeError("cannot give the slot back; it was already given back")
        self._returned = True
        self._shares._give_back(self._key)


class Shares:
    """The shares of every slow kind of work, and the calls each tenant runs in them now."""

    def __init__(self, shares: Mapping[str, Share]) -> None:
        self._shares = dict(shares)
        # Only tenants running something have an entry, so idle tenants take no memory.
        self._running: dict[tuple[str, uuid.UUID], int] = {}
        self._totals = dict.fromkeys(self._shares, 0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Shares:
        """The shares a server process keeps: explorer tools (the explorer pool), report
        templates (the runtime pool), on-demand syncs (connections of their own, so also a
        total)."""
        return cls({
            "explorer": Share(what="explorer calls", per_tenant=settings.explorer_share),
            "report": Share(what="report calls", per_tenant=settings.report_share),
            # A sync takes minutes where a query takes seconds: suggest a longer wait.
            "sync": Share(what="source syncs", per_tenant=settings.sync_share,
                          total=settings.sync_calls, retry_after=5.0),
        })

    def __contains__(self, kind: object) -> bool:
        return kind in self._shares

    def running(self, kind: str, tenant_id: uuid.UUID) -> int:
        """How many calls of ``kind`` the tenant runs now."""
        return self._running.get((kind, tenant_id), 0)

    def take(self, kind: str, tenant_id: uuid.UUID) -> _Slot:
        """A place for one call of ``kind`` (``with`` it around the call), or
        :class:`ShareExhausted` at once. No await: the check and the count are one step, so
        exact within the process."""
        share = self._shares[kind]
        key = (kind, tenant_id)
        running = self._running.get(key, 0)
        if running >= share.per_tenant:
            raise ShareExhausted(
                f"this tenant already runs {running} {share.what} at once, the most it may on "
                f"this server; retry when one has ended (in about {share.retry_after:g} s)",
                kind=kind, limit=share.per_tenant, retry_after=share.retry_after)
        if share.total is not None and self._totals[kind] >= share.total:
            raise ShareExhausted(
                f"this server already runs {self._totals[kind]} {share.what} at once, the most "
                f"it may; retry when one has ended (in about {share.retry_after:g} s)",
                kind=kind, limit=share.total, retry_after=share.retry_after)
        self._running[key] = running + 1
        self._totals[kind] += 1
        return _Slot(self, key)

    def _give_back(self, key: tuple[str, uuid.UUID]) -> None:
        left = self._running[key] - 1
        if left:
            self._running[key] = left
        else:
            del self._running[key]
        self._totals[key[0]] -= 1
