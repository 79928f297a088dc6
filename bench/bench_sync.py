"""Sync throughput (issue 7): how fast ``sync_instance`` stores items; a Jira sync end to end.

    .venv/bin/python -m bench.bench_sync                           # the full run (a few minutes)
    .venv/bin/python -m bench.bench_sync --items 5000 --jira-issues 500 --page-sizes 100

- Store: a bench adapter (a real :class:`Adapter` that serves pre-built pages of normalised items
  from memory, so only the PostgreSQL side is measured) is synced by ``sync_instance`` as the
  runtime role, as the scheduler does: a backfill of ``--items`` items, a full re-sync of the same
  items (all unchanged), and a full re-sync where ``--changed`` of them changed; per page size,
  each page size on a freshly provisioned database. Every statement is timed on the client
  (asyncpg's query logger: send, server work, answer), so the report says how many statements a
  page takes and where the time goes; Python = the rest (building arguments, JSON of ``raw``).
- Where the time goes in PostgreSQL: EXPLAIN (ANALYZE, BUFFERS) of each page statement for one
  page of new items and one of unchanged items (rolled back), and the cost of each secondary index
  (pages of new items with the index dropped, rolled back).
- The floor: what PostgreSQL alone spends on each part of a new item (row, B-trees, text index,
  moves, comments), the stored items inserted again into copies of the tables in one statement a
  part, rolled back; so what one core, and every core, could take at most.
- End to end: the fake Jira of ``tests/fake_jira.py`` in a process of its own (a real Jira is
  elsewhere too) with ``--jira-issues`` issues, synced through HTTP by the real ``JiraAdapter``.

PostgreSQL: BENCH_DATABASE_URL (a superuser URL) or the embedded server under bench/.data/sync;
database ``spiral_bench_sync``, dropped and provisioned again for each part. Results: a table on
stdout, everything in ``bench/results/<ts>-sync.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.bench_scale import CATEGORY, DETAILS, PATH_WEIGHTS, PATHS, PEOPLE
from bench.run import BENCH, RESULTS, cpu_busy, free_port, log, with_database
from spiral_mcp import admin, migrate
from spiral_mcp.demo import LABELS, SUBJECTS, VERBS
from spiral_mcp.provision import DatabaseUrls, provision, start_embedded
from spiral_mcp.queries import Queries
from spiral_mcp.sources import manage, sync
from spiral_mcp.sources.base import (
    Adapter,
    Comment,
    Draft,
    Item,
    Link,
    Page,
    Ref,
    Transition,
    Workflow,
)
from spiral_mcp.sources.secrets import SecretBox

DATABASE = "spiral_bench_sync"
PROJECT = "BEN"
TARGET = 5_000  # items/s, issue 7
BOX = SecretBox(b"b" * 43 + b"=")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
TYPES = ("bug", "bug", "story", "task", "task", "feature")
PRIORITY_NAMES = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low",
                  "none": "Lowest"}
LINK_TYPES = ("blocks", "relates", "relates", "duplicates", "clones")
# The statements a sync sends, by name, so the client-side timings can be grouped.
STATEMENTS = ("set_tenant", "source_ensure_project", "source_project_owner",
              "source_prune_workflow_statuses", "source_clear_initial_status",
              "source_upsert_workflow_statuses", "source_prune_workflow_transitions",
              "source_insert_workflow_transitions", "source_item_numbers", "source_next_numbers",
              "source_stored_items", "source_upsert_items",
              "source_upsert_comments", "source_insert_transitions", "source_prune_links",
              "source_insert_links",
              "source_bump_next_numbers", "source_save_cursor", "source_refresh_statistics")


# -- items --------------------------------------------------------------------------------------

def _adf(text: str) -> dict[str, Any]:
    # raw is the source's whole answer; Jira Cloud's bodies are ADF, so raw is that big.
    return {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": para}]}
        for para in text.split("\n\n")]}


def _person(email: str | None) -> dict[str, Any] | None:
    if email is None:
        return None
    name = email.split("@")[0]
    return {"accountId": f"5b10{abs(hash(name)) % 10**20:020d}", "displayName": name.title(),
            "emailAddress": email, "active": True, "timeZone": "Europe/Berlin"}


def _jira_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _raw(item: Item) -> dict[str, Any]:
    """A Jira Cloud search answer's issue for ``item`` (fields, comments, changelog)."""
    number = item.number
    return {
        "id": item.source_id, "key": item.key,
        "self": f"https://example.atlassian.net/rest/api/3/issue/{item.source_id}",
        "fields": {
            "summary": item.title, "description": _adf(item.description or ""),
            "issuetype": {"name": item.type.title(), "subtask": False},
            "status": {"name": item.status, "statusCategory": {"key": item.status_category}},
            "priority": {"name": PRIORITY_NAMES[item.priority]},
            "assignee": _person(item.assignee), "reporter": _person(item.reporter),
            "labels": item.labels, "created": _jira_time(item.created),
            "updated": _jira_time(item.updated),
            "resolutiondate": _jira_time(item.resolved) if item.resolved else None,
            "duedate": item.due.date().isoformat() if item.due else None,
            "parent": {"key": item.parent_key} if item.parent_key else None,
            "comment": {"startAt": 0, "maxResults": 20, "total": len(item.comments),
                        "comments": [{"id": c.source_id, "author": _person(c.author),
                                      "body": _adf(c.body), "created": _jira_time(c.created),
                                      "updated": _jira_time(c.updated)}
                                     for c in item.comments]},
            "issuelinks": [{"id": f"{number}{n}", "type": {"name": link.link_type.title()},
                            "outwardIssue" if link.outward else "inwardIssue":
                                {"key": link.other_key}}
                           for n, link in enumerate(item.links)],
        },
        "changelog": {"startAt": 0, "maxResults": 40, "total": len(item.transitions),
                      "histories": [{"id": f"h{number}-{n}", "author": _person(t.actor),
                                     "created": _jira_time(t.at),
                                     "items": [{"field": "status", "fromString": t.from_status,
                                                "toString": t.to_status}]}
                                    for n, t in enumerate(item.transitions)]},
    }


