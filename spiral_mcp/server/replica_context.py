"""The hot standby at start-up and shutdown (REPLICA_DATABASE_URL): a cleanup context.

Two pools on the standby, both empty until used (a standby that is down at start-up delays
nothing: its reads go to the primary until a check finds it): the runtime role's, for the report
templates, the lag checks, the explorer's bindings and ending its abandoned backends there; and
the explorer role's. The background check (``Replica.run_forever``) decides where reads go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from ..db import Database, close_pool, create_pool, keep_session
from ..explorer import create_explorer_pool
from ..explorer.standby import Standby
from ..replica import Replica
from ..roles import EXPLORER_ROLE, login_at, url_for_role
from .keys import DATABASE, EXPLORER, METRICS, REPLICA, SETTINGS, SHUTDOWN

__all__ = ["replica_context"]


def replica_context(explorer_login: str | None):
    """``explorer_login``: the explorer role's URL on the primary, when one was given; the same
    login serves on the standby unless REPLICA_EXPLORER_DATABASE_URL names another."""

    async def replica(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        url = settings.replica_database_url
        if url is None:
            yield
            return
        primary, metrics = app[DATABASE], app[METRICS]
        pool = await create_pool(url, min_size=0, max_size=settings.db_pool_max,
                                 connect_timeout=settings.db_connect_timeout,
                                 statement_timeout=settings.db_statement_timeout,
                                 reset=keep_session)
        standby = Database(pool, primary.queries, acquire_timeout=settings.db_connect_timeout,
                           keep_idle=True)
        state = app[REPLICA] = Replica(
            primary, standby, max_lag=settings.replica_max_lag,
            check_timeout=settings.db_connect_timeout,
            on_fallback=lambda reason: metrics.replica_fallbacks.labels(reason).inc())
        metrics.watch_replica(lambda: state.current.lag_seconds, lambda: state.serving)
        explorer = app.get(EXPLORER)
        explorer_pool = None
        if explorer is not None:
            explorer_url = settings.replica_explorer_database_url or (
                login_at(explorer_login, url) if explorer_login
                else url_for_role(url, EXPLORER_ROLE))
            explorer_pool = await create_explorer_pool(
                explorer_url, min_size=0, max_size=settings.db_pool_max,
                connect_timeout=settings.db_connect_timeout,
                query_timeout=settings.explorer_timeout_s, queries=primary.queries)
            explorer.standby = Standby(
                Database(explorer_pool, primary.queries,
                         acquire_timeout=settings.db_connect_timeout), state)
        await state.check()  # before the first call: served by the standby from the start
        primary.replica = state
        task = asyncio.create_task(state.run_forever(settings.replica_check_interval),
                                   name="replica-check")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            primary.replica = None
            if explorer is not None:
                explorer.standby = None
                # Backends being ended on the standby need its runtime pool, closed below.
                await explorer.close()
            await standby.close()
            clock = app[SHUTDOWN]
            await close_pool(pool, grace=clock.left(1.0))
            if explorer_pool is not None:
                await close_pool(explorer_pool, grace=clock.left(1.0))

    return replica
