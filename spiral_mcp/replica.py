"""The hot standby that serves heavy reads (REPLICA_DATABASE_URL), and whether it may.

:class:`Replica` holds the runtime role's pool on the standby and checks it in the background,
every few seconds, never per call: reachable, still a standby, and how far behind the primary.
Reads that may be a little stale (``Database.tenant(..., lag_ok=True)``, and the explorer) go to
it while it is ``ok``; otherwise to the primary, each such call counted as a fallback. When the
standby answers again and has caught up, reads go back to it by themselves.

The lag is measured in the log, not in time since the last replayed transaction: an idle primary
makes ``now() - pg_last_xact_replay_timestamp()`` grow though nothing is missing. Each check
notes the primary's current log position with the time it was first seen; the lag is how long
the oldest position the standby has not replayed yet has existed, and 0 when it has replayed
everything the primary had at the last check.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Literal

from .db import Database
from .errors import ServiceError

__all__ = ["Replica", "ReplicaState"]

log = logging.getLogger(__name__)

State = Literal["ok", "lagging", "unreachable"]


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaState:
    """The last check's finding, as /ready shows it."""

    state: State
    lag_seconds: float | None
    error: str | None = None

    @property
    def serving(self) -> Literal["replica", "primary"]:
        return "replica" if self.state == "ok" else "primary"


class Replica:
    """The standby's runtime pool (``database``) and its state; ``run_forever`` checks it."""

    def __init__(self, primary: Database, database: Database, *, max_lag: float,
                 check_timeout: float,
                 on_fallback: Callable[[str], None] = lambda reason: None) -> None:
        self.primary = primary
        self.database = database
        self.max_lag = max_lag
        self._check_timeout = check_timeout
        self._on_fallback = on_fallback
        # Until the first check answers, reads stay on the primary.
        self.current = ReplicaState("unreachable", None, "not checked yet")
        # (loop time first seen, log position) of the primary, oldest first, each position
        # higher than the one before; those the standby has replayed are dropped.
        self._positions: collections.deque[tuple[float, int]] = collections.deque()

    @property
    def serving(self) -> bool:
        """Whether reads that may be stale go to the standby now."""
        return self.current.state == "ok"

    def fell_back(self, reason: str | None = None) -> None:
        """A read that could have gone to the standby went to the primary (counted)."""
        self._on_fallback(reason or self.current.state)

    def failed(self, error: BaseException) -> None:
        """A call could not reach the standby: stop sending reads there until a check finds it
        back, rather than have each call try and wait."""
        self.current = ReplicaState("unreachable", None, _describe(error))
        self.fell_back("unreachable")

    def report(self) -> dict[str, object]:
        current = self.current
        report: dict[str, object] = {
            "state": current.state,
            "lag_seconds": None if current.lag_seconds is None else round(current.lag_seconds, 3),
            "serving": current.serving,
        }
        if current.error:
            report["error"] = current.error
        return report

    async def check(self) -> ReplicaState:
        """One check: the primary's position first, then the standby's."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._check_timeout):
                async with self.primary.connection() as conn:
                    position = await self.primary.queries.replica_primary_lsn(conn)
        except (ServiceError, TimeoutError, OSError):
            return self.current  # the primary's own trouble; /ready says so elsewhere
        now = loop.time()
        if not self._positions or position > self._positions[-1][1]:
            self._positions.append((now, int(position)))
        try:
            async with asyncio.timeout(self._check_timeout):
                async with self.database.connection() as conn:
                    row = await self.database.queries.replica_standby_position(conn)
        except (ServiceError, TimeoutError, OSError) as exc:
            self.current = ReplicaState("unreachable", None, _describe(exc))
            return self.current
        if not row["standby"] or row["replayed"] is None:
            # Promoted, or another server altogether: it no longer follows the primary.
            self.current = ReplicaState("unreachable", None,
                                        "the server is not a hot standby (promoted?)")
            return self.current
        replayed = int(row["replayed"])
        while self._positions and self._positions[0][1] <= replayed:
            self._positions.popleft()
        lag = now - self._positions[0][0] if self._positions else 0.0
        self.current = ReplicaState("ok" if lag <= self.max_lag else "lagging", lag)
        return self.current

    async def run_forever(self, interval: float) -> None:
        previous: State = "ok"  # so that a standby out of use at start-up is logged too
        while True:
            with contextlib.suppress(Exception):  # a check never ends the loop
                await self.check()
            if self.current.state != previous:
                log.warning("replica %s; heavy reads served by the %s", self.current.state,
                            self.current.serving,
                            extra={"lag_seconds": self.current.lag_seconds,
                                   "error": self.current.error})
                previous = self.current.state
            await asyncio.sleep(interval)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error)[:200] or type(error).__name__
