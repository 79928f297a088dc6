"""Incremental, resumable sync of one source instance into one tenant's store.

Each page from the adapter is written in ONE transaction together with the instance's cursor (the
latest ``updated`` seen so far, but never later than shortly before the sync began: see
:data:`CURSOR_LAG`): a sync killed between pages resumes from the last committed page,
and re-reading the overlap changes nothing because every write is an upsert keyed on the source's
ids. Pages come oldest update first, so the cursor only ever moves past items already stored. An
item stored with the source's ``updated`` is not written again at all: a source moves it with every
change to the item, its comments and links included, so a re-sync costs one lookup per page.
A page's new rows take their ids in one block from the tenant's own counter
(:mod:`spiral_mcp.ids`), before the page locks any row.

Before the pages, each mirrored project's workflow is replaced by the source's (a workflow is not
paged, so it is read whole and written with the projects). Links ride with their items: a page
writes the links whose two ends are stored, and a link to an item not synced yet is written when
that item's page comes, since the source lists it on both ends.

One sync per instance at a time, whichever process runs it: :func:`instance_lock` is a PostgreSQL
session advisory lock keyed on the instance, shared by every server process, the background sync
and the CLI through the database; a session that dies releases it by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from ..changed_data import ITEM_DATA
from ..ids import take_work_ids
from ..queries import Queries
from .base import Adapter, Item, Link, Page, Workflow

__all__ = ["SyncBusy", "SyncError", "SyncProgress", "instance_lock", "lock_key", "sync_instance",
           "write_items"]


class SyncError(Exception):
    """The sync cannot proceed for a reason the operator can fix."""


class SyncBusy(Exception):
    """Another session is syncing this instance right now."""


# How far behind a sync's start its saved cursor stays. An item that changes while a sync reads
# may be read before its change and never again in that sync: Asana lists tasks in no order of
# modification, GitHub's repositories are read one after another, and Jira Cloud's search index
# lags its changes a little. So the next sync reads again from before this one began, and writes
# nothing of what it finds unchanged. The margin also covers a source's clock up to that far
# behind ours (its stamps of changes made during the sync would fall before our start).
CURSOR_LAG = timedelta(minutes=2)


def lock_key(instance_id: uuid.UUID) -> int:
    """The advisory-lock key of an instance: its id's first 64 bits (random in a v4 UUID)."""
    return int.from_bytes(instance_id.bytes[:8], "big", signed=True)


@asynccontextmanager
async def instance_lock(conn: asyncpg.Connection, queries: Queries,
                        instance_id: uuid.UUID) -> AsyncIterator[None]:
    """Hold the instance's sync lock on ``conn`` for the block, or raise :class:`SyncBusy`."""
    key = lock_key(instance_id)
    if not await queries.source_try_lock(conn, lock_key=key):
        raise SyncBusy(f"a sync of source {instance_id} is already running")
    try:
        yield
    finally:
        try:
            await queries.source_unlock(conn, lock_key=key)
        except BaseException:
            # Cancelled mid-statement, or the connection broke: a session lock must never go
            # back to a pool (nothing resets it there), so end the session, which releases it.
            conn.terminate()
            raise


