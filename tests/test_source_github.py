"""The GitHub source: normalisation, the adapter against a fake GitHub speaking the real wire
format, the resumable sync across several repositories, and every write (issue 7)."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from spiral_mcp.sources import manage
from spiral_mcp.sources.base import Draft, Item, Ref, SourceError
from spiral_mcp.sources.github import (
    CLOSED,
    NOT_PLANNED,
    OPEN,
    GitHubAdapter,
    priority_labels,
    status_for,
    type_labels,
)
from spiral_mcp.sources.github_graphql import graphql_url
from spiral_mcp.sources.secrets import SecretBox
from tests.fake_github import FakeGitHub
from tests.fake_github_graphql import GraphQLError, cost_of, parse

BOX = SecretBox(b"x" * 43 + b"=")
FAST = {"backoff": 0.01, "max_backoff": 0.05, "rate": 1000.0, "timeout": 5.0}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WEB = {"octo/web": "WEB"}


# --- normalisation ---------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "reason", "expected"), [
    ("open", None, OPEN), ("open", "reopened", OPEN), ("closed", "completed", CLOSED),
    ("closed", None, CLOSED), ("closed", "not_planned", NOT_PLANNED),
    ("closed", "duplicate", NOT_PLANNED),
])
def test_status(state: str, reason: str | None, expected: tuple[str, str]) -> None:
    assert status_for(state, reason) == expected


@pytest.mark.parametrize(("labels", "expected"), [
    (["priority: critical"], "critical"), (["Priority: High"], "high"),
    (["priority/medium"], "medium"), (["priority-low"], "low"), (["prio:urgent"], "critical"),
    (["priority normal"], "medium"), (["P0"], "critical"), (["p1"], "high"), (["P2"], "medium"),
    (["P3"], "low"), (["critical"], "critical"), (["urgent"], "critical"),
    (["bug", "P3", "priority: high"], "high"), ([], "none"), (["bug", "ui"], "none"),
    (["P7", "priority: whenever", "highest"], "none"),
])
def test_priority_from_labels(labels: list[str], expected: str) -> None:
    assert priority_labels().pick(labels) == expected


@pytest.mark.parametrize(("labels", "issue_type", "expected"), [
    (["bug"], None, "bug"), (["Enhancement"], None, "feature"), (["feature"], None, "feature"),
    (["type: epic"], None, "epic"), (["Type: User Story"], None, "story"),
    (["story"], None, "story"), (["task"], None, "task"), (["defect"], None, "bug"),
    ([], None, "task"), (["question"], None, "task"), (["enhancement", "bug"], None, "bug"),
    (["bug", "epic"], None, "epic"), (["bug"], "Feature", "feature"), ([], "Bug", "bug"),
    (["story"], "Initiative", "story"),
])
def test_type_from_issue_type_or_labels(labels: list[str], issue_type: str | None,
                                        expected: str) -> None:
    assert type_labels().pick(labels, first=issue_type) == expected


def test_label_overrides_read_first_and_are_written() -> None:
    priorities = priority_labels({"Sev 1": "critical", "sev 2": "high", "P1": "critical"})
    assert priorities.pick(["SEV 1"]) == "critical" and priorities.pick(["p1"]) == "critical"
    assert priorities.pick(["sev 2", "P3"]) == "high"
    assert priorities.relabel(["ui", "Sev 1"], "high") == ["ui", "sev 2"]
    assert priorities.relabel(["ui"], "low") == ["ui", "priority: low"]
    types = type_labels({"kind/regression": "bug"})
    assert types.pick(["kind/regression", "enhancement"]) == "bug"
    with pytest.raises(SourceError, match="unknown values: urgent") as info:
        priority_labels({"hot": "urgent"})
    assert info.value.kind == "config"


def test_relabel_swaps_only_the_fields_labels() -> None:
    priorities = priority_labels()
    assert priorities.relabel(["ui", "P1", "priority: low", "bug"], "critical") == [
        "ui", "bug", "priority: critical"]
    assert priorities.relabel(["ui", "P1"], "none") == ["ui"]
    assert type_labels().relabel(["ui", "bug"], "feature") == ["ui", "enhancement"]
    assert type_labels().relabel(["ui", "bug"], "task") == ["ui"]


@pytest.mark.parametrize(("ref", "valid"), [
    ("octo-org/web", True), ("a/b.c_d-e", True), ("Octo/.github", True), ("octo", False),
    ("octo/web/x", False), ("-octo/web", False), ("octo/..", False), ("octo/.", False),
    ("octo/we b", False), ("octo/web?x=1", False), ("../web", False), ("octo/%2e%2e", False),
])
def test_project_references(ref: str, valid: bool) -> None:
    adapter = manage.adapter_class("github")
    assert adapter is GitHubAdapter
    if valid:
        assert manage.parse_project_map([f"{ref}=LOC"], adapter) == {ref: "LOC"}
    else:
        with pytest.raises(manage.SourceAdminError, match="octo-org/web"):
            manage.parse_project_map([f"{ref}=LOC"], adapter)


# --- against the fake GitHub -----------------------------------------------------------------
@pytest.fixture
async def github(serve_fake) -> FakeGitHub:
    return await serve_fake(FakeGitHub())


def _backfill(fake: FakeGitHub, repo: str, count: int, *, end: datetime = T0,
              step: timedelta = timedelta(hours=1), prs: bool = True) -> None:
    """``count`` issues "Issue n" updated ``step`` apart up to ``end``, with a pull request after
    every fifth. Issue n: closed when n % 3 == 0 (as not planned when n % 6 == 0), closed and
    reopened n % 2 times before that, n % 4 comments, labels x, P(n % 4) and bug or enhancement."""
    for n in range(1, count + 1):
        at = end - step * (count - n)
        closed = n % 3 == 0
        fake.add_issue(repo, title=f"Issue {n}", updated=at, state="closed" if closed else "open",
                       state_reason=("not_planned" if n % 6 == 0 else "completed")
                       if closed else None,
                       labels=("x", f"P{n % 4}", "bug" if n % 2 else "enhancement"),
                       assignees=("alice",) if n % 2 else (), comments=n % 4, reopens=n % 2,
                       milestone_due=T0 + timedelta(days=n) if n % 10 == 0 else None)
        if prs and n % 5 == 0:
            fake.add_issue(repo, title=f"PR after {n}", updated=at, pull_request=True,
                           comments=1, labels=("bug",))


def _moves(count: int) -> int:
    return sum(2 * (n % 2) + (n % 3 == 0) for n in range(1, count + 1))


def _comments(count: int) -> int:
    return sum(n % 4 for n in range(1, count + 1))


def _number(fake: FakeGitHub, repo: str, title: str) -> int:
    return next(n for n, i in fake.issues[repo].items() if i["title"] == title)


def _adapter(fake: FakeGitHub, projects: dict[str, str] = WEB, **options) -> GitHubAdapter:
    return GitHubAdapter(fake.base_url, token=fake.token, projects=projects,
                         **{**FAST, **options})


async def _add(admin_conn: asyncpg.Connection, queries, tenant_id, fake: FakeGitHub, *,
               projects: dict[str, str] = WEB, token: str | None = None) -> object:
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind="github",
            name=f"github {os.urandom(3).hex()}", base_url=fake.base_url, projects=projects,
            token=token or fake.token)


async def _fetch(conn: asyncpg.Connection, tenant_id, sql: str) -> list[asyncpg.Record]:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetch(sql)


async def _count(conn: asyncpg.Connection, tenant_id, sql: str) -> int:
    return (await _fetch(conn, tenant_id, sql))[0][0]


async def _cursor(admin_conn: asyncpg.Connection, queries, source_id) -> datetime:
    async with admin_conn.transaction():
        row = await manage.find_source(admin_conn, queries, source_id)
    return datetime.fromisoformat(orjson.loads(row["sync_cursor"])["updated"])


async def test_check_signs_in_and_finds_the_repositories(github: FakeGitHub) -> None:
    _backfill(github, "octo/web", 1)
    github.repos["octo/off"] = False
    good = _adapter(github)
    assert await good.check() == "sync-bot"
    await good.close()
    assert github.accepts == {"application/vnd.github+json"}
    bad = GitHubAdapter(github.base_url, token="ghp_wrong", projects=WEB, **FAST)
    with pytest.raises(SourceError) as info:
        await bad.check()
    await bad.close()
    message = str(info.value)
    assert info.value.kind == "auth" and "401" in message and "Bad credentials" in message
    assert "ghp_wrong" not in message and "\n" not in message
    for projects, kind, words in [
            ({"octo/nope": "NOPE"}, "not_found", "octo/nope does not exist or is not visible"),
            ({"octo/off": "OFF"}, "config", "octo/off has issues turned off")]:
        adapter = _adapter(github, projects)
        with pytest.raises(SourceError, match=words) as info:
            await adapter.check()
        await adapter.close()
        assert info.value.kind == kind


async def test_full_backfill_over_many_pages_leaves_pull_requests_out(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(github, "octo/web", 230)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github)
    seen: list[int] = []
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=50,
                                     on_page=lambda p: seen.append(p.items), **FAST)
    assert progress.items == 230 and progress.changed == 230
    assert seen == [50, 100, 150, 200, 230]
    # 230 issues (the 46 pull requests are not in GraphQL's list) in pages of 50, each next one
    # from the last update read: 50 + 4 x 49 new issues. Each query is 1 + 3 x 50 requests by
    # GitHub's count, 2 points; no request per issue, none to REST.
    assert github.list_requests["octo/web"] == 5
    assert github.charges() == {"requests": 5, "rest": 0, "graphql_points": 10}
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM work_items "
                                             "WHERE source = 'github'") == 230
    pr_ids = [str(i["id"]) for i in github.issues["octo/web"].values() if "pull_request" in i]
    stored = {r["source_id"] for r in await _fetch(app_conn, tenant.id,
                                                   "SELECT source_id FROM work_items")}
    assert not stored & set(pr_ids)
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM comments") == _comments(230)
    assert await _count(app_conn, tenant.id,
                        "SELECT count(*) FROM work_item_transitions") == _moves(230)

    rows = {r["title"]: r for r in await _fetch(app_conn, tenant.id, "SELECT * FROM work_items")}
    ten, nine, six = rows["Issue 10"], rows["Issue 9"], rows["Issue 6"]
    issue = github.issue("octo/web", _number(github, "octo/web", "Issue 10"))
    assert ten["key"] == f"WEB-{issue['number']}" and ten["source_id"] == str(issue["id"])
    assert (ten["status"], ten["status_category"], ten["resolved_at"]) == ("Open", "todo", None)
    assert (ten["priority"], ten["type"], ten["assignee"]) == ("medium", "feature", None)
    assert ten["labels"] == ["x", "P2", "enhancement"] and ten["reporter"] == "rita"
    assert ten["due_at"] == T0 + timedelta(days=10) and ten["description"] == "About Issue 10."
    assert ten["number"] == issue["number"] and ten["parent_key"] is None
    assert (nine["status"], nine["status_category"]) == ("Closed", "done")
    assert nine["resolved_at"] is not None and nine["assignee"] == "alice"
    assert (nine["priority"], nine["type"]) == ("high", "bug")
    assert (six["status"], six["status_category"]) == ("Not planned", "cancelled")
    moves = await _fetch(app_conn, tenant.id,
                         "SELECT from_status, to_status, to_category, actor "
                         "FROM work_item_transitions WHERE work_item_id = "
                         f"{nine['id']} ORDER BY transitioned_at")
    assert [tuple(m) for m in moves] == [("Open", "Closed", "done", "mover"),
                                         ("Closed", "Open", "todo", "mover"),
                                         ("Open", "Closed", "done", "mover")]
    project = (await _fetch(app_conn, tenant.id,
                            "SELECT * FROM projects WHERE project_key = 'WEB'"))[0]
    assert project["source_ref"] == "octo/web" and project["source_instance_id"] == source_id
    assert project["next_number"] == len(github.issues["octo/web"])  # the last is a PR
    statuses = await _fetch(app_conn, tenant.id, "SELECT status, category, is_initial FROM "
                            "workflow_statuses WHERE project_key = 'WEB' ORDER BY position")
    assert {tuple(s) for s in statuses} == {("Open", "todo", True), ("Closed", "done", False),
                                            ("Not planned", "cancelled", False)}
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM workflow_transitions "
                                             "WHERE project_key = 'WEB'") == 4


async def test_a_timeline_longer_than_its_first_page_is_read_on(github: FakeGitHub) -> None:
    """120 comments and 120 moves: the issue's page brings 50 of its timeline, two follow-ups
    of 100 the rest, each from the cursor the one before ended at."""
    github.add_issue("octo/web", title="Chatty", updated=T0, comments=120, reopens=60)
    adapter = _adapter(github, page_size=50)
    items = [item async for page in adapter.pages(since=None) for item in page.items]
    await adapter.close()
    assert len(items) == 1 and len(items[0].comments) == 120 and len(items[0].transitions) == 120
    assert [c.body for c in items[0].comments[:3]] == ["c0", "c1", "c2"]
    assert [c.source_id for c in items[0].comments] == [
        str(c["id"]) for c in github.comments[github.issue("octo/web", 1)["id"]]]
    assert items[0].transitions[-1].to_status == "Open"
    assert [t.at for t in items[0].transitions] == sorted(t.at for t in items[0].transitions)
    assert github.log == [("POST", "/graphql")] * 3
    follow_ups = [variables for _, _, variables in github.graphql_log[1:]]
    assert [v["id0"] for v in follow_ups] == [github.issue("octo/web", 1)["node_id"]] * 2
    assert follow_ups[0]["after0"] != follow_ups[1]["after0"]
    # GitHub's charge: the page of 50, 1 + 3 x 50 requests (2 points); a follow-up, 1 request.
    assert [cost for cost, _, _ in github.graphql_log] == [2, 1, 1]
    assert adapter.points == github.points == 4


async def test_long_timelines_of_a_page_are_read_on_fifty_issues_a_query(
        github: FakeGitHub) -> None:
    """A page of 100 issues, 70 of them with more than the 50 timeline entries that come with
    each: their second pages come in two queries (50 issues, then 20), only theirs."""
    for n in range(1, 101):
        github.add_issue("octo/web", title=f"Issue {n}", updated=T0 + timedelta(minutes=n),
                         comments=60 if n <= 70 else 3)
    adapter = _adapter(github)
    items = [item async for page in adapter.pages(since=None) for item in page.items]
    await adapter.close()
    assert [len(i.comments) for i in items] == [60] * 70 + [3] * 30
    assert len(github.graphql_log) == 3
    assert [len(v) // 2 for _, _, v in github.graphql_log[1:]] == [50, 20]
    wanted = {github.issue("octo/web", n)["node_id"] for n in range(1, 71)}
    assert {v[f"id{k}"] for _, _, v in github.graphql_log[1:] for k in range(len(v) // 2)} \
        == wanted
    # GitHub's charge: the page 1 + 3 x 100 requests (3 points), each follow-up one request a
    # timeline (50 and 20: 1 point each).
    assert [cost for cost, _, _ in github.graphql_log] == [3, 1, 1]


async def test_blank_comments_and_bodies_are_left_out(github: FakeGitHub) -> None:
    issue = github.add_issue("octo/web", title="Quiet", updated=T0, comments=2)
    github.comments[issue["id"]][0]["body"] = "  "
    issue["body"] = None
    adapter = _adapter(github, page_size=1)
    [page] = [page async for page in adapter.pages(since=None)]
    await adapter.close()
    assert [c.body for c in page.items[0].comments] == ["c1"]
    assert page.items[0].description is None


async def test_incremental_sync_picks_up_exactly_the_changes(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(github, "octo/web", 60)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github)
    await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert await _cursor(admin_conn, queries, source_id) == T0
    later = T0 + timedelta(hours=2)
    number = _number(github, "octo/web", "Issue 7")
    github.update_issue("octo/web", number, at=later, state="closed", state_reason="completed")
    github.update_issue("octo/web", _number(github, "octo/web", "Issue 8"),
                        at=later + timedelta(minutes=1), title="Renamed")
    github.update_issue("octo/web", _number(github, "octo/web", "Issue 11"),
                        at=later + timedelta(minutes=2), comment="A new comment")
    github.add_issue("octo/web", title="New one", updated=later + timedelta(minutes=3))
    github.update_issue("octo/web", _number(github, "octo/web", "PR after 10"),
                        at=later + timedelta(minutes=4), title="A changed pull request")
    github.log.clear()
    github.list_requests.clear()
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert github.list_requests["octo/web"] == 1 and github.log == [("POST", "/graphql")]
    # The four changes and Issue 60, at the old cursor (since is inclusive).
    assert progress.items == 5 and progress.changed == 4
    assert await _cursor(admin_conn, queries, source_id) == later + timedelta(minutes=3)
    rows = {r["title"]: r for r in await _fetch(
        app_conn, tenant.id, "SELECT id, title, status, version FROM work_items")}
    assert len(rows) == 61 and "A changed pull request" not in rows
    assert (rows["Issue 7"]["status"], rows["Issue 7"]["version"]) == ("Closed", 2)
    assert rows["Renamed"]["version"] == 2 and rows["Issue 11"]["version"] == 2
    assert rows["Issue 60"]["version"] == 1 and rows["New one"]["version"] == 1
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM comments WHERE work_item_id = "
                                             f"{rows['Issue 11']['id']}") == 11 % 4 + 1
    # Issue 7 was closed and reopened at backfill; one more move now, none twice.
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM work_item_transitions "
                                             f"WHERE work_item_id = {rows['Issue 7']['id']}") == 3


def _two_repos(fake: FakeGitHub) -> None:
    """Two repositories whose updates interleave: web on the even hours, api on the odd ones."""
    _backfill(fake, "octo/web", 15, step=timedelta(hours=2))
    _backfill(fake, "octo/api", 15, end=T0 - timedelta(hours=1), step=timedelta(hours=2))


async def test_several_repositories_are_merged_oldest_update_first(github: FakeGitHub) -> None:
    _two_repos(github)
    adapter = _adapter(github, {"octo/web": "WEB", "octo/api": "API"}, page_size=4)
    pages = [page async for page in adapter.pages(since=None)]
    await adapter.close()
    items = [item for page in pages for item in page.items]
    assert [len(p.items) for p in pages] == [4] * 7 + [2]
    assert [i.updated for i in items] == sorted(i.updated for i in items)
    assert [i.project_key for i in items[:4]] == ["API", "WEB", "API", "WEB"]
    assert len({i.key for i in items}) == 30


# --- changes while a sync reads --------------------------------------------------------------
def _change_on_list_request(fake: FakeGitHub, request: int, title: str, new_title: str) -> None:
    """Just before the ``request``-th list request, ``title`` changes (so it moves to the end)."""
    fake.before_list[request] = lambda: fake.update_issue(
        "octo/web", _number(fake, "octo/web", title), at=fake.tick(), title=new_title)


async def _read_all(adapter: GitHubAdapter) -> list[Item]:
    items = [item async for page in adapter.pages(since=None) for item in page.items]
    await adapter.close()
    return items


async def test_an_issue_changed_mid_sync_shifts_no_other_out_of_it(github: FakeGitHub) -> None:
    """After page 1 was read, Issue 2 changes: it leaves its place for the end, and Issue 4
    slips back across the boundary onto page 1; Issue 9, not read yet, changes too. Every issue
    is read, the changed ones at their new version, and no version twice."""
    _backfill(github, "octo/web", 12, prs=False)
    _change_on_list_request(github, 2, "Issue 2", "Moved")
    _change_on_list_request(github, 3, "Issue 9", "Moved too")
    items = await _read_all(_adapter(github, page_size=3))
    assert sorted(i.title for i in items) == sorted(
        [*(f"Issue {n}" for n in range(1, 13) if n != 9), "Moved", "Moved too"])
    assert len({(i.source_id, i.updated) for i in items}) == len(items)
    assert [i.updated for i in items] == sorted(i.updated for i in items)
    assert [i.title for i in items[-2:]] == ["Moved", "Moved too"]


async def test_more_than_a_page_of_issues_in_one_second_all_arrive_once(
        github: FakeGitHub) -> None:
    """``since`` cannot get past a second that fills a page: the pages of that second are
    followed by number, then read once more (nothing new: nothing changed), and the read ends."""
    for n in range(1, 26):
        github.add_issue("octo/web", title=f"Bulk {n}", updated=T0)
    github.add_issue("octo/web", title="After", updated=T0 + timedelta(seconds=1))
    items = await _read_all(_adapter(github, page_size=10))
    assert sorted(i.title for i in items) == sorted(
        [*(f"Bulk {n}" for n in range(1, 26)), "After"])
    assert github.list_requests["octo/web"] == 3 + 3


async def test_an_issue_changed_while_one_second_is_read_by_number_shifts_none_out(
        github: FakeGitHub) -> None:
    """25 issues share a second, so its pages are followed by number. Bulk 3, read on page 1,
    changes before page 2 and leaves its place for the end: Bulk 11 slips back onto page 1 and
    page 2 starts at Bulk 12. Before anything later, the second is read again: Bulk 11 comes,
    still oldest update first, and no version twice."""
    for n in range(1, 26):
        github.add_issue("octo/web", title=f"Bulk {n}", updated=T0)
    github.add_issue("octo/web", title="After", updated=T0 + timedelta(seconds=1))
    _change_on_list_request(github, 2, "Bulk 3", "Bulk 3 moved")
    items = await _read_all(_adapter(github, page_size=10))
    assert sorted(i.title for i in items) == sorted(
        [*(f"Bulk {n}" for n in range(1, 26) if n != 3), "Bulk 3", "Bulk 3 moved", "After"])
    assert len({(i.source_id, i.updated) for i in items}) == len(items)
    assert [i.updated for i in items] == sorted(i.updated for i in items)
    assert [i.title for i in items[-2:]] == ["After", "Bulk 3 moved"]


async def test_a_sync_stores_an_issue_changed_mid_way_and_the_one_it_shifted(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(github, "octo/web", 12, prs=False)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github)
    _change_on_list_request(github, 2, "Issue 2", "Moved")
    await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=3, **FAST)
    rows = {r["title"]: r for r in await _fetch(app_conn, tenant.id,
                                                "SELECT title, version FROM work_items")}
    assert sorted(rows) == sorted([*(f"Issue {n}" for n in range(1, 13) if n != 2), "Moved"])
    assert rows["Moved"]["version"] == 2 and rows["Issue 4"]["version"] == 1
    assert await _cursor(admin_conn, queries, source_id) == github.clock


async def test_a_change_to_a_repository_already_read_is_synced_next_time(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    """Repositories are read one after another: an issue of one already read that changes while
    another is still read (and changes later again) is synced by the next sync."""
    github.add_issue("octo/api", title="API 1", updated=T0 - timedelta(hours=10))
    for n in range(1, 6):
        github.add_issue("octo/web", title=f"Web {n}", updated=T0 - timedelta(hours=8 - n))

    def change() -> None:  # while the sync reads web's second page; api was read whole
        now = datetime.now(UTC).replace(microsecond=0)
        github.update_issue("octo/api", 1, at=now, title="API 1 changed")
        github.update_issue("octo/web", 5, at=now + timedelta(seconds=5), title="Web 5 changed")

    github.before_list[3] = change
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github,
                           projects={"octo/web": "WEB", "octo/api": "API"})
    for _ in range(2):
        await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=2, **FAST)
    titles = {r["title"] for r in await _fetch(app_conn, tenant.id,
                                               "SELECT title FROM work_items")}
    assert titles == {"API 1 changed", "Web 1", "Web 2", "Web 3", "Web 4", "Web 5 changed"}


async def test_a_sync_killed_half_way_resumes_without_duplicates_or_gaps(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(github, "octo/web", 100, prs=False)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github)
    # Requests 2 and 3 ask again from the last issue read, so each brings 19 new ones: the
    # fourth is the one after the second page of 20 is complete.
    github.broken_list = ("octo/web", 4)
    with pytest.raises(SourceError, match="500"):
        await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=20, retries=1,
                              **FAST)
    count_sql = "SELECT count(*) FROM work_items WHERE source = 'github'"
    assert await _count(app_conn, tenant.id, count_sql) == 40  # pages 1 and 2 committed
    assert await _cursor(admin_conn, queries, source_id) == T0 - timedelta(hours=60)  # Issue 40
    github.broken_list = None
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=20, **FAST)
    assert progress.items == 61  # from Issue 40 (the cursor) on
    assert await _count(app_conn, tenant.id, count_sql) == 100
    assert await _count(app_conn, tenant.id, "SELECT count(DISTINCT source_id) FROM work_items "
                                             "WHERE source = 'github'") == 100
    assert await _count(app_conn, tenant.id,
                        "SELECT count(*) FROM work_item_transitions") == _moves(100)
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM comments") == _comments(100)


async def test_a_sync_of_two_repositories_killed_half_way_leaves_no_gap(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    _two_repos(github)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github,
                           projects={"octo/web": "WEB", "octo/api": "API"})
    github.broken_list = ("octo/api", 2)
    with pytest.raises(SourceError, match="500"):
        await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=4, retries=1,
                              **FAST)
    cursor = await _cursor(admin_conn, queries, source_id)
    stored = {r["source_id"] for r in await _fetch(app_conn, tenant.id,
                                                   "SELECT source_id FROM work_items")}
    issues = [i for repo in github.issues.values() for i in repo.values()
              if "pull_request" not in i]
    # Every issue up to the cursor is stored, so resuming from the cursor leaves none out.
    assert 0 < len(stored) < 30
    assert {str(i["id"]) for i in issues if datetime.fromisoformat(i["updated_at"]) <= cursor} \
        <= stored
    github.broken_list = None
    await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=4, **FAST)
    assert await _count(app_conn, tenant.id, "SELECT count(DISTINCT source_id) FROM work_items "
                                             "WHERE source = 'github'") == 30
    assert await _count(app_conn, tenant.id,
                        "SELECT count(*) FROM work_item_transitions") == 2 * _moves(15)


async def test_rate_limits_and_5xx_are_retried_as_github_asks(
        github: FakeGitHub, make_tenant, admin_conn, queries) -> None:
    _backfill(github, "octo/web", 5)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github)
    # A secondary limit (429, Retry-After 1), the primary one (403, remaining 0 until reset),
    # then a 502: the first page is asked four times.
    github.faults = [(429, {"retry-after": "1"}),
                     (403, {"x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000",
                            "x-ratelimit-reset": str(int(time.time()) + 1)}),
                     (502, {})]
    started = time.monotonic()
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert progress.items == 5
    assert time.monotonic() - started >= 1.0  # waited as asked
    assert github.log.count(("POST", "/graphql")) == 4
    github.faults = [(503, {})] * 3
    with pytest.raises(SourceError, match="503 after 3 attempts") as info:
        await manage.run_sync(admin_conn, queries, BOX, source_id, retries=2, **FAST)
    assert info.value.kind == "server"


async def test_a_primary_limit_that_resets_too_late_fails_at_once_naming_the_reset(
        github: FakeGitHub) -> None:
    reset = int(time.time()) + 3600
    github.faults = [(403, {"x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000",
                            "x-ratelimit-reset": str(reset)})] * 5
    waits: list[float] = []
    adapter = _adapter(github, max_retry_after=60, sleep=_recording(waits))
    with pytest.raises(SourceError, match="API rate limit exceeded") as info:
        await adapter.check()
    await adapter.close()
    assert (info.value.kind, info.value.status) == ("rate_limited", 403)
    assert datetime.fromtimestamp(reset, UTC).strftime("%Y-%m-%d %H:%M:%S") in str(info.value)
    assert github.log == [("GET", "/user")] and waits == []


async def test_a_secondary_limit_waits_a_minute_or_fails_when_that_is_too_long(
        github: FakeGitHub) -> None:
    """GitHub: without retry-after or an exhausted limit, wait at least a minute."""
    github.repos["octo/web"] = True
    waits: list[float] = []
    adapter = _adapter(github, sleep=_recording(waits))
    for status in (403, 429):
        github.faults = [(status, {"x-ratelimit-remaining": "4999"})]
        assert await adapter.check() == "sync-bot"
    await adapter.close()
    assert waits == [60.0, 60.0]
    github.log.clear()
    impatient = _adapter(github, max_retry_after=30, sleep=_recording(waits))
    github.faults = [(403, {"x-ratelimit-remaining": "4999"})]
    with pytest.raises(SourceError, match="secondary rate limit") as info:
        await impatient.check()
    await impatient.close()
    assert (info.value.kind, info.value.status) == ("rate_limited", 403)
    assert github.log == [("GET", "/user")] and waits == [60.0, 60.0]


async def test_graphql_refusals_for_rate_are_waited_out_as_github_asks(
        github: FakeGitHub) -> None:
    """GraphQL refuses with a 200: a spent budget (RATE_LIMITED, remaining 0) until its reset,
    a secondary limit at least a minute; a reset too far off fails at once, naming it."""
    for n in range(1, 151):
        github.add_issue("octo/web", title=f"Issue {n}", updated=T0 + timedelta(minutes=n))
    github.graphql_budget, github.graphql_reset = 3, int(time.time()) + 30
    waits: list[float] = []

    async def reset_while_waiting(seconds: float) -> None:
        waits.append(seconds)
        github.graphql_budget = None

    adapter = _adapter(github, sleep=reset_while_waiting)
    items = [item async for page in adapter.pages(since=None) for item in page.items]
    assert len(items) == 150
    assert len(waits) == 1 and 25 <= waits[0] <= 31  # until the reset, not a blind backoff
    github.faults = [(200, {})]  # a secondary limit, in a 200
    assert len([i async for page in adapter.pages(since=None) for i in page.items]) == 150
    assert waits[1:] == [60.0]
    await adapter.close()
    github.graphql_budget, github.graphql_reset = github.points, int(time.time()) + 3600
    impatient = _adapter(github, sleep=_recording(waits))
    with pytest.raises(SourceError, match="API rate limit exceeded") as info:
        [i async for page in impatient.pages(since=None) for i in page.items]
    await impatient.close()
    assert (info.value.kind, info.value.status) == ("rate_limited", 200)
    assert "wait until" in str(info.value) and len(waits) == 2


async def test_an_older_enterprise_server_without_the_newer_fields_is_read_all_the_same(
        serve_fake) -> None:
    """GitHub Enterprise Server (REST under /api/v3, GraphQL at /api/graphql) before
    ``issueType`` and ``fullDatabaseId``: the first query is refused for naming them, and every
    query from then on does without (databaseId instead)."""
    github = FakeGitHub(graphql_without=frozenset({
        "Issue.issueType", "Issue.fullDatabaseId", "IssueComment.fullDatabaseId"}))
    await serve_fake(github, app=github.app(enterprise=True), path="/api/v3")
    _backfill(github, "octo/web", 60, prs=False)
    github.add_issue("octo/web", title="Chatty", updated=T0 + timedelta(hours=1), comments=70)
    adapter = _adapter(github, page_size=50)
    assert await adapter.check() == "sync-bot"
    items = [item async for page in adapter.pages(since=None) for item in page.items]
    await adapter.close()
    assert len(items) == 61 and {i.source_id for i in items} == {
        str(i["id"]) for i in github.issues["octo/web"].values()}
    chatty = items[-1]
    assert [c.source_id for c in chatty.comments] == [
        str(c["id"]) for c in github.comments[int(chatty.source_id)]]
    assert github.log[:3] == [("GET", "/api/v3/user"), ("GET", "/api/v3/repos/octo/web"),
                              ("POST", "/api/graphql")]
    # One refused query, then two pages of issues and a follow-up for Chatty's timeline.
    assert github.log.count(("POST", "/api/graphql")) == 1 + len(github.graphql_log) == 4
    assert github.charges()["rest"] == 2


async def test_a_repository_graphql_cannot_find_fails_the_sync_naming_it(
        github: FakeGitHub) -> None:
    adapter = _adapter(github, {"octo/nope": "NOPE"})
    with pytest.raises(SourceError, match="octo/nope does not exist or is not visible") as info:
        [i async for page in adapter.pages(since=None) for i in page.items]
    await adapter.close()
    assert info.value.kind == "not_found"


@pytest.mark.parametrize(("base_url", "endpoint"), [
    ("https://api.github.com", "https://api.github.com/graphql"),
    ("https://ghe.example.com/api/v3", "https://ghe.example.com/api/graphql"),
    ("https://ghe.example.com/api/v3/", "https://ghe.example.com/api/graphql"),
])
def test_the_graphql_endpoint_beside_the_rest_base_url(base_url: str, endpoint: str) -> None:
    assert graphql_url(base_url) == endpoint


# --- the fake's GraphQL, charged as GitHub documents ------------------------------------------
_DOCS_EXAMPLE = """query {
  viewer {
    login
    repositories(first: 100) {
      edges { node { id
        issues(first: 50) { edges { node { id
          labels(first: 60) { edges { node { id name } } } } } } } }
    }
  }
}"""


@pytest.mark.parametrize(("query", "expected"), [
    # GitHub's own example: 1 + 100 + 5,000 requests, 51 points; its nodes, 100 + 5,000 +
    # 300,000.
    (_DOCS_EXAMPLE, (51, 305_100)),
    # Its node example: 50 repositories, 50 x 10 issues = 550 nodes; 51 requests, 1 point.
    ("{ viewer { repositories(first: 50) { nodes { issues(first: 10) { totalCount } } } } }",
     (1, 550)),
    # Aliases are connections of their own: 101 + 49 = 150 requests round to 2 points (half
    # up), 101 + 48 = 149 to 1.
    ("{ a: viewer { repositories(first: 100) { nodes { issues(first: 1) { totalCount } } } }"
     "  b: viewer { repositories(first: 48) { nodes { issues(first: 1) { totalCount } } } } }",
     (2, 296)),
    ("{ a: viewer { repositories(first: 100) { nodes { issues(first: 1) { totalCount } } } }"
     "  b: viewer { repositories(first: 47) { nodes { issues(first: 1) { totalCount } } } } }",
     (1, 294)),
    ("{ rateLimit { cost } viewer { login } }", (1, 0)),
])
def test_the_fake_charges_a_query_as_github_documents(query: str,
                                                      expected: tuple[int, int]) -> None:
    assert cost_of(parse(query), {}) == expected


@pytest.mark.parametrize(("query", "words"), [
    ("{ viewer { repositories { totalCount } } }", "You must provide a `first` or `last`"),
    ("{ viewer { repositories(first: 101) { totalCount } } }",
     "Requesting 101 records on the `repositories` connection exceeds the `first` limit"),
    ("{ viewer { repositories(first: 100) { nodes { issues(first: 100) { nodes {"
     " labels(first: 100) { totalCount } } } } } } }",
     "requests up to 1,010,100 possible nodes which exceeds the maximum limit of 500,000"),
    ("{ viewer { logn } }", "Field 'logn' doesn't exist on type 'User'"),
    ("query { viewer { login } } fragment f on Issue { id }", "Fragment f was defined, but not"),
    ("{ viewer { login }", "Parse error on end of input"),
    ("{ viewer { repositories(first: $n) { totalCount } } }",
     "Variable $n is used by anonymous query but not declared"),
    ("query($n: Int) { viewer { login } }", "Variable $n is declared by anonymous query but not"),
])
def test_the_fake_refuses_what_github_refuses(query: str, words: str) -> None:
    with pytest.raises(GraphQLError, match=re.escape(words)):
        cost_of(parse(query), {})


def _recording(waits: list[float]):
    async def sleep(seconds: float) -> None:
        waits.append(seconds)
    return sleep


async def test_bad_credentials_stop_the_sync_with_one_clear_line(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(github, "octo/web", 3)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, github, token="ghp_wrong-token")
    with pytest.raises(SourceError, match=r"refused the credentials .*Bad credentials") as info:
        await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert "ghp_wrong-token" not in str(info.value) and "\n" not in str(info.value)
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 0


async def test_another_tenant_never_sees_synced_items_or_sources(
        github: FakeGitHub, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(github, "octo/web", 10)
    owner, other = await make_tenant(), await make_tenant()
    source_id = await _add(admin_conn, queries, owner.id, github)
    await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert await _count(app_conn, owner.id, "SELECT count(*) FROM work_items") == 10
    for sql in ("SELECT count(*) FROM work_items", "SELECT count(*) FROM comments",
                "SELECT count(*) FROM work_item_transitions", "SELECT count(*) FROM projects",
                "SELECT count(*) FROM source_instances"):
        assert await _count(app_conn, other.id, sql) == 0, sql
    async with admin_conn.transaction():
        listed = await manage.list_sources(admin_conn, queries, other.id)
        mine = await manage.list_sources(admin_conn, queries, owner.id)
    assert listed == [] and len(mine) == 1 and mine[0]["kind"] == "github"
    assert github.token not in orjson.dumps(mine, default=str).decode()


# --- writes ----------------------------------------------------------------------------------
def _draft(**fields) -> Draft:
    base = {"title": "Add dark mode", "description": "Please.", "type": "feature",
            "priority": "high", "assignee": "alice", "labels": ["ui", "P3"], "due": None,
            "parent": None}
    return Draft(**{**base, **fields})


async def test_workflow_and_links(github: FakeGitHub) -> None:
    adapter = _adapter(github)
    workflow = await adapter.workflow("octo/web")
    assert workflow.statuses == [("Open", "todo"), ("Closed", "done"),
                                 ("Not planned", "cancelled")]
    assert {(t[1], t[2], t[3]) for t in workflow.transitions} == {
        ("Close", "Open", "Closed"), ("Close as not planned", "Open", "Not planned"),
        ("Reopen", "Closed", "Open"), ("Reopen", "Not planned", "Open")}
    assert len({t[0] for t in workflow.transitions}) == 4
    one, two = Ref("1", "WEB-1", "octo/web"), Ref("2", "WEB-2", "octo/web")
    assert await adapter.link(one, two, "blocks") is False
    await adapter.close()
    assert github.log == []


async def test_create_update_transition_and_comment(github: FakeGitHub) -> None:
    _backfill(github, "octo/web", 2, prs=False)
    adapter = _adapter(github)
    item = await adapter.create("octo/web", _draft())
    issue = github.issue("octo/web", 3)
    assert (item.key, item.number, item.source_id) == ("WEB-3", 3, str(issue["id"]))
    assert item.labels == ["ui", "priority: high", "enhancement"]
    assert (item.type, item.priority, item.assignee, item.status) == (
        "feature", "high", "alice", "Open")
    assert (item.title, item.description, item.reporter) == ("Add dark mode", "Please.", "rita")
    ref = Ref(item.source_id, item.key, "octo/web")

    item = await adapter.update(ref, {"title": "Dark mode", "description": None,
                                      "priority": "critical"})
    assert (item.title, item.description) == ("Dark mode", None)
    assert item.labels == ["ui", "enhancement", "priority: critical"]
    assert item.priority == "critical"
    assert ("GET", "/repos/octo/web/issues/3") in github.log  # the labels to swap within
    github.log.clear()
    item = await adapter.update(ref, {"labels": ["backend", "bug"], "priority": "low",
                                      "assignee": None})
    assert item.labels == ["backend", "bug", "priority: low"]
    assert (item.type, item.priority, item.assignee) == ("bug", "low", None)
    assert ("GET", "/repos/octo/web/issues/3") not in github.log
    assert issue["assignees"] == []

    for status, expected in [("Closed", CLOSED), ("open", OPEN), ("Not planned", NOT_PLANNED)]:
        item = await adapter.transition(ref, status)
        assert (item.status, item.status_category) == expected
    assert item.resolved == datetime.fromisoformat(issue["closed_at"])
    assert [(t.from_status, t.to_status) for t in item.transitions] == [
        ("Open", "Closed"), ("Closed", "Open"), ("Open", "Not planned")]
    assert issue["state_reason"] == "not_planned"

    comment = await adapter.comment(ref, "Shipped **soon**.")
    assert (comment.body, comment.author) == ("Shipped **soon**.", "sync-bot")
    assert comment.source_id == str(github.comments[issue["id"]][0]["id"])
    assert issue["comments"] == 1
    await adapter.close()


async def test_a_created_issue_whose_timeline_cannot_be_read_is_ambiguous(
        github: FakeGitHub) -> None:
    _backfill(github, "octo/web", 2, prs=False)
    github.faults_at[("POST", "/graphql")] = [(502, {})] * 5
    adapter = _adapter(github)
    with pytest.raises(SourceError, match="may have reached") as info:
        await adapter.create("octo/web", _draft())
    await adapter.close()
    assert (info.value.kind, info.value.ambiguous) == ("server", True)
    assert github.issue("octo/web", 3)["title"] == "Add dark mode"
    assert github.log.count(("POST", "/repos/octo/web/issues")) == 1


async def test_refusals_are_source_errors_in_githubs_words(github: FakeGitHub) -> None:
    _backfill(github, "octo/web", 1, prs=False)
    github.repos["octo/locked"] = True
    github.read_only.add("octo/locked")
    adapter = _adapter(github, {"octo/web": "WEB", "octo/locked": "LCK"})
    ref = Ref("1", "WEB-1", "octo/web")
    github.log.clear()
    for changes, words in [({"due": T0.date()}, "no due date"), ({"parent": ref}, "parent"),
                           ({"type": "bug"}, "cannot change type")]:
        with pytest.raises(SourceError, match=words) as info:
            await adapter.update(ref, changes)
        assert info.value.kind == "unsupported"
    with pytest.raises(SourceError, match="no due date"):
        await adapter.create("octo/web", _draft(due=T0.date()))
    with pytest.raises(SourceError, match="no status 'Done'") as info:
        await adapter.transition(ref, "Done")
    assert info.value.kind == "invalid"
    with pytest.raises(SourceError, match="not mirrored") as info:
        await adapter.create("octo/other", _draft())
    assert github.log == []  # refused before asking GitHub

    with pytest.raises(SourceError, match="422: Validation Failed") as info:
        await adapter.create("octo/web", _draft(assignee="nobody"))
    assert info.value.status == 422
    with pytest.raises(SourceError, match="422: Validation Failed") as info:
        await adapter.comment(ref, " ")
    with pytest.raises(SourceError, match=r"404.*Not Found") as info:
        await adapter.update(Ref("9", "WEB-99", "octo/web"), {"title": "Gone"})
    assert info.value.kind == "not_found"
    with pytest.raises(SourceError, match=r"403.*Resource not accessible") as info:
        await adapter.create("octo/locked", _draft())
    assert info.value.kind == "forbidden"
    assert len(github.issues["octo/web"]) == 1 and "octo/locked" not in github.issues

    # A 5xx to a create may have created the issue: it is not sent twice.
    github.faults = [(502, {})]
    github.log.clear()
    with pytest.raises(SourceError, match="502") as info:
        await adapter.create("octo/web", _draft())
    assert info.value.kind == "server"
    assert github.log == [("POST", "/repos/octo/web/issues")]
    await adapter.close()
