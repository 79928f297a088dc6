"""Ids a tenant can see count only that tenant's rows (migration 0011_tenant_ids).

Work items, their moves, comments and links are numbered by the tenant's 'work' counter, audit
rows by its 'audit' counter: rows of ``tenant_counters``, under the tenant policies. An INSERT that
names no id gets the tenant's next from a trigger; a bulk insert takes one block for all its rows
here, so it costs one round trip and one update of the counter however many rows it adds.

A taken counter stays locked until the transaction ends: one tenant's writers that add rows queue
there (and never share an id), other tenants never meet them. Lock order, which keeps the counters
out of deadlocks: project rows, then the 'work' counter, then item, comment and link rows; the
'audit' counter last, just before commit. So a write takes its work ids before it locks an item.
"""

from __future__ import annotations

import uuid

import asyncpg

from .queries import Queries

__all__ = ["take_work_ids"]


async def take_work_ids(conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
                        counts: tuple[int, ...]) -> tuple[list[int], ...]:
    """One block of the tenant's work ids, split into runs of ``counts`` ids (the rows of each
    bulk insert to come, in order). A count of 0 still takes the counter: see the lock order."""
    first = await queries.take_work_ids(conn, tenant_id=tenant_id, count=sum(counts))
    runs = []
    for count in counts:
        runs.append(list(range(first, first + count)))
        first += count
    return tuple(runs)
