"""Shutdown's clock: SHUTDOWN_TIMEOUT for the calls in flight, then a bounded wind-down.

SIGTERM (aiohttp's on_shutdown) starts the grace period: calls in flight run on, sessions take no
new ones. At its end the calls still running are cut: each is answered (CONNECTION_ERROR, the
server is shutting down) and audited. The cleanup after that (cut calls finishing their rollback,
the audit queue written, pools closed) shares :data:`WIND_DOWN_SECONDS`, each step within what is
left of it, so the process is gone within SHUTDOWN_TIMEOUT + WIND_DOWN_SECONDS of the signal; a
supervisor's stop timeout (docker-compose's ``stop_grace_period``) must be longer than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["WIND_DOWN_SECONDS", "ShutdownClock"]

WIND_DOWN_SECONDS = 5.0
# The least a step of the wind-down is given, even once its time is spent: a moment to try.
_MOMENT = 0.05


class ShutdownClock:
    """When in-flight calls are cut, and how long each step of the wind-down may take."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._cut: asyncio.TimerHandle | None = None
        self._wind_down_ends: float | None = None

    def begin(self, cut: Callable[[], object]) -> None:
        """Shutdown has begun: ``cut`` the calls still running when the grace period ends."""
        if self._cut is None:
            self._cut = asyncio.get_running_loop().call_later(self.grace, cut)

    def wind_down(self) -> None:
        """The cleanup begins (the calls have ended or were cut): its time starts now."""
        if self._cut is not None:
            self._cut.cancel()
        if self._wind_down_ends is None:
            self._wind_down_ends = asyncio.get_running_loop().time() + WIND_DOWN_SECONDS

    def left(self, most: float) -> float:
        """Seconds a step of the wind-down may take: at most ``most``, and no more than what is
        left of the wind-down."""
        if self._wind_down_ends is None:
            return most
        return max(min(most, self._wind_down_ends - asyncio.get_running_loop().time()), _MOMENT)