def _text(rng: random.Random, sentences: int) -> str:
    lines = [f"The {rng.choice(SUBJECTS)} {rng.choice(('flow', 'page', 'job', 'endpoint'))} "
             f"{rng.choice(DETAILS).lower()}" for _ in range(sentences)]
    return "\n\n".join(" ".join(lines[i:i + 3]) for i in range(0, len(lines), 3))


def make_items(count: int, seed: int = 7) -> list[Item]:
    """``count`` items as an adapter would yield them, oldest update first: descriptions of
    3-12 sentences (~250-1,000 characters), 0-3 labels, 0-4 comments, the 2-5 moves of a
    demo.py workflow path, a parent for one item in ten, a link for one in five (listed on both
    ends, as a source does), and the source's whole issue as ``raw`` (~2-5 KB of JSON)."""
    rng = random.Random(seed)
    items: list[Item] = []
    for number in range(1, count + 1):
        kind = rng.choice(TYPES)
        updated = T0 + timedelta(seconds=number)  # unique, ascending: pages come in this order
        created = updated - timedelta(days=rng.uniform(1, 300))
        path = rng.choices(PATHS, PATH_WEIGHTS)[0]
        step = (updated - created) / len(path)
        moves = [Transition(from_status=path[n - 1] if n else None, to_status=status,
                            from_category=CATEGORY[path[n - 1]] if n else None,
                            to_category=CATEGORY[status], actor=rng.choice(PEOPLE),
                            at=created + step * n) for n, status in enumerate(path)]
        comments = [Comment(source_id=f"{number}{n:02d}", author=rng.choice(PEOPLE),
                            body=_text(rng, rng.randint(1, 5)), created=created + step * n,
                            updated=created + step * n) for n in range(rng.choice((0, 1, 1, 2,
                                                                                   2, 3, 4)))]
        category = CATEGORY[path[-1]]
        items.append(Item(
            source_id=str(100_000 + number), key=f"{PROJECT}-{number}", project_key=PROJECT,
            number=number, title=f"{rng.choice(VERBS[kind])} {rng.choice(SUBJECTS)}",
            description=_text(rng, rng.randint(3, 12)), type=kind, status=path[-1],
            status_category=category,
            priority=rng.choices(("critical", "high", "medium", "low", "none"),
                                 (5, 20, 50, 20, 5))[0],
            assignee=rng.choice((*PEOPLE, None)), reporter=rng.choice(PEOPLE),
            labels=rng.sample(LABELS, rng.choice((0, 1, 1, 2, 3))),
            parent_key=f"{PROJECT}-{rng.randint(1, number - 1)}" if number > 1 and
            rng.random() < 0.1 else None,
            created=created, updated=updated,
            resolved=moves[-1].at if category in ("done", "cancelled") else None,
            due=updated + timedelta(days=30) if rng.random() < 0.2 else None,
            raw={}, comments=comments, transitions=moves))
        if number > 1 and rng.random() < 0.2:
            other = items[rng.randint(max(0, number - 500), number - 2)]
            link_type = rng.choice(LINK_TYPES)
            items[-1].links.append(Link(link_type, other.key, True))
            other.links.append(Link(link_type, items[-1].key, False))
    return [dataclasses.replace(item, raw=_raw(item)) for item in items]


def change_some(items: list[Item], fraction: float, seed: int = 11) -> list[Item]:
    """A source after ``fraction`` of its items moved on: new title, one more move and one more
    comment, a later ``updated`` (so they come last, as a source orders them)."""
    rng = random.Random(seed)
    changed = set(rng.sample(range(len(items)), int(len(items) * fraction)))
    at = items[-1].updated
    out: list[Item] = []
    for n, item in enumerate(items):
        if n not in changed:
            out.append(item)
            continue
        at += timedelta(seconds=1)
        target = "In Progress" if item.status != "In Progress" else "In Review"
        moved = dataclasses.replace(
            item, title=f"{item.title} (again)", status=target,
            status_category=CATEGORY[target], updated=at, resolved=None,
            transitions=[*item.transitions, Transition(item.status, target,
                                                       item.status_category,
                                                       CATEGORY[target], PEOPLE[0], at)],
            comments=[*item.comments, Comment(f"{item.number}99", PEOPLE[1],
                                              "Reopened: seen again after the release.", at,
                                              at)])
        out.append(dataclasses.replace(moved, raw=_raw(moved)))
    return sorted(out, key=lambda i: i.updated)


