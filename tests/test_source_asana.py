"""The Asana source against a fake Asana speaking the real wire format: normalisation, the
resumable incremental sync with stable keys, and every write (issue 7)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiohttp import web

from spiral_mcp.sources import manage, sync
from spiral_mcp.sources.asana import AsanaAdapter, priority_for, type_for
from spiral_mcp.sources.base import Draft, Ref, SourceError
from spiral_mcp.sources.secrets import SecretBox
from tests.fake_asana import FakeAsana

BOX = SecretBox(b"x" * 43 + b"=")
FAST = {"backoff": 0.01, "max_backoff": 0.05, "rate": 1000.0, "timeout": 5.0}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
A, B, BARE = "1200000000000001", "1200000000000002", "1200000000000003"


# --- normalisation ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected"), [
    ("Urgent", "critical"), ("Critical", "critical"), ("Highest", "critical"), ("High", "high"),
    ("medium", "medium"), ("Low", "low"), ("Lowest", "none"), ("None", "none"), (None, "none"),
    ("P9", "medium"),
])
def test_priority(name: str | None, expected: str) -> None:
    assert priority_for(name) == expected


def test_priority_override() -> None:
    assert priority_for("P0", overrides={"p0": "critical"}) == "critical"


@pytest.mark.parametrize(("tags", "subtask", "expected"), [
    (["bug"], False, "bug"), (["Defect"], False, "bug"), (["feature"], False, "feature"),
    (["enhancement"], False, "feature"), (["Epic"], False, "epic"), (["story"], False, "story"),
    (["ux", "story", "bug"], False, "story"), (["ux"], False, "task"), ([], False, "task"),
    (["bug"], True, "subtask"),
])
def test_type(tags: list[str], subtask: bool, expected: str) -> None:
    assert type_for(tags, subtask=subtask) == expected


def test_type_override_and_bad_project_gid() -> None:
    assert type_for(["chore"], overrides={"chore": "task", "spike": "story"}) == "task"
    with pytest.raises(SourceError, match="not an Asana project gid: ABC"):
        AsanaAdapter("https://app.asana.com/api/1.0", token="t", projects={"ABC": "X"})


# --- against the fake Asana ------------------------------------------------------------------
@pytest.fixture
async def asana(serve_fake) -> FakeAsana:
    fake = FakeAsana()
    for gid, name in ((A, "Alpha"), (B, "Beta")):
        fake.add_project(gid, name)
    fake.add_project(BARE, "Bare", priority_field=False)
    return await serve_fake(fake, path="/api/1.0")


def _backfill(fake: FakeAsana, count: int) -> list[str]:
    """``count`` tasks in project A; their gids oldest modification first, which is not the
    order Asana lists them in."""
    priorities = ("Urgent", "High", "Medium", "Low", None)
    for n in range(1, count + 1):
        fake.add_task(A, f"Task {n}", modified=T0 - timedelta(hours=(n * 37) % count),
                      completed=n % 3 == 1, moves=n % 3, comments=n % 4,
                      tags=("bug" if n % 2 else "feature", f"l{n % 3}"),
                      priority=priorities[n % 5], assignee="ann@example.com" if n % 4 == 0
                      else None, due_on="2025-04-01" if n % 6 == 0 else None)
    return sorted(fake.tasks, key=lambda g: fake.tasks[g]["modified_at"])


async def _add(admin_conn: asyncpg.Connection, queries, tenant_id: uuid.UUID, fake: FakeAsana,
               *, token: str | None = None, projects: dict[str, str] | None = None) -> uuid.UUID:
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind="asana",
            name=f"asana {os.urandom(3).hex()}", base_url=fake.base_url,
            projects=projects or {A: "ASN"}, token=token or fake.token)


async def _sync(admin_conn: asyncpg.Connection, queries, source_id: uuid.UUID, *,
                full: bool = False, **options) -> sync.SyncProgress:
    return await manage.run_sync(admin_conn, queries, BOX, source_id, full=full,
                                 **{**FAST, **options})


async def _rows(conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str, *args) -> list:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetch(sql, *args)


async def _count(conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str) -> int:
    return (await _rows(conn, tenant_id, sql))[0][0]


def _adapter(fake: FakeAsana, projects: dict[str, str] | None = None, **options) -> AsanaAdapter:
    adapter = AsanaAdapter(fake.base_url, token=fake.token, projects=projects or {A: "ASN"},
                           **{**FAST, **options})
    adapter.use_keys([], {})
    return adapter


async def test_check_names_the_account_and_refuses_clearly(asana: FakeAsana) -> None:
    good = _adapter(asana, {A: "ASN", B: "BSN"})
    assert await good.check() == "bot@example.com"
    await good.close()
    assert asana.log == [("GET", "/users/me"), ("GET", f"/projects/{A}"),
                         ("GET", f"/projects/{B}")]
    bad = AsanaAdapter(asana.base_url, token="wrong-pat", projects={A: "ASN"}, **FAST)
    with pytest.raises(SourceError) as info:
        await bad.check()
    await bad.close()
    message = str(info.value)
    assert info.value.kind == "auth" and "401" in message and "Not Authorized" in message
    assert "wrong-pat" not in message and "\n" not in message
    missing = _adapter(asana, {"99": "ASN"})
    with pytest.raises(SourceError, match="Asana project 99 does not exist") as info:
        await missing.check()
    await missing.close()
    assert info.value.kind == "not_found"


async def test_new_tasks_are_not_numbered_without_the_stored_keys(asana: FakeAsana) -> None:
    _backfill(asana, 3)
    adapter = AsanaAdapter(asana.base_url, token=asana.token, projects={A: "ASN"}, **FAST)
    with pytest.raises(SourceError, match="needs the store's keys") as info:
        await anext(adapter.pages(since=None))
    assert info.value.kind == "config"
    with pytest.raises(SourceError, match="needs the store's keys"):
        await adapter.create(A, _draft())
    await adapter.close()
    assert asana.log == []  # refused before asking, so nothing was created


async def test_workflow_is_open_and_completed(asana: FakeAsana) -> None:
    adapter = _adapter(asana)
    flow = await adapter.workflow(A)
    await adapter.close()
    assert flow.statuses == [("Open", "todo"), ("Completed", "done")]
    assert flow.transitions == [("complete", "Complete", "Open", "Completed"),
                                ("reopen", "Reopen", "Completed", "Open")]


async def test_full_backfill_over_many_pages(asana: FakeAsana, make_tenant, admin_conn,
                                             app_conn, queries) -> None:
    order = _backfill(asana, 230)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, asana)
    progress = await _sync(admin_conn, queries, source_id, page_size=50)
    assert progress.pages == 5 and progress.items == 230 and progress.changed == 230
    listing = [q for (m, p), q in zip(asana.log, asana.queries, strict=True) if p == "/tasks"]
    assert len(listing) == 5 and all(q["limit"] == "50" and q["project"] == A
                                     and "modified_since" not in q for q in listing)
    rows = await _rows(app_conn, tenant.id, "SELECT * FROM work_items ORDER BY number")
    # Numbers are handed out oldest modification first: 1..230, no gaps, in cursor order.
    assert [r["source_id"] for r in rows] == order
    assert [r["key"] for r in rows] == [f"ASN-{n}" for n in range(1, 231)]
    project = (await _rows(app_conn, tenant.id, "SELECT * FROM projects"))[0]
    assert (project["project_key"], project["source_ref"], project["next_number"]) == (
        "ASN", A, 231)
    task = asana.tasks[rows[9]["source_id"]]
    n = int(task["name"].split()[1])
    row = rows[9]
    assert row["title"] == task["name"] and row["description"] == f"About {task['name']}."
    assert (row["status"], row["status_category"]) == (
        ("Completed", "done") if n % 3 == 1 else ("Open", "todo"))
    assert (row["resolved_at"] is not None) == (n % 3 == 1)
    assert row["type"] == ("bug" if n % 2 else "feature")
    assert row["labels"] == ["bug" if n % 2 else "feature", f"l{n % 3}"]
    assert row["priority"] == ("critical", "high", "medium", "low", "none")[n % 5]
    assert row["reporter"] == "rita@example.com" and row["version"] == 1
    assert row["assignee"] == ("ann@example.com" if n % 4 == 0 else None)
    assert row["updated_at"] == datetime.fromisoformat(task["modified_at"])
    comments = await _rows(app_conn, tenant.id, "SELECT c.body, c.author FROM comments c "
                           "JOIN work_items w ON w.id = c.work_item_id WHERE w.key = $1 "
                           "ORDER BY c.created_at", row["key"])
    assert [tuple(c) for c in comments] == [(f"c{i}", "Mover") for i in range(n % 4)]
    moves = await _rows(app_conn, tenant.id, "SELECT from_status, to_status, to_category "
                        "FROM work_item_transitions t JOIN work_items w ON w.id = "
                        "t.work_item_id WHERE w.key = $1 ORDER BY transitioned_at", row["key"])
    assert [tuple(m) for m in moves] == [("Open", "Completed", "done"),
                                         ("Completed", "Open", "todo")][: n % 3]
    due = await _rows(app_conn, tenant.id, "SELECT count(*) FROM work_items "
                      "WHERE due_at = '2025-04-01T00:00:00Z'")
    assert due[0][0] == 230 // 6


async def test_incremental_sync_picks_up_exactly_the_changes_with_stable_keys(
        asana: FakeAsana, make_tenant, admin_conn, app_conn, queries) -> None:
    order = _backfill(asana, 60)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, asana)
    await _sync(admin_conn, queries, source_id, page_size=25)
    before = {r["source_id"]: r["key"] for r in await _rows(
        app_conn, tenant.id, "SELECT source_id, key FROM work_items")}
    later = T0 + timedelta(hours=2)
    done, renamed = order[5], order[6]
    was_completed = asana.tasks[done]["completed"]
    asana.touch(done, at=later, completed=not was_completed)
    asana.touch(renamed, at=later + timedelta(minutes=1), name="Renamed", comment="new news")
    fresh = asana.add_task(A, "New one", modified=later + timedelta(minutes=2))
    asana.log.clear()
    asana.queries.clear()
    progress = await _sync(admin_conn, queries, source_id, page_size=25)
    listing = [q for (m, p), q in zip(asana.log, asana.queries, strict=True) if p == "/tasks"]
    assert len(listing) == 1 and listing[0]["modified_since"] == "2025-03-01T11:59:59.000Z"
    # The three changes and the task at the old cursor (read again, a second early).
    assert progress.items == 4 and progress.changed == 3
    rows = {r["source_id"]: r for r in await _rows(
        app_conn, tenant.id, "SELECT source_id, key, title, status, version FROM work_items")}
    assert len(rows) == 61
    assert {gid: rows[gid]["key"] for gid in before} == before  # no task renumbered
    assert rows[fresh]["key"] == "ASN-61" and rows[fresh]["version"] == 1
    assert rows[done]["status"] == ("Open" if was_completed else "Completed")
    assert (rows[renamed]["title"], rows[renamed]["version"]) == ("Renamed", 2)
    assert rows[done]["version"] == 2 and rows[order[-1]]["version"] == 1
    news = await _rows(app_conn, tenant.id, "SELECT count(*) FROM comments WHERE body = "
                       "'new news'")
    assert news[0][0] == 1
    # A full resync names every task as before and changes nothing.
    progress = await _sync(admin_conn, queries, source_id, full=True, page_size=25)
    assert progress.items == 61 and progress.changed == 0
    assert await _count(app_conn, tenant.id, "SELECT max(number) FROM work_items") == 61


class _ChangingWhileListed(FakeAsana):
    """Asana with changes made while a sync reads its task listing, after the first page."""

    change = None

    async def _tasks(self, request: web.Request) -> web.Response:
        if request.query.get("offset") and self.change is not None:
            change, self.change = self.change, None
            change()
        return await super()._tasks(request)


async def test_a_change_made_while_the_listing_is_read_is_synced_next_time(
        serve_fake, make_tenant, admin_conn, app_conn, queries) -> None:
    """Asana lists tasks in no order of modification: a task changed after its place in the
    listing was read, while a later one changed after it, is synced by the next sync."""
    fake = _ChangingWhileListed()
    fake.add_project(A, "Alpha")
    await serve_fake(fake, path="/api/1.0")
    gids = [fake.add_task(A, f"T{n}", modified=T0 - timedelta(hours=10 - n)) for n in range(4)]

    def change() -> None:  # T0 was on the first page of the listing, T3 is on the second
        now = datetime.now(UTC)
        fake.touch(gids[0], at=now, name="T0 changed")
        fake.touch(gids[3], at=now + timedelta(seconds=5), name="T3 changed")

    fake.change = change
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, fake)
    for _ in range(2):
        await _sync(admin_conn, queries, source_id, page_size=2)
    titles = {r["title"] for r in await _rows(app_conn, tenant.id, "SELECT title FROM work_items")}
    assert titles == {"T0 changed", "T1", "T2", "T3 changed"}


async def test_a_task_in_two_mirrored_projects_is_one_item_in_the_first(
        asana: FakeAsana, make_tenant, admin_conn, app_conn, queries) -> None:
    both = asana.add_task((B, A), "Shared", modified=T0)
    only_b = asana.add_task(B, "Beta only", modified=T0 - timedelta(hours=1))
    only_a = asana.add_task(A, "Alpha only", modified=T0 - timedelta(hours=2))
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, asana,
                           projects={A: "ASN", B: "BSN"})
    progress = await _sync(admin_conn, queries, source_id)
    assert progress.items == 3
    rows = {r["source_id"]: r["key"] for r in await _rows(
        app_conn, tenant.id, "SELECT source_id, key FROM work_items")}
    assert rows[both] == "ASN-2" and rows[only_b] == "BSN-1" and len(rows) == 3
    # Moved to the other mirrored project, a task is renumbered there, as a Jira move is.
    asana.tasks[only_a]["projects"] = [B]
    asana.touch(only_a, at=T0 + timedelta(hours=1))
    await _sync(admin_conn, queries, source_id)
    rows = {r["source_id"]: r["key"] for r in await _rows(
        app_conn, tenant.id, "SELECT source_id, key FROM work_items")}
    assert rows == {both: "ASN-2", only_b: "BSN-1", only_a: "BSN-2"}


async def test_subtasks_and_dependencies_are_keyed_whichever_comes_first(
        asana: FakeAsana) -> None:
    parent = asana.add_task(A, "Parent", modified=T0)
    child = asana.add_task(A, "Child", modified=T0 - timedelta(hours=1), parent=parent,
                           comments=2, moves=1)
    blocker = asana.add_task(A, "Blocker", modified=T0 + timedelta(hours=1))
    asana.tasks[blocker]["due_at"] = "2025-04-01T15:30:00.000Z"
    asana.tasks[child]["dependencies"].append(blocker)
    asana.tasks[blocker]["dependents"].append(child)
    adapter = _adapter(asana, page_size=1)
    pages = [p.items async for p in adapter.pages(since=None)]
    await adapter.close()
    assert [[i.key for i in items] for items in pages] == [["ASN-1"], ["ASN-2", "ASN-1"],
                                                           ["ASN-3"]]
    first_child, parent_item, child_again = pages[0][0], *pages[1]
    assert (first_child.type, first_child.parent_key, first_child.links) == ("subtask", None, [])
    # Four stories, one to a page: both comments and the completion are found.
    assert [c.body for c in first_child.comments] == ["c0", "c1"]
    assert [(t.to_status, t.actor) for t in first_child.transitions] == [("Completed", "Mover")]
    assert asana.log.count(("GET", f"/tasks/{child}/stories")) == 4
    assert pages[2][0].due == datetime(2025, 4, 1, 15, 30, tzinfo=UTC)
    assert child_again.source_id == child and child_again.parent_key == parent_item.key
    assert [(link.link_type, link.other_key, link.outward) for link in pages[2][0].links] == [
        ("blocks", "ASN-1", True)]


async def test_429_and_5xx_are_retried_honouring_retry_after(
        asana: FakeAsana, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(asana, 5)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, asana)
    asana.faults = [(429, {"Retry-After": "1"}), (503, {}), (502, {})]
    started = datetime.now(UTC)
    progress = await _sync(admin_conn, queries, source_id)
    assert progress.items == 5
    assert (datetime.now(UTC) - started).total_seconds() >= 1.0  # waited as asked
    assert asana.log.count(("GET", "/tasks")) == 4
    asana.faults = [(503, {})] * 3
    with pytest.raises(SourceError, match="503 after 3 attempts: Server Error") as info:
        await _sync(admin_conn, queries, source_id, retries=2)
    assert info.value.kind == "server"


async def test_bad_credentials_stop_the_sync_with_one_clear_line(
        asana: FakeAsana, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(asana, 3)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, asana, token="wrong-token")
    with pytest.raises(SourceError, match="refused the credentials") as info:
        await _sync(admin_conn, queries, source_id)
    assert "wrong-token" not in str(info.value) and "\n" not in str(info.value)
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 0


async def test_a_sync_killed_half_way_resumes_without_duplicates_or_gaps(
        asana: FakeAsana, make_tenant, admin_conn, app_conn, queries) -> None:
    order = _backfill(asana, 100)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, asana)
    asana.broken_task = order[44]  # in the third page of 20
    with pytest.raises(SourceError, match="500"):
        await _sync(admin_conn, queries, source_id, page_size=20, retries=1)
    count_sql = "SELECT count(*) FROM work_items"
    assert await _count(app_conn, tenant.id, count_sql) == 40  # pages 1 and 2 committed
    async with admin_conn.transaction():
        row = await manage.find_source(admin_conn, queries, source_id)
    cursor = orjson.loads(row["sync_cursor"])["updated"]
    assert datetime.fromisoformat(cursor) == datetime.fromisoformat(
        asana.tasks[order[39]]["modified_at"])
    asana.broken_task = None
    progress = await _sync(admin_conn, queries, source_id, page_size=20)
    assert progress.items == 61  # from the cursor's task on
    rows = await _rows(app_conn, tenant.id, "SELECT source_id, number FROM work_items "
                                            "ORDER BY number")
    assert [r["source_id"] for r in rows] == order
    assert [r["number"] for r in rows] == list(range(1, 101))
    expected = sum(n % 4 for n in range(1, 101)), sum(n % 3 for n in range(1, 101))
    assert (await _count(app_conn, tenant.id, "SELECT count(*) FROM comments"),
            await _count(app_conn, tenant.id,
                         "SELECT count(*) FROM work_item_transitions")) == expected


async def test_another_tenant_never_sees_synced_items_or_sources(
        asana: FakeAsana, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(asana, 10)
    owner, other = await make_tenant(), await make_tenant()
    source_id = await _add(admin_conn, queries, owner.id, asana)
    await _sync(admin_conn, queries, source_id)
    assert await _count(app_conn, owner.id, "SELECT count(*) FROM work_items") == 10
    for sql in ("SELECT count(*) FROM work_items", "SELECT count(*) FROM comments",
                "SELECT count(*) FROM work_item_transitions", "SELECT count(*) FROM projects",
                "SELECT count(*) FROM source_instances"):
        assert await _count(app_conn, other.id, sql) == 0, sql
    async with admin_conn.transaction():
        assert await manage.list_sources(admin_conn, queries, other.id) == []
        mine = await manage.list_sources(admin_conn, queries, owner.id)
    assert len(mine) == 1 and mine[0]["kind"] == "asana" and mine[0]["has_credentials"]
    assert asana.token not in orjson.dumps(mine, default=str).decode()


# --- writes ----------------------------------------------------------------------------------
def _draft(**changes) -> Draft:
    return Draft(**{"title": "Write me", "description": "Some **notes**", "type": "bug",
                    "priority": "high", "assignee": "ann@example.com", "labels": ["ux"],
                    "due": date(2025, 7, 1), "parent": None, **changes})


async def test_create_and_update_write_through_and_answer_as_asana_has_it(
        asana: FakeAsana) -> None:
    asana.tag("ux")
    adapter = _adapter(asana)
    adapter.use_keys([("1999", "ASN", 7)], {"ASN": 5})
    item = await adapter.create(A, _draft())
    task = asana.tasks[item.source_id]
    assert (item.key, item.number, item.project_key) == ("ASN-8", 8, "ASN")
    assert (item.title, item.description, item.type, item.priority) == (
        "Write me", "Some **notes**", "bug", "high")
    assert (item.status, item.status_category, item.assignee) == ("Open", "todo",
                                                                  "ann@example.com")
    assert item.labels == ["ux", "bug"] and item.reporter == "bot@example.com"
    assert item.due == datetime(2025, 7, 1, tzinfo=UTC)
    assert len(asana.tags) == 2  # "ux" reused, "bug" created once
    assert task["priority"] == "High" and task["projects"] == [A]
    other = await adapter.create(A, _draft(title="Parent", type="task", labels=[],
                                           priority="none", assignee=None, due=None))
    assert (other.key, other.type, other.labels, other.priority) == ("ASN-9", "task", [], "none")
    ref = Ref(item.source_id, item.key, A)
    updated = await adapter.update(ref, {
        "title": "Rewritten", "description": None, "priority": "low", "assignee": None,
        "labels": ["ux", "later"], "due": None,
        "parent": Ref(other.source_id, other.key, A)})
    assert (updated.key, updated.title, updated.description, updated.priority) == (
        "ASN-8", "Rewritten", None, "low")
    assert (updated.assignee, updated.due, updated.parent_key) == (None, None, "ASN-9")
    assert updated.labels == ["ux", "later"] and updated.type == "subtask"
    assert updated.updated > item.updated
    cleared = await adapter.update(ref, {"parent": None, "priority": "none"})
    assert (cleared.parent_key, cleared.type, cleared.priority) == (None, "task", "none")
    await adapter.close()


async def test_a_failure_after_asana_took_part_of_a_write_is_ambiguous(asana: FakeAsana) -> None:
    """A create read back, or an update's tags set after its fields: once Asana took a request
    of the write, a failure says the change may be there. One before that stays plain."""
    task = asana.add_task(A, "Only", modified=T0)
    adapter = _adapter(asana)
    created = str(asana._next_gid + 1)
    asana.faults_at[("GET", f"/tasks/{created}")] = [(404, {})]
    with pytest.raises(SourceError, match="may have reached") as info:
        await adapter.create(A, _draft(labels=[], type="task"))
    assert (info.value.kind, info.value.ambiguous) == ("not_found", True)
    assert asana.tasks[created]["name"] == "Write me"
    ref = Ref(task, "ASN-1", A)
    asana.faults_at[("POST", f"/tasks/{task}/addTag")] = [(403, {})]
    with pytest.raises(SourceError, match="may have reached") as info:
        await adapter.update(ref, {"title": "Renamed", "labels": ["ux"]})
    assert (info.value.kind, info.value.ambiguous) == ("forbidden", True)
    assert asana.tasks[task]["name"] == "Renamed"
    asana.faults_at[("PUT", f"/tasks/{task}")] = [(403, {})]
    with pytest.raises(SourceError) as info:
        await adapter.update(ref, {"title": "Again", "labels": ["ux"]})
    await adapter.close()
    assert (info.value.kind, info.value.ambiguous) == ("forbidden", False)


async def test_priority_without_a_priority_field(asana: FakeAsana) -> None:
    adapter = _adapter(asana, {BARE: "BAR"})
    item = await adapter.create(BARE, _draft(labels=[], type="task", priority="medium"))
    assert item.priority == "none"  # sent no custom_fields: the fake refuses them here
    with pytest.raises(SourceError, match="project 1200000000000003 has no Priority field") as info:
        await adapter.update(Ref(item.source_id, item.key, BARE), {"priority": "high"})
    assert info.value.kind == "unsupported"
    assert (await adapter.update(Ref(item.source_id, item.key, BARE),
                                 {"priority": "none"})).priority == "none"
    await adapter.close()


async def test_transition_comment_and_link(asana: FakeAsana) -> None:
    first = asana.add_task(A, "First", modified=T0)
    second = asana.add_task(A, "Second", modified=T0)
    # Writes to known tasks take their keys from the refs: no stored keys needed.
    adapter = AsanaAdapter(asana.base_url, token=asana.token, projects={A: "ASN"}, **FAST)
    ref = Ref(first, "ASN-1", A)
    done = await adapter.transition(ref, "completed")
    assert (done.status, done.status_category, done.resolved is not None) == (
        "Completed", "done", True)
    assert [(t.from_status, t.to_status, t.actor) for t in done.transitions] == [
        ("Open", "Completed", "bot@example.com")]
    reopened = await adapter.transition(ref, "Open")
    assert (reopened.status, reopened.resolved, len(reopened.transitions)) == ("Open", None, 2)
    with pytest.raises(SourceError, match="not 'In Progress'") as info:
        await adapter.transition(ref, "In Progress")
    assert info.value.kind == "unsupported"
    comment = await adapter.comment(ref, "Looks *good*")
    assert (comment.body, comment.author) == ("Looks *good*", "bot@example.com")
    assert comment.source_id == asana.stories[first][-1]["gid"]
    asana.log.clear()
    assert await adapter.link(ref, Ref(second, "ASN-2", A), "blocks") is True
    assert asana.tasks[second]["dependencies"] == [first]
    assert await adapter.link(ref, Ref(second, "ASN-2", A), "relates") is False
    assert asana.log == [("POST", f"/tasks/{second}/addDependencies")]
    blocked = await adapter.update(Ref(second, "ASN-2", A), {})
    assert [(k.link_type, k.other_key, k.outward) for k in blocked.links] == [
        ("blocks", "ASN-1", False)]
    await adapter.close()


async def test_refusals_carry_asanas_message(asana: FakeAsana) -> None:
    task = asana.add_task(A, "Only", modified=T0)
    adapter = _adapter(asana)
    with pytest.raises(SourceError, match=r"assignee: Not a recognized ID: nobody@x\.io") as info:
        await adapter.create(A, _draft(assignee="nobody@x.io", labels=[], type="task"))
    assert (info.value.kind, info.value.status) == ("bad_response", 400)
    with pytest.raises(SourceError, match="text: Missing input"):
        await adapter.comment(Ref(task, "ASN-1", A), " ")
    with pytest.raises(SourceError, match="Unknown object: 404404") as info:
        await adapter.transition(Ref("404404", "ASN-1", A), "Completed")
    assert info.value.kind == "not_found"
    with pytest.raises(SourceError, match="not mirrored"):
        await adapter.create(B, _draft())
    await adapter.close()