@dataclasses.dataclass(slots=True)
class SyncProgress:
    pages: int = 0
    items: int = 0
    changed: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def items_per_second(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.items / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        return (f"pages {self.pages}, items {self.items} ({self.changed} new or changed), "
                f"{self.items_per_second:.0f} items/s")


async def _read_ahead(pages: AsyncGenerator[Page, None]) -> AsyncIterator[Page]:
    """``pages`` with the next one already asked for while the caller writes this one: a sync
    takes about as long as the slower of the source and the store rather than both together.
    Pages still arrive, and are written, in order."""
    upcoming: asyncio.Task[Page] = asyncio.ensure_future(anext(pages))
    try:
        while True:
            try:
                page = await upcoming
            except StopAsyncIteration:
                return
            upcoming = asyncio.ensure_future(anext(pages))
            yield page
    finally:
        # The caller stopped (done, failed or cancelled): a page read for nothing is dropped,
        # and its failure too, since the caller's own outcome is the one to report.
        upcoming.cancel()
        await asyncio.wait([upcoming])
        if not upcoming.cancelled():
            upcoming.exception()
        await pages.aclose()


def _cursor_of(raw: str | None) -> datetime | None:
    if not raw:
        return None
    value = orjson.loads(raw).get("updated")
    return datetime.fromisoformat(value) if value else None


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


async def _ensure_projects(
    conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID, instance_id: uuid.UUID,
    projects: dict[str, str],
) -> None:
    for source_ref, project_key in projects.items():
        await queries.source_ensure_project(
            conn, tenant_id=tenant_id, project_key=project_key, name=f"{source_ref} (mirrored)",
            instance_id=instance_id, source_ref=source_ref)
        owner = await queries.source_project_owner(conn, project_key=project_key)
        if owner["source_instance_id"] != instance_id:
            # Writing a source's items into a local project would mix two owners of one key space.
            raise SyncError(f"project {project_key} exists and is not mirrored from this source; "
                            "map the source project to another key")


async def _write_workflow(
    conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID, project_key: str,
    workflow: Workflow,
) -> None:
    """Replace the project's workflow (at first the default one its trigger added)."""
    if not workflow.statuses:
        return  # a source that names no status leaves the project's workflow as it is
    # The store keys statuses case-insensitively; the first spelling wins.
    by_name: dict[str, tuple[str, str]] = {}
    for name, category in workflow.statuses:
        by_name.setdefault(name.lower(), (name, category))
    statuses = list(by_name.values())
    names = [name for name, _ in statuses]
    await queries.source_prune_workflow_statuses(conn, project_key=project_key, statuses=names)
    await queries.source_clear_initial_status(conn, project_key=project_key)
    await queries.source_upsert_workflow_statuses(
        conn, tenant_id=tenant_id, project_key=project_key, statuses=names,
        categories=[category for _, category in statuses])
    # A move must join two statuses the project has (a dropped spelling has none).
    moves = [t for t in workflow.transitions if t[2] in names and t[3] in names]
    columns = {"transition_ids": [t[0] for t in moves], "names": [t[1] for t in moves],
               "from_statuses": [t[2] for t in moves], "to_statuses": [t[3] for t in moves]}
    await queries.source_prune_workflow_transitions(conn, project_key=project_key, **columns)
    await queries.source_insert_workflow_transitions(conn, tenant_id=tenant_id,
                                                     project_key=project_key, **columns)


def _link_triple(key: str, link: Link) -> tuple[str, str, str]:
    """(type, outward key, inward key) of a link the item ``key`` carries."""
    return ((link.link_type, key, link.other_key) if link.outward
            else (link.link_type, link.other_key, key))


async def _prune_links(conn: asyncpg.Connection, queries: Queries, *, source: str,
                       ids: dict[str, int], items: list[Item]) -> None:
    """Delete the links ``source`` holds on ``items`` that their own report no longer names.
    Only items the upsert wrote: an answer older than the stored item (a sync page racing a
    write-through) must not take links from the newer one."""
    if not items:
        return
    reported = [(ids[i.source_id], _link_triple(i.key, link)) for i in items for link in i.links]
    await queries.source_prune_links(
        conn, source=source, item_ids=[ids[i.source_id] for i in items],
        reporters=[item for item, _ in reported], link_types=[t for _, (t, _, _) in reported],
        outward_keys=[o for _, (_, o, _) in reported],
        inward_keys=[k for _, (_, _, k) in reported])


async def write_items(
    conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID, source: str,
    instance_id: uuid.UUID, items: list[Item], skip_unchanged: bool = True,
    prune_links: bool = True,
) -> int:
    """Upsert one page's new or changed items of the ``source`` (kind) instance ``instance_id``,
    their comments, transitions and links; return how many items changed. A write-through's
    answer passes ``skip_unchanged=False``: a source with one-second timestamps (GitHub) may
    answer a change with the ``updated`` already stored.

    The links ``source`` holds on an item it wrote and no longer reports for that item go, in the
    same transaction (local links stay); ``prune_links=False`` keeps them, for an answer that may
    not name every link's other end."""
    # One row per source id: ON CONFLICT cannot touch the same row twice in one statement.
    unique = list({item.source_id: item for item in items}.values())
    stored = {row["source_id"]: row for row in await queries.source_stored_items(
        conn, instance_id=instance_id, source_ids=[i.source_id for i in unique])}
    # Besides ``updated``, the key and the parent: Asana numbers its tasks here, so a task moved
    # between projects, or a subtask yielded again with its parent's key, keeps its time. And what
    # the instance's mappings make of it: a full sync after an override changed re-maps the items.
    todo = [i for i in unique if not skip_unchanged or (row := stored.get(i.source_id)) is None
            or (row["updated_at"], row["key"], row["parent_key"], row["status_category"],
                row["type"], row["priority"])
            != (i.updated, i.key, i.parent_key, i.status_category, i.type, i.priority)]
    if not todo:
        return 0
    # The page takes its ids before it locks any row (spiral_mcp.ids), so before it knows which
    # comments, moves and links it writes (those of the items kept below): enough for every item
    # that may bring some, new or not older than the stored one.
    bounded = [i for i in todo if (row := stored.get(i.source_id)) is None
               or row["updated_at"] <= i.updated]
    links = {_link_triple(i.key, link) for i in bounded for link in i.links}
    new_items = [i for i in todo if i.source_id not in stored]
    counts = (len(new_items), sum(len(i.comments) for i in bounded),
              sum(len(i.transitions) for i in bounded), len(links))
    await queries.source_bump_next_numbers(
        conn, project_keys=[i.project_key for i in todo], numbers=[i.number for i in todo])
    # Taken even when no id is needed: a page takes the counter before its first row lock, never
    # after, so a write-through that stores a comment after its item (the counter again) cannot
    # be waiting for a page that waits for its item.
    item_ids, comment_ids, move_ids, link_ids = await take_work_ids(
        conn, queries, tenant_id=tenant_id, counts=counts)
    fresh = dict(zip((i.source_id for i in new_items), item_ids, strict=True))
    changed = await queries.source_upsert_items(
        conn, tenant_id=tenant_id, source=source, instance_id=instance_id,
        source_ids=[i.source_id for i in todo], keys=[i.key for i in todo],
        project_keys=[i.project_key for i in todo], numbers=[i.number for i in todo],
        titles=[i.title for i in todo], descriptions=[i.description for i in todo],
        types=[i.type for i in todo], statuses=[i.status for i in todo],
        categories=[i.status_category for i in todo], priorities=[i.priority for i in todo],
        assignees=[i.assignee for i in todo], reporters=[i.reporter for i in todo],
        labels_json=[_json(i.labels) for i in todo],
        parent_keys=[i.parent_key for i in todo], created=[i.created for i in todo],
        updated=[i.updated for i in todo], resolved=[i.resolved for i in todo],
        due=[i.due for i in todo], raws=[_json(i.raw) for i in todo],
        # A stored item's own id: its row goes to the update.
        ids=[fresh[i.source_id] if i.source_id in fresh else stored[i.source_id]["id"]
             for i in todo],
    )
    ids = {row["source_id"]: row["id"] for row in (*stored.values(), *changed)}
    written = {row["source_id"] for row in changed}
    # Comments, moves and links come with an item the upsert wrote, or one stored at this very
    # version. Not from an answer older than the store's (a write-through's racing a sync page):
    # it would roll an edited comment back. Nor for a new item the upsert left alone: a
    # write-through stored it since the lookup, the same or newer, with its own.
    todo = [i for i in todo if i.source_id in written
            or ((row := stored.get(i.source_id)) is not None and row["updated_at"] <= i.updated)]
    comments = [(ids[i.source_id], c) for i in todo for c in i.comments]
    if comments:
        await queries.source_upsert_comments(
            conn, tenant_id=tenant_id, item_ids=[i for i, _ in comments],
            source_ids=[c.source_id for _, c in comments],
            authors=[c.author for _, c in comments], bodies=[c.body for _, c in comments],
            created=[c.created for _, c in comments], updated=[c.updated for _, c in comments],
            ids=comment_ids[:len(comments)])
    moves = [(ids[i.source_id], t) for i in todo for t in i.transitions]
    if moves:
        await queries.source_insert_transitions(
            conn, tenant_id=tenant_id, item_ids=[i for i, _ in moves],
            from_statuses=[t.from_status for _, t in moves],
            to_statuses=[t.to_status for _, t in moves],
            from_categories=[t.from_category for _, t in moves],
            to_categories=[t.to_category for _, t in moves],
            actors=[t.actor for _, t in moves], ats=[t.at for _, t in moves],
            ids=move_ids[:len(moves)])
    if prune_links:
        await _prune_links(conn, queries, source=source, ids=ids,
                           items=[i for i in todo if i.source_id in written])
    # Seen from either end a link is one (type, outward, inward) triple; the set keeps one.
    links = {_link_triple(i.key, link) for i in todo for link in i.links}
    if links:
        await queries.source_insert_links(
            conn, tenant_id=tenant_id, source=source, link_types=[t for t, _, _ in links],
            outward_keys=[o for _, o, _ in links], inward_keys=[i for _, _, i in links],
            ids=link_ids[:len(links)])
    return len(changed)


async def _teach_keys(conn: asyncpg.Connection, queries: Queries, adapter: Adapter, *,
                      instance_id: uuid.UUID, project_keys: list[str]) -> None:
    """Tell the adapter the keys the store already gave its items (see Adapter.use_keys)."""
    stored = await queries.source_item_numbers(conn, instance_id=instance_id,
                                               project_keys=project_keys)
    counters = await queries.source_next_numbers(conn, project_keys=project_keys)
    adapter.use_keys([(r["source_id"], r["project_key"], r["number"]) for r in stored],
                     {r["project_key"]: r["next_number"] for r in counters})


async def sync_instance(
    conn: asyncpg.Connection,
    queries: Queries,
    adapter: Adapter,
    *,
    tenant_id: uuid.UUID,
    instance_id: uuid.UUID,
    projects: dict[str, str],
    cursor: str | None,
    full: bool = False,
    on_page: Callable[[SyncProgress], None] | None = None,
    on_commit: Callable[[frozenset[str]], None] | None = None,
    run_id: uuid.UUID | None = None,
) -> SyncProgress:
    """Sync ``adapter``'s items into ``tenant_id`` from the stored ``cursor`` (or all, ``full``,
    which also re-applies the instance's mappings to items the source has not changed).

    ``conn`` must not be inside a transaction: every page commits on its own. ``on_commit`` hears,
    after each commit that changed something, the kinds of data it changed (changed_data).
    ``run_id``: the sync_runs row whose counts each page moves, in the page's own transaction.
    """
    progress = SyncProgress()
    # Read before the transaction opens: no transaction waits on the source.
    workflows = {ref: await adapter.workflow(ref) for ref in projects}
    keys = list(projects.values())
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        before = await queries.source_workflow_digest(conn, project_keys=keys)
        await _ensure_projects(conn, queries, tenant_id=tenant_id, instance_id=instance_id,
                               projects=projects)
        for ref, workflow in workflows.items():
            await _write_workflow(conn, queries, tenant_id=tenant_id,
                                  project_key=projects[ref], workflow=workflow)
        after = await queries.source_workflow_digest(conn, project_keys=keys)
        await _teach_keys(conn, queries, adapter, instance_id=instance_id, project_keys=keys)
    # Rewritten every run, so told only when the rows differ (a new project, a changed workflow).
    moved = frozenset(kind for kind, digest in dict(after).items() if digest != before[kind])
    if moved and on_commit is not None:
        on_commit(moved)
    since = None if full else _cursor_of(cursor)
    high_water = since
    settled = datetime.now(UTC) - CURSOR_LAG  # the cursor never passes it, see CURSOR_LAG
    # aclosing: a failed write stops the read ahead at once, not when the generator is collected.
    async with aclosing(_read_ahead(adapter.pages(since=since))) as pages:
        async for page in pages:
            if page.items:
                newest = min(max(i.updated for i in page.items), settled)
                high_water = newest if high_water is None else max(high_water, newest)
            async with conn.transaction():
                await queries.set_tenant(conn, tenant_id=str(tenant_id))
                changed = await write_items(conn, queries, tenant_id=tenant_id,
                                            source=adapter.kind, instance_id=instance_id,
                                            items=page.items)
                await queries.source_save_cursor(
                    conn, instance_id=instance_id,
                    sync_cursor=_json({"updated": high_water.isoformat() if high_water else None}))
                if run_id is not None:
                    await queries.sync_run_page(
                        conn, run_id=run_id, pages=progress.pages + 1,
                        items=progress.items + len(page.items), changed=progress.changed + changed)
            if changed:
                if on_commit is not None:
                    on_commit(ITEM_DATA)
                # A backfill outgrows the statistics its session's cached plans were made from.
                await queries.source_refresh_statistics(conn)
            progress.changed += changed
            progress.pages += 1
            progress.items += len(page.items)
            if on_page is not None:
                on_page(progress)
    return progress