# -- the bench adapter --------------------------------------------------------------------------

class MemoryAdapter(Adapter):
    """Serves pre-built pages of items from memory, as an adapter would after its HTTP work, so
    a sync measured with it measures the store. Reads only: it has no source to write to."""

    kind = "jira"  # the store accepts only known sources; nothing here speaks to a Jira
    ref_pattern = manage.LOCAL_KEY
    ref_example = PROJECT

    def __init__(self, items: list[Item], page_size: int) -> None:
        self.items = items
        self.page_size = page_size

    @classmethod
    def from_instance(cls, base_url: str, credentials: Mapping[str, str],
                      config: Mapping[str, Any], **client_options: Any) -> MemoryAdapter:
        raise NotImplementedError("a bench adapter is built from items, not from an instance")

    async def check(self) -> str:
        return "bench"

    async def pages(self, *, since: datetime | None) -> AsyncGenerator[Page, None]:
        wanted = [i for i in self.items if since is None or i.updated >= since]
        for start in range(0, len(wanted), self.page_size):
            yield Page(wanted[start:start + self.page_size])

    async def workflow(self, project_ref: str) -> Workflow:
        moves = {(a, b) for path in PATHS for a, b in itertools.pairwise(path)}
        return Workflow(list(CATEGORY.items()),
                        [(f"{a}->{b}", b, a, b) for a, b in sorted(moves)])

    async def create(self, project_ref: str, draft: Draft) -> Item:
        raise NotImplementedError("the bench adapter only reads")

    async def update(self, ref: Ref, changes: Mapping[str, Any]) -> Item:
        raise NotImplementedError("the bench adapter only reads")

    async def transition(self, ref: Ref, status: str) -> Item:
        raise NotImplementedError("the bench adapter only reads")

    async def comment(self, ref: Ref, body: str) -> Comment:
        raise NotImplementedError("the bench adapter only reads")

    async def link(self, outward: Ref, inward: Ref, link_type: str) -> bool:
        raise NotImplementedError("the bench adapter only reads")

    async def close(self) -> None:
        return None


# -- measuring ----------------------------------------------------------------------------------

class StatementLog:
    """Every statement a connection sends, named, with its client-side time."""

    def __init__(self, queries: Queries) -> None:
        self._names = {getattr(queries, name).sql: name for name in STATEMENTS}
        self.entries: list[tuple[str, float]] = []

    def __call__(self, record: Any) -> None:
        name = self._names.get(record.query) or record.query.split()[0].rstrip(";").upper()
        self.entries.append((name, record.elapsed))

    @contextlib.contextmanager
    def on(self, conn: asyncpg.Connection) -> Iterator[None]:
        self.entries = []
        conn.add_query_logger(self)
        try:
            yield
        finally:
            conn.remove_query_logger(self)


def summarize(entries: list[tuple[str, float]], pages: int, seconds: float) -> dict[str, Any]:
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for name, elapsed in entries:
        by_name[name].append(elapsed)
    in_statements = sum(e for _, e in entries)
    return {
        "statements": len(entries),
        "statements_per_page": round(len(entries) / max(1, pages), 2),
        "statement_seconds": round(in_statements, 3),
        "python_seconds": round(seconds - in_statements, 3),
        "by_statement": {name: {"count": len(v), "total_s": round(sum(v), 3),
                                "mean_ms": round(1000 * statistics.fmean(v), 3),
                                "share": round(sum(v) / seconds, 3)}
                         for name, v in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))},
    }


async def timed_sync(conn: asyncpg.Connection, queries: Queries, adapter: Adapter,
                     statements: StatementLog, *, tenant_id: uuid.UUID,
                     instance_id: uuid.UUID, full: bool) -> dict[str, Any]:
    cursor = await _cursor(conn, queries, tenant_id, instance_id)
    page_ends: list[float] = []
    with statements.on(conn):
        started = time.perf_counter()
        progress = await sync.sync_instance(
            conn, queries, adapter, tenant_id=tenant_id, instance_id=instance_id,
            projects={PROJECT: PROJECT}, cursor=cursor, full=full,
            on_page=lambda _: page_ends.append(time.perf_counter()))
        seconds = time.perf_counter() - started
        await asyncio.sleep(0)  # the logger's callbacks run soon after each statement
    page_ms = sorted(1000 * (b - a) for a, b in itertools.pairwise(page_ends))
    return {"items": progress.items, "pages": progress.pages, "changed": progress.changed,
            "seconds": round(seconds, 3), "items_per_s": round(progress.items / seconds),
            "page_ms_p50": round(statistics.median(page_ms), 2) if page_ms else None,
            "page_ms_p99": round(page_ms[int(len(page_ms) * 0.99)], 2) if page_ms else None,
            **summarize(statements.entries, progress.pages, seconds)}


async def _cursor(conn: asyncpg.Connection, queries: Queries, tenant_id: uuid.UUID,
                  instance_id: uuid.UUID) -> str | None:
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        row = await queries.source_get(conn, instance_id=instance_id)
    return row["sync_cursor"]


# -- the database -------------------------------------------------------------------------------

async def fresh_database(superuser_url: str) -> DatabaseUrls:
    conn = await asyncpg.connect(superuser_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()
    return await provision(superuser_url, DATABASE)


async def new_source(urls: DatabaseUrls, queries: Queries, name: str, *, base_url: str,
                     projects: dict[str, str], email: str, token: str,
                     ) -> tuple[uuid.UUID, uuid.UUID]:
    """A tenant (spiral_mcp.admin) with one Jira source instance, as the owner role."""
    assert urls.admin is not None
    conn = await asyncpg.connect(urls.admin)
    try:
        async with conn.transaction():
            tenant_id = await admin.create_tenant(conn, queries, name)
            instance_id = await manage.add_source(
                conn, queries, BOX, tenant_id=tenant_id, kind="jira", name=name,
                base_url=base_url, projects=projects, email=email, token=token)
    finally:
        await conn.close()
    return tenant_id, instance_id


async def store_runs(superuser_url: str, queries: Queries, items: list[Item],
                     changed: list[Item], page_size: int,
                     index_pages: int) -> dict[str, Any]:
    """Backfill, unchanged full re-sync, re-sync with some items changed; one page size."""
    urls = await fresh_database(superuser_url)
    tenant_id, instance_id = await new_source(
        urls, queries, f"bench sync {page_size}", base_url="https://bench.invalid",
        projects={PROJECT: PROJECT}, email="bench@example.com",
        token="unused")  # noqa: S106 - never sent anywhere
    conn = await asyncpg.connect(urls.runtime)
    statements = StatementLog(queries)
    runs: dict[str, Any] = {}
    try:
        for name, source, full in (("backfill", items, False), ("unchanged", items, True),
                                   ("changed", changed, True)):
            runs[name] = await timed_sync(conn, queries, MemoryAdapter(source, page_size),
                                          statements, tenant_id=tenant_id,
                                          instance_id=instance_id, full=full)
            r = runs[name]
            r["load_average"] = os.getloadavg()[0]
            log(f"  pages of {page_size}, {name}: {r['items']:,} items "
                f"({r['changed']:,} new or changed) in {r['seconds']:.1f} s = "
                f"{r['items_per_s']:,} items/s, {r['statements_per_page']} statements/page, "
                f"load average {r['load_average']:.1f}")
        runs["explain"] = await explain_page(urls.runtime, queries, tenant_id, instance_id,
                                             changed, page_size)
        runs["sizes"] = await table_sizes(with_database(superuser_url, DATABASE))
        if index_pages:
            assert urls.admin is not None
            runs["index_costs"] = await index_costs(urls.admin, queries, tenant_id, instance_id,
                                                    items, page_size, index_pages)
            runs["floor"] = await item_floor(with_database(superuser_url, DATABASE))
    finally:
        await conn.close()
    return runs


async def side_by_side(superuser_url: str, queries: Queries, items: list[Item], page_size: int,
                       syncs: int) -> dict[str, Any]:
    """``syncs`` tenants backfill their own copy of ``items`` at once, each on a connection of its
    own, as the background scheduler runs instances side by side: what the store takes in all."""
    urls = await fresh_database(superuser_url)
    sources = [await new_source(urls, queries, f"bench side by side {n}",
                                base_url="https://bench.invalid", projects={PROJECT: PROJECT},
                                email="bench@example.com", token="unused")  # noqa: S106
               for n in range(syncs)]
    conns = [await asyncpg.connect(urls.runtime) for _ in sources]
    try:
        started = time.perf_counter()
        done = await asyncio.gather(*(sync.sync_instance(
            conn, queries, MemoryAdapter(items, page_size), tenant_id=tenant_id,
            instance_id=instance_id, projects={PROJECT: PROJECT}, cursor=None)
            for conn, (tenant_id, instance_id) in zip(conns, sources, strict=True)))
        seconds = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
    total = sum(progress.items for progress in done)
    return {"syncs": syncs, "page_size": page_size, "items": total, "seconds": round(seconds, 3),
            "items_per_s": round(total / seconds), "load_average": os.getloadavg()[0]}


# -- where the time goes in PostgreSQL ----------------------------------------------------------

class Explaining:
    """A stand-in connection that runs each statement under EXPLAIN (ANALYZE, BUFFERS) in a
    savepoint rolled back, keeps the plan, then runs it for its rows (the upsert's ids too),
    which the page's later statements need."""

    def __init__(self, real: asyncpg.Connection) -> None:
        self.real = real
        self.plans: list[tuple[str, dict[str, Any]]] = []

    async def _run(self, sql: str, *args: Any) -> Any:
        if sql.startswith("SET"):  # source_custom_plans: nothing to explain
            return await self.real.execute(sql, *args)
        savepoint = self.real.transaction()
        await savepoint.start()
        try:
            plan = json.loads(await self.real.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args))[0]
        finally:
            await savepoint.rollback()
        self.plans.append((sql, plan))
        return await self.real.fetch(sql, *args)

    fetch = fetchrow = fetchval = execute = _run


async def explain_page(runtime_url: str, queries: Queries, tenant_id: uuid.UUID,
                       instance_id: uuid.UUID, items: list[Item], page_size: int
                       ) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement write_items sends, for one page of new
    items (numbers past the stored ones) and one page of ``items`` as stored; rolled back."""
    fresh = [dataclasses.replace(i, source_id=f"9{i.source_id}", number=i.number + 10**6,
                                 key=f"{PROJECT}-{i.number + 10**6}", links=[])
             for i in items[:page_size]]
    names = {getattr(queries, s).sql: s for s in STATEMENTS}
    out: dict[str, Any] = {}
    conn = await asyncpg.connect(runtime_url)
    try:
        for label, page in (("new", fresh), ("unchanged", items[:page_size])):
            explaining = Explaining(conn)
            tr = conn.transaction()
            await tr.start()
            try:
                await queries.set_tenant(conn, tenant_id=str(tenant_id))
                await sync.write_items(explaining, queries,  # type: ignore[arg-type]
                                       tenant_id=tenant_id, source="jira",
                                       instance_id=instance_id, items=page)
            finally:
                await tr.rollback()
            out[label] = [{
                "statement": names[sql], "execution_ms": round(plan["Execution Time"], 3),
                "planning_ms": round(plan["Planning Time"], 3),
                "triggers": {t["Trigger Name"]: {"ms": round(t["Time"], 3), "calls": t["Calls"]}
                             for t in plan.get("Triggers", [])},
                "plan": _plan_lines(plan["Plan"])} for sql, plan in explaining.plans]
    finally:
        await conn.close()
    return out


async def index_costs(admin_url: str, queries: Queries, tenant_id: uuid.UUID,
                      instance_id: uuid.UUID, items: list[Item], page_size: int,
                      pages: int) -> dict[str, Any]:
    """Milliseconds per page of new items with the indexes as they are, and with each secondary
    index of work_items, comments and work_item_transitions dropped (each in a transaction of
    its own, rolled back), as the owner (which owns the indexes; forced RLS applies to it too)."""
    conn = await asyncpg.connect(admin_url)
    try:
        droppable = [r["name"] for r in await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name FROM pg_index i "
            "WHERE i.indrelid::regclass::text = ANY($1) AND NOT i.indisprimary "
            "AND NOT i.indisunique", ["work_items", "comments", "work_item_transitions"])]
        out: dict[str, Any] = {}
        # The baseline first and last: a drift over the experiment (autovacuum, caches, other
        # work on the machine) shows as the two differing.
        for n_run, dropped in enumerate([None, *droppable, None]):
            tr = conn.transaction()
            await tr.start()
            try:
                await queries.set_tenant(conn, tenant_id=str(tenant_id))
                if dropped is not None:
                    await conn.execute(f'DROP INDEX "{dropped}"')
                started = time.perf_counter()
                for n in range(pages):
                    page = [dataclasses.replace(
                        i, source_id=f"8{n}{i.source_id}", number=i.number + (n + 2) * 10**6,
                        key=f"{PROJECT}-{i.number + (n + 2) * 10**6}", links=[])
                        for i in items[n * page_size:(n + 1) * page_size]]
                    await sync.write_items(conn, queries, tenant_id=tenant_id, source="jira",
                                           instance_id=instance_id, items=page)
                label = dropped or ("(none dropped, first)" if n_run == 0
                                    else "(none dropped, last)")
                out[label] = round(1000 * (time.perf_counter() - started) / pages, 1)
            finally:
                await tr.rollback()
        return out
    finally:
        await conn.close()


# Copies of the item tables, filled from the stored rows, one part of a new item's cost at a time:
# (the copy, the DDL making it, the INSERT filling it). Each copy of work_items carries one part
# more than the one before it; the text index is the only index of work_items that is not a
# B-tree. `raw::text::jsonb` parses the JSON again, as the upsert of an item does. Left out: the
# items' foreign key to projects and the policies' checks (the copies have no RLS).
_FLOOR_ITEMS = ("INSERT INTO floor_{copy} OVERRIDING SYSTEM VALUE SELECT tenant_id, id, key, "
                "project_key, number, title, description, type, status, status_category, "
                "priority, assignee, reporter, labels, parent_key, created_at, updated_at, "
                "resolved_at, due_at, custom_fields, source, source_id, raw::text::jsonb, "
                "version FROM work_items")
_FLOOR_PARTS = (
    ("row",
     "CREATE TABLE floor_row (LIKE work_items INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
     "INCLUDING STORAGE INCLUDING COMPRESSION)", _FLOOR_ITEMS.format(copy="row")),
    ("btree",
     "CREATE TABLE floor_btree (LIKE work_items INCLUDING ALL); "
     "DO $$ BEGIN EXECUTE (SELECT string_agg(format('DROP INDEX %s', indexrelid::regclass), ';') "
     "FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid JOIN pg_am ON pg_am.oid = relam "
     "WHERE indrelid = 'floor_btree'::regclass AND amname <> 'btree'); END $$",
     _FLOOR_ITEMS.format(copy="btree")),
    ("items",
     "CREATE TABLE floor_items (LIKE work_items INCLUDING ALL)", _FLOOR_ITEMS.format(copy="items")),
    ("moves",
     "CREATE TABLE floor_moves (LIKE work_item_transitions INCLUDING ALL, FOREIGN KEY "
     "(tenant_id, work_item_id) REFERENCES floor_items)",
     "INSERT INTO floor_moves OVERRIDING SYSTEM VALUE SELECT * FROM work_item_transitions "
     "ON CONFLICT DO NOTHING"),
    ("comments",
     "CREATE TABLE floor_comments (LIKE comments INCLUDING ALL, FOREIGN KEY "
     "(tenant_id, work_item_id) REFERENCES floor_items)",
     "INSERT INTO floor_comments OVERRIDING SYSTEM VALUE SELECT * FROM comments "
     "ON CONFLICT DO NOTHING"),
)


async def item_floor(superuser_db_url: str) -> dict[str, Any]:
    """What PostgreSQL alone spends on each part of a new item: the stored items, their moves and
    comments inserted again, one statement each (no round trips, no Python), into copies of the
    tables that add one part at a time; rolled back. Microseconds per item; each part is the
    difference to the copy before it, so the sum is what a whole item costs."""
    conn = await asyncpg.connect(superuser_db_url)
    try:
        items = await conn.fetchval("SELECT count(*) FROM work_items")
        tr = conn.transaction()
        await tr.start()
        try:
            spent: dict[str, float] = {}
            for copy, ddl, insert in _FLOOR_PARTS:
                await conn.execute(ddl)
                started = time.perf_counter()
                await conn.execute(insert)
                spent[copy] = 1e6 * (time.perf_counter() - started) / items
        finally:
            await tr.rollback()
    finally:
        await conn.close()
    parts = {"the row (heap, TOAST, constraints, JSON of raw)": spent["row"],
             "its B-tree indexes": spent["btree"] - spent["row"],
             "the GiST trigram text index": spent["items"] - spent["btree"],
             "its moves (unique index, foreign key, ON CONFLICT)": spent["moves"],
             "its comments (indexes, foreign key, ON CONFLICT)": spent["comments"]}
    per_item = sum(parts.values())
    return {"items": items, "us_per_item": {k: round(v, 1) for k, v in parts.items()},
            "sum_us": round(per_item, 1), "one_core_items_per_s": round(1e6 / per_item),
            "every_core_items_per_s": round((os.cpu_count() or 1) * 1e6 / per_item)}


def _plan_lines(node: dict[str, Any], depth: int = 0) -> list[str]:
    what = node["Node Type"] + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
    what += f" using {node['Index Name']}" if "Index Name" in node else ""
    line = (f"{'  ' * depth}{what} (rows {node.get('Actual Rows')}, loops "
            f"{node.get('Actual Loops')}, {node.get('Actual Total Time')} ms, shared hit "
            f"{node.get('Shared Hit Blocks', 0)} read {node.get('Shared Read Blocks', 0)} "
            f"dirtied {node.get('Shared Dirtied Blocks', 0)})")
    return [line, *(x for child in node.get("Plans", []) for x in _plan_lines(child, depth + 1))]


async def table_sizes(superuser_db_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(superuser_db_url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) AS total, "
            "pg_relation_size(c.oid) AS heap, (SELECT count(*) FROM pg_index i "
            "WHERE i.indrelid = c.oid) AS indexes FROM pg_class c WHERE c.relname = ANY($1)",
            ["work_items", "comments", "work_item_transitions", "work_item_links"])
    finally:
        await conn.close()
    return {r["relname"]: {"total_mb": round(r["total"] / 2**20, 1),
                           "heap_mb": round(r["heap"] / 2**20, 1), "indexes": r["indexes"]}
            for r in rows}


# -- end to end through HTTP --------------------------------------------------------------------

def serve_fake_jira(port: int, issues: int) -> None:
    """The child process: a fake Jira Cloud site with ``issues`` issues on ``port``."""
    from aiohttp import web

    from tests.fake_jira import FakeJira

    rng = random.Random(3)
    # Jira Cloud's search answers carry up to 20 comments and 40 histories inline.
    fake = FakeJira(inline_comments=20, inline_histories=40, projects={"ABC"})
    statuses = ("To Do", "In Progress", "Blocked", "In Review", "Done", "Won't Do")
    moves = (("In Progress",), ("In Progress", "In Review"), ("In Progress", "In Review", "Done"))
    for n in range(1, issues + 1):
        fake.add_issue(f"ABC-{n}", summary=f"{rng.choice(VERBS['bug'])} {rng.choice(SUBJECTS)}",
                       updated=T0 + timedelta(minutes=n), status=statuses[n % 6],
                       issuetype=rng.choice(("Bug", "Story", "Task")),
                       labels=tuple(rng.sample(LABELS, rng.randint(0, 3))),
                       assignee=rng.choice(("Alice Liddell", "Bob Stone", None)),
                       comments=rng.randint(0, 4), moves=rng.choice(moves),
                       parent="ABC-1" if n > 1 and n % 10 == 0 else None)
    keys = [f"ABC-{n}" for n in range(1, issues + 1)]
    for n in range(issues // 10):  # one link per ten issues; both ends count as updated
        a, b = rng.sample(keys, 2)
        fake.link_issues(a, b, rng.choice(("Blocks", "Relates")),
                         at=T0 + timedelta(minutes=issues + n))
    web.run_app(fake.app(), host="127.0.0.1", port=port, print=None, access_log=None)


def wait_for_port(port: int, process: multiprocessing.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError("the fake Jira exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the fake Jira did not listen on {port} within {timeout:g} s")


async def jira_run(superuser_url: str, queries: Queries, issues: int, rate: float,
                   page_size: int) -> dict[str, Any]:
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=serve_fake_jira, args=(port, issues), daemon=True)
    process.start()
    try:
        await asyncio.to_thread(wait_for_port, port, process, 120)
        urls = await fresh_database(superuser_url)
        tenant_id, instance_id = await new_source(
            urls, queries, "bench jira", base_url=f"http://127.0.0.1:{port}",
            projects={"ABC": "JIR"}, email="bot@example.com",
            token="s3cret-token")  # noqa: S106 - the fake's own
        conn = await asyncpg.connect(urls.runtime)
        statements = StatementLog(queries)
        runs: dict[str, Any] = {}
        try:
            for name, full in (("backfill", False), ("incremental, nothing new", False)):
                row = await _instance(conn, queries, tenant_id, instance_id)
                adapter = manage.make_adapter(row, BOX, rate=rate, page_size=page_size)
                cursor = row["sync_cursor"]
                with statements.on(conn):
                    started = time.perf_counter()
                    progress = await sync.sync_instance(
                        conn, queries, adapter, tenant_id=tenant_id, instance_id=instance_id,
                        projects={"ABC": "JIR"}, cursor=cursor, full=full)
                    seconds = time.perf_counter() - started
                    await asyncio.sleep(0)
                requests = adapter.requests  # type: ignore[attr-defined]
                await adapter.close()
                in_db = sum(e for _, e in statements.entries)
                runs[name] = {"items": progress.items, "pages": progress.pages,
                              "changed": progress.changed, "seconds": round(seconds, 3),
                              "items_per_s": round(progress.items / seconds),
                              "http_requests": requests, "statement_seconds": round(in_db, 3),
                              "source_and_parse_seconds": round(seconds - in_db, 3)}
                log(f"  jira {name}: {progress.items:,} items in {seconds:.1f} s = "
                    f"{progress.items / seconds:,.0f} items/s, {requests} requests, "
                    f"{in_db:.1f} s in statements")
        finally:
            await conn.close()
    finally:
        process.terminate()
        process.join(10)
    return runs


async def _instance(conn: asyncpg.Connection, queries: Queries, tenant_id: uuid.UUID,
                    instance_id: uuid.UUID) -> asyncpg.Record:
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        return await queries.source_get(conn, instance_id=instance_id)


# -- main ---------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_sync",
                                description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=50_000, help="items of the store runs")
    p.add_argument("--page-sizes", default="100,500", help="comma-separated (default 100,500)")
    p.add_argument("--changed", type=float, default=0.1,
                   help="share of items changed in the last re-sync (default 0.1)")
    p.add_argument("--index-pages", type=int, default=5,
                   help="pages of new items per index dropped in the index experiment "
                        "(0: skip it and the floor)")
    p.add_argument("--side-by-side", type=int, default=2,
                   help="backfills at once, one tenant each, pages of the first size (0: skip)")
    p.add_argument("--jira-issues", type=int, default=5_000,
                   help="issues of the fake Jira (0: skip the end-to-end run)")
    p.add_argument("--jira-rate", type=float, default=10_000.0,
                   help="the adapter's request rate per second (default 10000: no waiting)")
    p.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR",
                                                        str(BENCH / ".data" / "sync")),
                   help="the embedded PostgreSQL's folder, without BENCH_DATABASE_URL")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    page_sizes = [int(s) for s in args.page_sizes.split(",") if s.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    busy = cpu_busy(3.0)
    log(f"machine busy before the run: {busy:.0%} of all CPUs, load average "
        f"{os.getloadavg()[0]:.1f}" if busy is not None else "cannot read /proc/stat")
    superuser_url = os.environ.get("BENCH_DATABASE_URL")
    if not superuser_url:
        log(f"starting the embedded PostgreSQL under {args.data_dir}")
        superuser_url = start_embedded(Path(args.data_dir).resolve())
    queries = Queries.load()

    started = time.perf_counter()
    items = make_items(args.items)
    changed = change_some(items, args.changed)
    raw_kb = statistics.fmean(len(json.dumps(i.raw, default=str)) for i in items[:1000]) / 1024
    log(f"built {len(items):,} items in {time.perf_counter() - started:.1f} s "
        f"({sum(len(i.comments) for i in items):,} comments, "
        f"{sum(len(i.transitions) for i in items):,} moves, "
        f"{sum(len(i.links) for i in items) // 2:,} links; raw ~{raw_kb:.1f} KB)")

    store: dict[str, Any] = {}
    for size in page_sizes:
        # The index experiment and the floor once, with the first page size.
        index_pages = args.index_pages if size == page_sizes[0] else 0
        store[f"pages of {size}"] = asyncio.run(store_runs(
            superuser_url, queries, items, changed, size, index_pages))
    parallel = (asyncio.run(side_by_side(superuser_url, queries, items, page_sizes[0],
                                         args.side_by_side)) if args.side_by_side else None)
    if parallel:
        log(f"  side by side: {parallel['syncs']} backfills of {args.items:,} items, pages of "
            f"{parallel['page_size']}: {parallel['items_per_s']:,} items/s in all")
    jira = (asyncio.run(jira_run(superuser_url, queries, args.jira_issues, args.jira_rate, 100))
            if args.jira_issues else None)
    busy_after = cpu_busy(3.0)  # other work on a shared machine skews the figures

    if busy is not None and busy_after is not None:
        print(f"\nspiral-mcp sync benchmark {stamp}: {args.items:,} items, CPU busy before the "
              f"run {busy:.0%}, after it {busy_after:.0%}")
    print(f"schema: migrations {', '.join(migrate.head_ids())}")
    head = (f"{'page size':<14} {'run':<10} {'items/s':>8} {'stmts/page':>10} "
            f"{'page p50 ms':>11} {'in statements':>13} {'python':>7}  top statements "
            "(share of wall time)")
    print(head)
    print("-" * len(head))
    for key, runs in store.items():
        for name in ("backfill", "unchanged", "changed"):
            r = runs[name]
            top = ", ".join(f"{n} {s['share']:.0%}" for n, s in
                            list(r["by_statement"].items())[:4])
            print(f"{key:<14} {name:<10} {r['items_per_s']:>8,} {r['statements_per_page']:>10} "
                  f"{r['page_ms_p50']:>11} {r['statement_seconds']:>12.1f}s "
                  f"{r['python_seconds']:>6.1f}s  {top}")
    for key, runs in store.items():
        print(f"\nEXPLAIN ANALYZE after the runs, one page ({key}; execution ms; triggers):")
        for label, plans in runs["explain"].items():
            print(f"  {label}: " + ", ".join(
                f"{p['statement']} {p['execution_ms']:.1f}" + (
                    " [" + "; ".join(f"{t} {v['ms']:.1f}" for t, v in p["triggers"].items())
                    + "]" if p["triggers"] else "") for p in plans))
    for key, runs in store.items():
        if "index_costs" in runs:
            costs = runs["index_costs"]
            first, last = costs["(none dropped, first)"], costs["(none dropped, last)"]
            base = (first + last) / 2
            print(f"\nms per page of new items ({key}), with one index dropped (rolled back):")
            print(f"  none dropped {first} (first) / {last} (last); " + ", ".join(
                f"{name} {ms} ({ms - base:+.1f})" for name, ms in costs.items()
                if not name.startswith("(none")))
    for runs in store.values():
        if "floor" in runs:
            floor = runs["floor"]
            print(f"\nPostgreSQL alone, per new item ({floor['items']:,} stored items inserted "
                  "again into copies of the tables, one statement a part):")
            for part, us in floor["us_per_item"].items():
                print(f"  {part:<52} {us:>7.1f} us")
            print(f"  {'sum':<52} {floor['sum_us']:>7.1f} us: at most "
                  f"{floor['one_core_items_per_s']:,} items/s on one core, "
                  f"{floor['every_core_items_per_s']:,} on all {os.cpu_count()} "
                  f"(aim {TARGET:,})")
    if parallel:
        print(f"\nside by side: {parallel['syncs']} tenants backfilling {args.items:,} items each "
              f"at once (pages of {parallel['page_size']}): {parallel['items_per_s']:,} items/s "
              f"into the store in all ({parallel['items']:,} in {parallel['seconds']:.1f} s)")
    if jira:
        print(f"\nend to end (fake Jira Cloud, {args.jira_issues:,} issues, JiraAdapter rate "
              f"{args.jira_rate:g}/s, pages of 100):")
        for name, r in jira.items():
            print(f"  {name}: {r['items_per_s']:,} items/s ({r['items']:,} items, "
                  f"{r['http_requests']} requests, {r['seconds']:.1f} s of which "
                  f"{r['statement_seconds']:.1f} s in statements)")
    out = RESULTS / f"{stamp}-sync.json"
    out.write_text(json.dumps({
        "timestamp": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0]},
        "cpu_busy_before": busy, "cpu_busy_after": busy_after, "migrations": migrate.head_ids(),
        "config": vars(args) | {"database": "BENCH_DATABASE_URL"
                                if os.environ.get("BENCH_DATABASE_URL") else "embedded"},
        "store": store, "side_by_side": parallel, "jira": jira,
    }, indent=2, default=str))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
