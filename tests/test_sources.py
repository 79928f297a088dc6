"""Sources, foundation: encrypted credentials, the Jira adapter against a fake Jira speaking the
real wire format, and the resumable incremental sync (issue 7)."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.sources import manage
from spiral_mcp.sources.base import Comment, Draft, HttpClient, Item, Link, Ref, SourceError
from spiral_mcp.sources.jira import JiraAdapter, category_for, priority_for, type_for
from spiral_mcp.sources.secrets import CredentialError, SecretBox, load_secret_box
from spiral_mcp.sources.sync import SyncBusy, lock_key, write_items
from tests.conftest import LOOPBACK_SETTING
from tests.fake_jira import FakeJira, jira_time

BOX = SecretBox(b"x" * 43 + b"=")
FAST = {"backoff": 0.01, "max_backoff": 0.05, "rate": 1000.0, "timeout": 5.0}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# --- normalisation ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "key", "resolution", "expected"), [
    ("To Do", "new", None, "todo"), ("Open", "new", None, "todo"),
    ("In Progress", "indeterminate", None, "in_progress"), ("Blocked", "indeterminate", None,
                                                            "blocked"),
    ("On Hold", "indeterminate", None, "blocked"), ("In Review", "indeterminate", None,
                                                    "in_review"),
    ("Code Review", "indeterminate", None, "in_review"), ("Done", "done", "Done", "done"),
    ("Closed", "done", "Won't Do", "cancelled"), ("Won't Do", "done", None, "cancelled"),
    ("Cancelled", "done", None, "cancelled"), ("Whatever", None, None, "todo"),
])
def test_status_category(name: str, key: str | None, resolution: str | None,
                         expected: str) -> None:
    assert category_for(name, key, resolution=resolution) == expected


def test_status_category_override() -> None:
    assert category_for("QA", "indeterminate", overrides={"qa": "in_review"}) == "in_review"


@pytest.mark.parametrize(("kind", "pairs", "expected"), [
    ("jira", ["status_categories:Triage=todo", "status_categories:QA=in_review"],
     {"status_categories": {"Triage": "todo", "QA": "in_review"}}),
    ("github", ["priority_labels:sev1=critical", "type_labels:regression=bug"],
     {"priority_labels": {"sev1": "critical"}, "type_labels": {"regression": "bug"}}),
    ("asana", ["types:Incident=bug"], {"types": {"Incident": "bug"}}),
])
def test_mapping_overrides_parse_per_kind(kind: str, pairs: list[str], expected: dict) -> None:
    assert manage.parse_overrides(pairs, manage.adapter_class(kind)) == expected


@pytest.mark.parametrize(("kind", "pair", "message"), [
    ("jira", "priority_labels:x=high", "jira has no mapping 'priority_labels' (its mappings: "
                                        "status_categories)"),
    ("jira", "status_categories:Triage=later", "'later' is not one of blocked, cancelled, done"),
    ("github", "type_labels:=bug", "expected KEY:NAME=VALUE"),
    ("asana", "priorities", "expected KEY:NAME=VALUE, e.g. priorities:Triage=critical"),
])
def test_a_bad_mapping_override_is_one_clear_line(kind: str, pair: str, message: str) -> None:
    with pytest.raises(manage.SourceAdminError, match=re.escape(message)):
        manage.parse_overrides([pair], manage.adapter_class(kind))


@pytest.mark.parametrize(("name", "expected"), [
    ("Highest", "critical"), ("Blocker", "critical"), ("High", "high"), ("Major", "high"),
    ("Medium", "medium"), ("Low", "low"), ("Minor", "low"), ("Lowest", "none"),
    ("Trivial", "none"), (None, "none"), ("P9", "medium"),
])
def test_priority(name: str | None, expected: str) -> None:
    assert priority_for(name) == expected


@pytest.mark.parametrize(("name", "subtask", "expected"), [
    ("Epic", False, "epic"), ("Story", False, "story"), ("Task", False, "task"),
    ("Bug", False, "bug"), ("Sub-task", True, "subtask"), ("Anything", True, "subtask"),
    ("New Feature", False, "feature"), ("Spike", False, "task"),
])
def test_type(name: str, subtask: bool, expected: str) -> None:
    assert type_for(name, subtask=subtask) == expected


# --- secrets ---------------------------------------------------------------------------------
def test_credentials_round_trip_and_wrong_key() -> None:
    sealed = BOX.seal({"email": "a@b.c", "token": "tok"})
    assert b"tok" not in sealed
    assert BOX.open(sealed) == {"email": "a@b.c", "token": "tok"}
    with pytest.raises(CredentialError, match="cannot be decrypted"):
        SecretBox(b"y" * 43 + b"=").open(sealed)
    assert "x" * 10 not in repr(BOX)


def test_embedded_generates_a_private_key_file_once(tmp_path: Path) -> None:
    settings = load_settings(environ={"SPIRAL_DATA_DIR": str(tmp_path)})
    box = load_secret_box(settings)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    sealed = box.seal({"token": "t"})
    assert load_secret_box(settings).open(sealed) == {"token": "t"}


def test_own_database_needs_a_key_and_the_key_is_checked(tmp_path: Path) -> None:
    url = "postgresql://x@127.0.0.1/db"
    with pytest.raises(CredentialError, match="SPIRAL_SECRET_KEY is needed"):
        load_secret_box(load_settings(environ={"DATABASE_URL": url}))
    with pytest.raises(ConfigError, match="SPIRAL_SECRET_KEY") as info:
        load_settings(environ={"SPIRAL_SECRET_KEY": "not-a-key"})
    assert "not-a-key" not in str(info.value)
    settings = load_settings(environ={"DATABASE_URL": url, "SPIRAL_SECRET_KEY": "x" * 43 + "="})
    assert "xxxx" not in repr(settings)
    assert load_secret_box(settings).open(BOX.seal({"a": 1})) == {"a": 1}


# --- base URLs -------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("https://acme.atlassian.net/", "https://acme.atlassian.net"),
    (" https://jira.example.com:8443/jira ", "https://jira.example.com:8443/jira"),
    ("https://[::1]:8443/api/v3", "https://[::1]:8443/api/v3"),
    ("https://bücher.example", "https://bücher.example"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://localhost/", "http://localhost"),
])
async def test_a_base_url_is_kept_without_its_trailing_slash(raw: str, expected: str) -> None:
    assert await manage.check_base_url(raw) == expected


@pytest.mark.parametrize(("raw", "says"), [
    ("https://[::1", "not a valid address: Invalid IPv6 URL"),
    ("https://example.com:99999", "not a valid address: Port out of range"),
    ("https://example.com:port", "not a valid address: Port could not be cast"),
    ("https://example.com:0", "port 0"),
    ("https://ex..com", "'ex..com' is not a valid host"),
    ("https://-x.example.com", "is not a valid host"),
    ("https://exa mple.com", "no spaces or control characters"),
    ("https://example.com/a\nb", "no spaces or control characters"),
    ("https://example.com/rest?x=1", "no query (?) or fragment (#)"),
    ("https://example.com/rest#top", "no query (?) or fragment (#)"),
    ("https://example.com/rest?", "no query (?) or fragment (#)"),
    ("http://bot%40example.com:s3cret-token@127.0.0.1:8080", "must not hold credentials"),
    ("https://bot:s3cret-token@[::1", "must not hold credentials"),
    ("bot:s3cret-token@jira.example.com", "must not hold credentials"),
    ("jira.example.com", "expected an https:// address"),
    ("http://jira.example.com", "must use https"),
])
async def test_a_bad_base_url_is_one_clear_line_without_its_secret(raw: str, says: str) -> None:
    with pytest.raises(manage.SourceAdminError) as info:
        await manage.check_base_url(raw)
    assert says in str(info.value) and "s3cret" not in str(info.value)
    assert "\n" not in str(info.value)


# --- against the fake Jira -------------------------------------------------------------------
@pytest.fixture
async def jira(serve_fake) -> FakeJira:
    return await serve_fake(FakeJira())


def _backfill(fake: FakeJira, count: int) -> None:
    statuses = ("To Do", "In Progress", "Blocked", "In Review", "Done", "Won't Do")
    for n in range(1, count + 1):
        fake.add_issue(f"ABC-{n}", summary=f"Issue {n}", status=statuses[n % 6],
                       updated=T0 - timedelta(hours=count - n), labels=("x", f"l{n % 3}"),
                       issuetype="Bug" if n % 2 else "Story", comments=n % 4,
                       moves=("In Progress", "In Review", "Done")[: n % 4],
                       parent="ABC-1" if n > 1 and n % 5 == 0 else None)


async def _add(admin_conn: asyncpg.Connection, queries, tenant_id, fake: FakeJira,
               *, token: str | None = None) -> object:
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind="jira",
            name=f"jira {os.urandom(3).hex()}", base_url=fake.base_url,
            projects={"ABC": "LOC"}, email=None if fake.server else fake.email,
            token=token or fake.token)


async def _instance(admin_conn: asyncpg.Connection, queries, tenant_id) -> object:
    """An instance mirroring ABC as LOC, for tests that write its items themselves."""
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind="jira", name="written here",
            base_url="https://jira.example.invalid", projects={"ABC": "LOC"},
            email="bot@example.com", token="unused")


async def _count(conn: asyncpg.Connection, tenant_id, sql: str) -> int:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetchval(sql)


async def test_adapter_checks_credentials_and_projects(jira: FakeJira) -> None:
    _backfill(jira, 1)
    good = JiraAdapter(jira.base_url, email=jira.email, token=jira.token,
                       projects={"ABC": "LOC"}, **FAST)
    assert await good.check() == jira.email
    await good.close()
    bad = JiraAdapter(jira.base_url, email=jira.email, token="wrong", projects={"ABC": "LOC"},
                      **FAST)
    with pytest.raises(SourceError) as info:
        await bad.check()
    await bad.close()
    assert info.value.kind == "auth" and "401" in str(info.value) and "wrong" not in str(
        info.value)
    missing = JiraAdapter(jira.base_url, email=jira.email, token=jira.token,
                          projects={"NOPE": "LOC"}, **FAST)
    with pytest.raises(SourceError, match="NOPE does not exist") as info:
        await missing.check()
    await missing.close()
    assert info.value.kind == "not_found"


async def test_unreachable_host_is_one_clear_line() -> None:
    adapter = JiraAdapter("http://127.0.0.1:9", email="e", token="t", projects={"ABC": "A"},
                          **FAST)
    with pytest.raises(SourceError, match="cannot connect") as info:
        await adapter.check()
    await adapter.close()
    assert info.value.kind == "unreachable"


async def test_a_reset_connection_is_a_source_error_retried_only_when_idempotent(
        resetting_host: tuple[str, list[bytes]]) -> None:
    base_url, heads = resetting_host
    client = HttpClient(base_url, retries=2, **FAST)
    with pytest.raises(SourceError, match="dropped the connection") as info:
        await client.request("GET", "/rest/api/3/myself")
    assert (info.value.kind, info.value.ambiguous) == ("unreachable", False)
    assert len(heads) >= 3  # asked again
    heads.clear()
    with pytest.raises(SourceError, match="dropped the connection") as info:
        await client.request("POST", "/rest/api/3/issue", json={"fields": {}})
    await client.close()
    # The create may have been made: it is not sent again, and says so.
    assert (info.value.kind, info.value.ambiguous) == ("unreachable", True)
    assert len(heads) == 1


@pytest.mark.parametrize("base_url", ["http://jira.example.com:99999", "ftp://jira.example.com",
                                      "http://[::1", "http://jira\udcff.example.com"])
async def test_a_url_nothing_can_be_sent_to_is_a_source_error(base_url: str) -> None:
    client = HttpClient(base_url, **FAST)
    with pytest.raises(SourceError, match="not a usable http") as info:
        await client.request("GET", "/rest/api/3/myself")
    await client.close()
    assert (info.value.kind, info.value.ambiguous) == ("unreachable", False)


async def test_full_backfill_over_many_pages(jira: FakeJira, make_tenant, admin_conn, app_conn,
                                             queries) -> None:
    _backfill(jira, 230)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    seen: list[int] = []
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, on_page=lambda p:
                                     seen.append(p.pages), page_size=50, **FAST)
    assert progress.pages == 5 and progress.items == 230 and progress.changed == 230
    assert seen == [1, 2, 3, 4, 5]
    assert await _count(app_conn, tenant.id,
                        "SELECT count(DISTINCT key) FROM work_items WHERE source = 'jira'") == 230
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        row = await app_conn.fetchrow("SELECT * FROM work_items WHERE key = 'LOC-10'")
        project = await app_conn.fetchrow("SELECT * FROM projects WHERE project_key = 'LOC'")
        moves = await app_conn.fetch(
            "SELECT from_status, to_status, to_category FROM work_item_transitions "
            "WHERE work_item_id = (SELECT id FROM work_items WHERE key = 'LOC-3') "
            "ORDER BY transitioned_at")
        comments = await app_conn.fetchval(
            "SELECT count(*) FROM comments WHERE work_item_id = "
            "(SELECT id FROM work_items WHERE key = 'LOC-3')")
    jira_issue = next(i for i in jira.issues.values() if i["key"] == "ABC-10")
    assert row["source_id"] == jira_issue["id"] and row["title"] == "Issue 10"
    assert (row["status"], row["status_category"]) == ("Done", "done")
    assert row["resolved_at"] is not None
    assert row["type"] == "story" and row["priority"] == "medium"
    assert row["labels"] == ["x", "l1"] and row["parent_key"] == "LOC-1"
    assert row["description"] == "About Issue 10." and row["reporter"] == "rita@x.io"
    assert row["version"] == 1
    assert project["source_instance_id"] == source_id and project["source_ref"] == "ABC"
    assert project["next_number"] == 231
    # Three moves, two inline and the history whole from changelog/bulkfetch; three comments,
    # the third from /comment.
    assert [tuple(m) for m in moves] == [("To Do", "In Progress", "in_progress"),
                                         ("In Progress", "In Review", "in_review"),
                                         ("In Review", "Done", "done")]
    assert comments == 3
    # One bulk read a page for the histories cut short (every fourth issue), none per issue.
    assert jira.log.count(("POST", "/rest/api/3/changelog/bulkfetch")) == 5
    assert not [path for _, path in jira.log if path.endswith("/changelog")]


async def test_incremental_sync_picks_up_exactly_the_changes(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 60)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=25, **FAST)
    later = T0 + timedelta(hours=2)
    jira.update_issue("ABC-7", at=later, status="Done")
    jira.update_issue("ABC-8", at=later + timedelta(minutes=1), summary="Renamed")
    jira.add_issue("ABC-61", summary="New one", updated=later + timedelta(minutes=2))
    jira.log.clear()
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=25, **FAST)
    search = [p for p in jira.log if p[1] == "/rest/api/3/search/jql"]
    assert len(search) == 1
    # The three changes and the item at the old cursor (re-read by the one-minute overlap).
    assert progress.items == 4 and progress.changed == 3
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        rows = {r["key"]: r for r in await app_conn.fetch(
            "SELECT key, title, status, status_category, version FROM work_items")}
        moves = await app_conn.fetchval(
            "SELECT count(*) FROM work_item_transitions WHERE work_item_id = "
            "(SELECT id FROM work_items WHERE key = 'LOC-7')")
    assert len(rows) == 61
    assert (rows["LOC-7"]["status"], rows["LOC-7"]["version"]) == ("Done", 2)
    assert (rows["LOC-8"]["title"], rows["LOC-8"]["version"]) == ("Renamed", 2)
    assert rows["LOC-60"]["version"] == 1 and rows["LOC-61"]["version"] == 1
    assert moves == 3 + 1  # 7 % 4 = 3 moves at backfill, one more now, none twice


async def test_429_and_5xx_are_retried_honouring_retry_after(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 5)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    # The project's statuses first (for its workflow): 429 with Retry-After 1, then 503, then
    # 502, then fine.
    jira.faults = [(429, {"Retry-After": "1"}), (503, {}), (502, {})]
    started = datetime.now(UTC)
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert progress.items == 5
    assert (datetime.now(UTC) - started).total_seconds() >= 1.0  # waited as asked
    assert jira.log.count(("GET", "/rest/api/3/project/ABC/statuses")) == 4
    # Retries exhausted: a clear error, not a hang.
    jira.faults = [(503, {})] * 3
    with pytest.raises(SourceError, match="503 after 3 attempts") as info:
        await manage.run_sync(admin_conn, queries, BOX, source_id, retries=2, **FAST)
    assert info.value.kind == "server"


async def test_bad_credentials_stop_the_sync_with_a_clear_message(
        jira: FakeJira, make_tenant, admin_conn, queries) -> None:
    _backfill(jira, 3)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira, token="wrong-token")
    with pytest.raises(SourceError, match="refused the credentials") as info:
        await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert "wrong-token" not in str(info.value)


async def test_an_instances_mapping_override_applies_to_its_sync(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    jira.add_issue("ABC-1", summary="Held", status="Blocked", updated=T0)
    tenant = await make_tenant()
    async with admin_conn.transaction():
        source_id = await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant.id, kind="jira", name="mapped",
            base_url=jira.base_url, projects={"ABC": "MAP"}, email=jira.email,
            token=jira.token, overrides={"status_categories": {"Blocked": "in_progress"}})
    await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    category = "SELECT status_category FROM work_items WHERE key = 'MAP-1'"
    assert await _count(app_conn, tenant.id, category) == "in_progress"  # default: blocked


async def test_the_operators_sync_waits_for_no_one_and_runs_alone(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    """The CLI's sync takes the instance's lock, as the server's syncs do: while another session
    holds it, the sync refuses before asking the source."""
    _backfill(jira, 3)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    assert await app_conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(source_id))
    try:
        with pytest.raises(SyncBusy, match="already running"):
            await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
        assert jira.log == []
    finally:
        await app_conn.fetchval("SELECT pg_advisory_unlock($1)", lock_key(source_id))
    assert (await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)).items == 3


@pytest.mark.parametrize("server", [False, True], ids=["cloud", "server"])
async def test_a_sync_killed_half_way_resumes_without_duplicates_or_gaps(
        serve_fake, server: bool, make_tenant, admin_conn, app_conn, queries) -> None:
    jira = await serve_fake(FakeJira(server=server))
    _backfill(jira, 100)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    jira.broken_search = 3
    with pytest.raises(SourceError, match="500"):
        await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=20, retries=1,
                              **FAST)
    count_sql = "SELECT count(*) FROM work_items WHERE source = 'jira'"
    assert await _count(app_conn, tenant.id, count_sql) == 40  # pages 1 and 2 committed
    async with admin_conn.transaction():
        row = await manage.find_source(admin_conn, queries, source_id)
    assert orjson.loads(row["sync_cursor"])["updated"].startswith("2025-02-27T")  # ABC-40
    jira.broken_search = None
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=20, **FAST)
    assert progress.items == 61  # from ABC-40 (the cursor's minute) on
    assert await _count(app_conn, tenant.id, count_sql) == 100
    assert await _count(app_conn, tenant.id, "SELECT count(DISTINCT source_id) FROM work_items "
                                             "WHERE source = 'jira'") == 100
    expected_moves = sum(n % 4 for n in range(1, 101))
    expected_comments = sum(n % 4 for n in range(1, 101))
    assert await _count(app_conn, tenant.id,
                        "SELECT count(*) FROM work_item_transitions") == expected_moves
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM comments") == expected_comments


# --- changes while a Server sync reads (startAt pagination) ------------------------------------
@pytest.fixture
async def jira_server(serve_fake) -> FakeJira:
    return await serve_fake(FakeJira(server=True))


def _change_on_search(fake: FakeJira, request: int, key: str, at: datetime) -> None:
    """Just before the ``request``-th search, ``key`` changes at ``at`` (so it moves to the
    end)."""
    fake.before_search[request] = lambda: fake.update_issue(key, at=at, summary=f"{key} moved")


async def _read_all(fake: FakeJira, *, page_size: int) -> list[Item]:
    adapter = JiraAdapter(fake.base_url, email=None, token=fake.token, projects={"ABC": "LOC"},
                          page_size=page_size, **FAST)
    items = [item async for page in adapter.pages(since=None) for item in page.items]
    await adapter.close()
    assert len({(i.source_id, i.updated) for i in items}) == len(items)  # no version twice
    assert [i.updated for i in items] == sorted(i.updated for i in items)
    return items


async def test_an_issue_changed_mid_sync_shifts_no_other_out_of_it(jira_server: FakeJira) -> None:
    """After page 1 was read, ABC-2 changes: it leaves its place for the end and ABC-4 slips
    back onto page 1; ABC-9, not read yet, changes too. Every issue is read, each changed one
    again at its new version."""
    _backfill(jira_server, 12)
    _change_on_search(jira_server, 2, "ABC-2", T0 + timedelta(hours=1))
    _change_on_search(jira_server, 3, "ABC-9", T0 + timedelta(hours=2))
    items = await _read_all(jira_server, page_size=3)
    assert sorted(i.title for i in items) == sorted(
        [*(f"Issue {n}" for n in range(1, 13) if n != 9), "ABC-2 moved", "ABC-9 moved"])
    assert [i.title for i in items[-2:]] == ["ABC-2 moved", "ABC-9 moved"]


def _one_minute(fake: FakeJira, count: int) -> None:
    """``count`` issues updated a second apart within one minute: more than a page that
    ``updated >= "yyyy-MM-dd HH:mm"`` cannot tell apart."""
    for n in range(1, count + 1):
        fake.add_issue(f"ABC-{n}", summary=f"Issue {n}", updated=T0 + timedelta(seconds=n))


async def test_more_than_a_page_in_one_minute_all_arrive_once(jira_server: FakeJira) -> None:
    _one_minute(jira_server, 25)
    items = await _read_all(jira_server, page_size=10)
    assert [i.key for i in items] == [f"LOC-{n}" for n in range(1, 26)]
    assert jira_server.searches == 3


async def test_an_issue_changed_within_a_crowded_minute_shifts_no_other_out(
        jira_server: FakeJira) -> None:
    """Within one minute only startAt moves on; a change behind it shifts the rest, which the
    adapter sees (the page no longer starts with the last issue read) and reads the minute
    again, skipping what it has read."""
    _one_minute(jira_server, 25)
    _change_on_search(jira_server, 2, "ABC-3", T0 + timedelta(hours=1))
    items = await _read_all(jira_server, page_size=10)
    assert sorted(i.title for i in items) == sorted(
        [*(f"Issue {n}" for n in range(1, 26)), "ABC-3 moved"])
    assert items[-1].title == "ABC-3 moved"


# --- changes while a Cloud sync reads (nextPageToken, no snapshot promised) -------------------
def _minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


async def _read_cloud(fake: FakeJira, *,
                      page_size: int) -> tuple[list[Item], list[tuple[datetime, set[str]]]]:
    """What a Cloud sync reads and, after each page, the cursor it saves then (the latest update
    read) with the keys of the issues updated by then whose version it has not read."""
    adapter = JiraAdapter(fake.base_url, email=fake.email, token=fake.token,
                          projects={"ABC": "LOC"}, page_size=page_size, **FAST)
    items: list[Item] = []
    cursors: list[tuple[datetime, set[str]]] = []
    async for page in adapter.pages(since=None):
        items += page.items
        cursor = max(i.updated for i in items)
        read = {(i.source_id, i.updated) for i in items}
        now = {i["key"]: (i["id"], datetime.fromisoformat(i["fields"]["updated"]))
               for i in fake.issues.values()}
        cursors.append((cursor, {key for key, version in now.items()
                                 if version[1] <= cursor and version not in read}))
    await adapter.close()
    assert len({(i.source_id, i.updated) for i in items}) == len(items)  # no version twice
    minutes = [_minute_of(i.updated) for i in items]
    assert minutes == sorted(minutes)  # nothing from a minute already left behind
    return items, cursors


async def test_cloud_an_issue_changed_mid_sync_shifts_no_other_out(jira: FakeJira) -> None:
    """After page 1 was read, ABC-2 changes: it leaves its place for the end and ABC-4 slips
    back onto page 1, where a position-based token steps over it; ABC-9 changes too. Every
    issue is read, and no saved cursor is ever past an issue not read."""
    _backfill(jira, 12)
    _change_on_search(jira, 2, "ABC-2", T0 + timedelta(hours=1))
    _change_on_search(jira, 3, "ABC-9", T0 + timedelta(hours=2))
    items, cursors = await _read_cloud(jira, page_size=3)
    assert sorted(i.title for i in items) == sorted(
        [*(f"Issue {n}" for n in range(1, 13) if n != 9), "ABC-2 moved", "ABC-9 moved"])
    assert [i.title for i in items[-2:]] == ["ABC-2 moved", "ABC-9 moved"]
    assert all(not unread for _, unread in cursors), cursors


async def test_cloud_a_page_of_new_issues_is_one_search(jira: FakeJira) -> None:
    """Each page is searched again from the minute of the last issue read, one issue longer
    for that issue, so it still brings a whole page of new ones."""
    _backfill(jira, 12)
    items, _ = await _read_cloud(jira, page_size=3)
    assert [i.key for i in items] == [f"LOC-{n}" for n in range(1, 13)]
    assert jira.searches == 4


async def test_cloud_more_than_a_page_in_one_minute_all_arrive_once(jira: FakeJira) -> None:
    """No search from a minute gets past a minute fuller than a page: it is followed by token
    to its end, and read once more to be sure nothing shifted past the walk."""
    _one_minute(jira, 25)
    items, cursors = await _read_cloud(jira, page_size=10)
    assert [i.key for i in items] == [f"LOC-{n}" for n in range(1, 26)]
    assert all(not unread for _, unread in cursors), cursors
    assert jira.searches == 6  # 1 + the minute by token (3) + again (2) + after it (1)


async def test_cloud_an_issue_changed_within_a_crowded_minute_shifts_no_other_out(
        jira: FakeJira) -> None:
    """While the minute is followed by token ABC-3 changes, and the token steps over ABC-21.
    Reading the minute again finds it before anything later is read; meanwhile the cursor stays
    in that minute, from which a resumed sync would read again."""
    _one_minute(jira, 25)
    _change_on_search(jira, 3, "ABC-3", T0 + timedelta(hours=1))
    items, cursors = await _read_cloud(jira, page_size=10)
    assert sorted(i.title for i in items) == sorted(
        [*(f"Issue {n}" for n in range(1, 26)), "ABC-3 moved"])
    assert items[-1].title == "ABC-3 moved"
    assert any(unread for _, unread in cursors)  # the step over happened
    assert all(_minute_of(cursor) == _minute_of(T0) for cursor, unread in cursors if unread)


async def _snapshot(conn: asyncpg.Connection, tenant_id) -> dict[str, list[tuple]]:
    """Every synced row with its row version (xmin, xmax): a row written or even locked since
    shows as a new pair."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return {table: [tuple(r) for r in await conn.fetch(
            f"SELECT *, xmin::text, xmax::text FROM {table} ORDER BY id")]
            for table in ("work_items", "comments", "work_item_transitions", "work_item_links")}


async def test_a_resync_of_unchanged_items_writes_nothing(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 30)
    jira.link_issues("ABC-1", "ABC-2", "Blocks", at=T0 - timedelta(hours=40))
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=10, **FAST)
    before = await _snapshot(app_conn, tenant.id)
    # A comment edited without the issue's update moving is not read: the store trusts updated.
    jira.comments[jira.find("ABC-3")["id"]][0]["body"] = jira.body("edited unseen")
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=10,
                                     full=True, **FAST)
    assert (progress.items, progress.changed) == (30, 0)
    assert await _snapshot(app_conn, tenant.id) == before
    assert await _count(app_conn, tenant.id,
                        "SELECT count(*) FROM work_items WHERE version = 1") == 30
    assert len(before["comments"]) == sum(n % 4 for n in range(1, 31))
    assert len(before["work_item_transitions"]) == sum(n % 4 for n in range(1, 31))
    assert len(before["work_item_links"]) == 1


async def test_a_newer_update_rewrites_the_item_s_comments_and_moves(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 12)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=5, **FAST)
    issue = jira.find("ABC-3")
    later = T0 + timedelta(hours=1)
    comments = jira.comments[issue["id"]]
    comments[0].update(body=jira.body("edited"), updated=jira_time(later))
    comments.append({"id": f"{issue['id']}9", "author": {"displayName": "Dora"},
                     "body": jira.body("a new one"), "created": jira_time(later),
                     "updated": jira_time(later)})
    jira.update_issue("ABC-3", at=later, status="To Do")  # the 4th move
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=5, **FAST)
    assert progress.changed == 1
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        item = await app_conn.fetchrow(
            "SELECT id, status, version FROM work_items WHERE key = 'LOC-3'")
        bodies = [r["body"] for r in await app_conn.fetch(
            "SELECT body FROM comments WHERE work_item_id = $1 ORDER BY created_at", item["id"])]
        moves = await app_conn.fetch(
            "SELECT to_status FROM work_item_transitions WHERE work_item_id = $1 "
            "ORDER BY transitioned_at", item["id"])
    assert (item["status"], item["version"]) == ("To Do", 2)
    assert bodies == ["edited", "c1", "c2", "a new one"]
    assert [m["to_status"] for m in moves] == ["In Progress", "In Review", "Done", "To Do"]


async def test_an_item_given_its_parent_s_key_later_is_rewritten_at_the_same_update(
        make_tenant, admin_conn, app_conn, queries) -> None:
    """Asana yields a subtask met before its parent again, with the parent's key and the same
    modification time: the key and the parent count as changes, not only ``updated``."""
    tenant = await make_tenant()
    instance_id = await _instance(admin_conn, queries, tenant.id)
    child = Item(source_id="2", key="LOC-2", project_key="LOC", number=2, title="Child",
                 description=None, type="subtask", status="To Do", status_category="todo",
                 priority="none", assignee=None, reporter=None, labels=[], parent_key=None,
                 created=T0, updated=T0, resolved=None, due=None, raw={})
    parent = dataclasses.replace(child, source_id="1", key="LOC-1", number=1, title="Parent",
                                 type="task")
    for page in ([child], [parent, dataclasses.replace(child, parent_key="LOC-1")]):
        async with app_conn.transaction():
            await queries.set_tenant(app_conn, tenant_id=str(tenant.id))
            await queries.source_ensure_project(
                app_conn, tenant_id=tenant.id, project_key="LOC", name="LOC",
                instance_id=instance_id, source_ref="ABC")
            assert await write_items(app_conn, queries, tenant_id=tenant.id, source="jira",
                                     instance_id=instance_id, items=page) == len(page)
    async with app_conn.transaction():
        await queries.set_tenant(app_conn, tenant_id=str(tenant.id))
        row = await app_conn.fetchrow(
            "SELECT parent_key, version FROM work_items WHERE key = 'LOC-2'")
    assert (row["parent_key"], row["version"]) == ("LOC-1", 2)


async def test_an_answer_older_than_the_store_leaves_its_comments_alone(
        make_tenant, admin_conn, app_conn, queries) -> None:
    """A write-through's answer can arrive after a sync page that stored a newer version of the
    item: the item is not rolled back, and neither is a comment edited since."""
    tenant, other = await make_tenant(), await make_tenant()
    instance_id = await _instance(admin_conn, queries, tenant.id)
    older = Item(source_id="7", key="LOC-7", project_key="LOC", number=7, title="Old title",
                 description=None, type="task", status="To Do", status_category="todo",
                 priority="none", assignee=None, reporter=None, labels=[], parent_key=None,
                 created=T0, updated=T0 + timedelta(minutes=1), resolved=None, due=None, raw={},
                 comments=[Comment("c1", "ann", "first words", T0, T0 + timedelta(minutes=1))])
    newer = dataclasses.replace(
        older, title="New title", updated=T0 + timedelta(minutes=5),
        comments=[Comment("c1", "ann", "edited words", T0, T0 + timedelta(minutes=5))])
    for items, skip in (([newer], True), ([older], False)):
        async with app_conn.transaction():
            await queries.set_tenant(app_conn, tenant_id=str(tenant.id))
            await queries.source_ensure_project(
                app_conn, tenant_id=tenant.id, project_key="LOC", name="LOC",
                instance_id=instance_id, source_ref="ABC")
            await write_items(app_conn, queries, tenant_id=tenant.id, source="jira",
                              instance_id=instance_id, items=items, skip_unchanged=skip)
    async with app_conn.transaction():
        await queries.set_tenant(app_conn, tenant_id=str(tenant.id))
        row = await app_conn.fetchrow(
            "SELECT w.title, c.body FROM work_items w JOIN comments c ON c.work_item_id = w.id")
    assert (row["title"], row["body"]) == ("New title", "edited words")
    assert await _count(app_conn, other.id, "SELECT count(*) FROM comments") == 0


async def test_two_sites_of_one_kind_keep_their_own_items(serve_fake, make_tenant, admin_conn,
                                                           app_conn, queries) -> None:
    """Two Jira sites number their issues alike (ids from 10000 on each): each keeps its own
    items, and syncing one again moves nothing of the other's."""
    first, second = await serve_fake(FakeJira()), await serve_fake(FakeJira(projects={"XYZ"}))
    for n in range(1, 4):
        first.add_issue(f"ABC-{n}", summary=f"first {n}", updated=T0 + timedelta(minutes=n))
        second.add_issue(f"XYZ-{n}", summary=f"second {n}", updated=T0 + timedelta(minutes=n))
    assert {i["id"] for i in first.issues.values()} == {i["id"] for i in second.issues.values()}
    tenant = await make_tenant()
    ids = []
    for fake, projects in ((first, {"ABC": "AAA"}), (second, {"XYZ": "BBB"})):
        async with admin_conn.transaction():
            ids.append(await manage.add_source(
                admin_conn, queries, BOX, tenant_id=tenant.id, kind="jira",
                name=f"jira {projects}", base_url=fake.base_url, projects=projects,
                email=fake.email, token=fake.token))
    for source_id in (*ids, ids[0]):
        await manage.run_sync(admin_conn, queries, BOX, source_id, full=True, **FAST)
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        rows = await app_conn.fetch("SELECT key, title, source_instance_id, version "
                                    "FROM work_items ORDER BY key")
    assert [(r["key"], r["title"], r["source_instance_id"], r["version"]) for r in rows] == [
        *((f"AAA-{n}", f"first {n}", ids[0], 1) for n in range(1, 4)),
        *((f"BBB-{n}", f"second {n}", ids[1], 1) for n in range(1, 4))]


async def test_another_tenant_never_sees_synced_items_or_sources(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 10)
    jira.link_issues("ABC-1", "ABC-2", "Blocks", at=T0)
    owner, other = await make_tenant(), await make_tenant()
    source_id = await _add(admin_conn, queries, owner.id, jira)
    await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert await _count(app_conn, owner.id, "SELECT count(*) FROM work_items") == 10
    assert await _count(app_conn, owner.id, "SELECT count(*) FROM work_item_links") == 1
    assert await _count(app_conn, owner.id, "SELECT count(*) FROM workflow_transitions") == 30
    for sql in ("SELECT count(*) FROM work_items", "SELECT count(*) FROM comments",
                "SELECT count(*) FROM work_item_transitions", "SELECT count(*) FROM projects",
                "SELECT count(*) FROM source_instances", "SELECT count(*) FROM work_item_links",
                "SELECT count(*) FROM workflow_statuses",
                "SELECT count(*) FROM workflow_transitions"):
        assert await _count(app_conn, other.id, sql) == 0, sql
    async with admin_conn.transaction():
        listed = await manage.list_sources(admin_conn, queries, other.id)
        mine = await manage.list_sources(admin_conn, queries, owner.id)
    assert listed == []
    assert len(mine) == 1 and "credentials" not in mine[0] and mine[0]["has_credentials"]
    assert jira.token not in orjson.dumps(mine, default=str).decode()


async def test_cli_add_list_test_sync_remove(jira: FakeJira, make_tenant, database_urls,
                                             tmp_path: Path) -> None:
    import asyncio
    import sys

    from spiral_mcp.config import SETTINGS

    _backfill(jira, 12)
    tenant = await make_tenant()
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env |= {"ADMIN_DATABASE_URL": database_urls.admin, "SPIRAL_DATA_DIR": str(tmp_path),
            "SPIRAL_SECRET_KEY": "x" * 43 + "=", "JIRA_TOKEN": jira.token,
            "SOURCE_PRIVATE_NETWORKS": LOOPBACK_SETTING}  # the fakes are on loopback

    async def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spiral_mcp", "source", *args, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await run("add", "--tenant", str(tenant.id), "--kind", "jira", "--name",
                               "acme", "--base-url", jira.base_url, "--project", "ABC=CLI",
                               "--email", jira.email, "--token-env", "JIRA_TOKEN")
    assert code == 0, err
    source_id = out.strip()
    code, out, err = await run("list", "--tenant", str(tenant.id))
    assert code == 0 and source_id in out and jira.token not in out + err
    code, out, err = await run("test", source_id)
    assert (code, out.strip()) == (0, f"ok: {jira.base_url} reachable, signed in as "
                                      f"{jira.email}"), err
    code, out, err = await run("sync", source_id)
    assert code == 0 and out.startswith("synced: pages 1, items 12"), err
    # A token from stdin; a wrong one fails the test with one line naming the cause.
    code, out, err = await run("add", "--tenant", str(tenant.id), "--kind", "jira", "--name",
                               "bad", "--base-url", jira.base_url, "--project", "ABC=CLJ",
                               "--email", jira.email, stdin=b"wrong-token\n")
    assert code == 0, err
    code, out, err = await run("test", out.strip())
    assert code == 1 and err.count("\n") == 1 and "401" in err and "wrong-token" not in err
    code, out, err = await run("add", "--tenant", str(tenant.id), "--kind", "jira", "--name",
                               "plain", "--base-url", "http://jira.example.com", "--project",
                               "ABC", "--email", "e", "--token-env", "JIRA_TOKEN")
    assert code == 1 and "https" in err
    # Other kinds: GitHub's API address is the default, its projects are owner/repo.
    code, out, err = await run("add", "--tenant", str(tenant.id), "--kind", "github", "--name",
                               "octo", "--project", "octo-org/web=WEB", "--token-env",
                               "JIRA_TOKEN")
    assert code == 0, err
    code, out, err = await run("list", "--tenant", str(tenant.id))
    assert '"base_url": "https://api.github.com"' in out and '"octo-org/web": "WEB"' in out
    code, out, err = await run("add", "--tenant", str(tenant.id), "--kind", "github", "--name",
                               "octo2", "--project", "octo-org/api=API", "--map",
                               "priority_labels:sev1=critical", "--token-env", "JIRA_TOKEN")
    assert code == 0, err
    code, out, err = await run("list", "--tenant", str(tenant.id))
    assert '"priority_labels": {' in out and '"sev1": "critical"' in out
    code, out, err = await run("add", "--tenant", str(tenant.id), "--kind", "github", "--name",
                               "octo3", "--project", "octo-org/x=X", "--map", "sev1=critical",
                               "--token-env", "JIRA_TOKEN")
    assert code == 1 and "github has no mapping" in err, err
    code, out, err = await run("add", "--tenant", str(tenant.id), "--kind", "asana", "--name",
                               "a", "--project", "ABC=ABC", "--token-env", "JIRA_TOKEN")
    assert code == 1 and "'ABC' is not a project reference for asana (like 12" in err, err
    code, out, err = await run("remove", source_id)
    assert code == 0, err
    code, out, err = await run("test", source_id)
    assert code == 1 and "no source with id" in err


# --- workflows and links on sync -------------------------------------------------------------
async def _workflow(conn: asyncpg.Connection, tenant_id) -> tuple[list[tuple], set[tuple]]:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        statuses = await conn.fetch(
            "SELECT status, category, is_initial FROM workflow_statuses "
            "WHERE project_key = 'LOC' ORDER BY position")
        moves = await conn.fetch("SELECT transition_id, name, from_status, to_status "
                                 "FROM workflow_transitions WHERE project_key = 'LOC'")
    return [tuple(r) for r in statuses], {tuple(r) for r in moves}


async def test_the_adapter_reads_a_project_workflow(jira: FakeJira) -> None:
    adapter = JiraAdapter(jira.base_url, email=jira.email, token=jira.token,
                          projects={"ABC": "LOC"}, **FAST)
    workflow = await adapter.workflow("ABC")
    with pytest.raises(SourceError, match="not mirrored") as info:
        await adapter.workflow("../myself")
    await adapter.close()
    assert info.value.kind == "config"
    # The union over issue types; the "new" status first although Bug lists In Progress first.
    assert workflow.statuses == [("To Do", "todo"), ("In Progress", "in_progress"),
                                 ("Blocked", "blocked"), ("In Review", "in_review"),
                                 ("Done", "done"), ("Won't Do", "cancelled")]
    assert len(workflow.transitions) == 6 * 5
    assert ("1->3", "In Progress", "To Do", "In Progress") in workflow.transitions


async def test_sync_replaces_the_default_workflow_and_keeps_retired_statuses(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 12)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    statuses, moves = await _workflow(app_conn, tenant.id)
    assert statuses == [("To Do", "todo", True), ("In Progress", "in_progress", False),
                        ("Blocked", "blocked", False), ("In Review", "in_review", False),
                        ("Done", "done", False), ("Won't Do", "cancelled", False)]
    assert len(moves) == 30 and ("5->1", "To Do", "Done", "To Do") in moves
    assert not any(name == "Start progress" for _, name, _, _ in moves)  # the default's
    # Jira retires statuses: the workflow shrinks, items keep the status Jira gave them.
    jira.type_statuses = {"Task": ("In Progress", "Done", "To Do")}
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, full=True, **FAST)
    assert progress.items == 12 and progress.changed == 0
    statuses, moves = await _workflow(app_conn, tenant.id)
    assert statuses == [("To Do", "todo", True), ("In Progress", "in_progress", False),
                        ("Done", "done", False)]
    assert moves == {("1->3", "In Progress", "To Do", "In Progress"),
                     ("1->5", "Done", "To Do", "Done"), ("3->1", "To Do", "In Progress", "To Do"),
                     ("3->5", "Done", "In Progress", "Done"), ("5->1", "To Do", "Done", "To Do"),
                     ("5->3", "In Progress", "Done", "In Progress")}
    assert await _count(app_conn, tenant.id,
                        "SELECT count(*) FROM work_items WHERE status = 'Won''t Do' "
                        "AND status_category = 'cancelled'") == 2


async def test_links_are_synced_when_both_ends_are_stored(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 10)
    jira.add_issue("XYZ-1", summary="Elsewhere", updated=T0)
    jira.link_issues("ABC-1", "ABC-2", "Blocks", at=T0 - timedelta(hours=20))
    jira.link_issues("ABC-3", "ABC-9", "Duplicate", at=T0 - timedelta(hours=20))
    jira.link_issues("ABC-6", "ABC-5", "Cloners", at=T0 - timedelta(hours=20))
    jira.link_issues("ABC-7", "ABC-8", "Relates", at=T0 - timedelta(hours=20))
    jira.link_issues("ABC-4", "XYZ-1", "Blocks", at=T0 - timedelta(hours=20))
    # ABC-9 moves to the last page: ABC-3's page cannot link to it yet, its own page does.
    jira.update_issue("ABC-9", at=T0 + timedelta(hours=1), summary="Later")
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=3, **FAST)
    assert progress.pages == 4
    sql = ("SELECT l.link_type, o.key, i.key FROM work_item_links l "
           "JOIN work_items o ON o.id = l.outward_id JOIN work_items i ON i.id = l.inward_id")
    expected = {("blocks", "LOC-1", "LOC-2"), ("duplicates", "LOC-3", "LOC-9"),
                ("clones", "LOC-6", "LOC-5"), ("relates", "LOC-7", "LOC-8")}
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        assert {tuple(r) for r in await app_conn.fetch(sql)} == expected
    await manage.run_sync(admin_conn, queries, BOX, source_id, full=True, **FAST)
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM work_item_links") == 4


async def test_server_data_center_syncs_over_rest_v2_with_a_bearer_token(
        serve_fake, make_tenant, admin_conn, app_conn, queries) -> None:
    jira = await serve_fake(FakeJira(server=True))
    _backfill(jira, 25)
    jira.link_issues("ABC-1", "ABC-2", "Blocks", at=T0)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=10, **FAST)
    assert (progress.pages, progress.items, progress.changed) == (3, 25, 25)
    assert jira.log.count(("GET", "/rest/api/2/search")) == 3
    assert all(path.startswith("/rest/api/2/") for _, path in jira.log)
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        row = await app_conn.fetchrow("SELECT * FROM work_items WHERE key = 'LOC-7'")
        comments = await app_conn.fetch(
            "SELECT body FROM comments WHERE work_item_id = $1 ORDER BY created_at", row["id"])
        moves = await app_conn.fetchval(
            "SELECT count(*) FROM work_item_transitions WHERE work_item_id = $1", row["id"])
    assert row["description"] == "About Issue 7." and row["status"] == "In Progress"
    assert [c["body"] for c in comments] == ["c0", "c1", "c2"]  # the third from /comment
    assert moves == 3
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM work_item_links") == 1
    assert await _count(app_conn, tenant.id, "SELECT count(*) FROM workflow_statuses") == 6
    jira.token = "rotated"
    with pytest.raises(SourceError, match="refused the credentials"):
        await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)


# --- writes ----------------------------------------------------------------------------------
def _adapter(jira: FakeJira) -> JiraAdapter:
    return JiraAdapter(jira.base_url, email=None if jira.server else jira.email,
                       token=jira.token, projects={"ABC": "LOC"}, **FAST)


def _ref(jira: FakeJira, key: str) -> Ref:
    issue = jira.find(key)
    assert issue is not None
    return Ref(issue["id"], key.replace("ABC-", "LOC-"), "ABC")


def _draft(**changes) -> Draft:
    fields = {"title": "Crash on save", "description": "Steps:\n\n1. **save** twice\n2. see `E1`",
              "type": "bug", "priority": "high", "assignee": "alice@x.io",
              "labels": ["ops", "p1"], "due": date(2025, 4, 1), "parent": None}
    return Draft(**{**fields, **changes})


async def test_create_writes_jira_fields_and_returns_the_item_as_jira_has_it(
        jira: FakeJira) -> None:
    _backfill(jira, 2)
    adapter = _adapter(jira)
    item = await adapter.create("ABC", _draft(parent=_ref(jira, "ABC-1")))
    await adapter.close()
    method, path, body = jira.writes[0]
    assert (method, path) == ("POST", "/rest/api/3/issue")
    fields = body["fields"]
    assert fields["project"] == {"key": "ABC"} and fields["issuetype"] == {"name": "Bug"}
    assert fields["priority"] == {"name": "High"} and fields["duedate"] == "2025-04-01"
    assert fields["assignee"] == {"accountId": "5b10ac8d82e05b22cc7d4ef5"}
    assert fields["parent"] == {"key": "ABC-1"} and fields["labels"] == ["ops", "p1"]
    assert fields["description"]["type"] == "doc"
    assert (item.key, item.project_key, item.number) == ("LOC-3", "LOC", 3)
    assert item.source_id == jira.find("ABC-3")["id"]  # type: ignore[index]
    assert (item.title, item.type, item.priority, item.status, item.status_category) == (
        "Crash on save", "bug", "high", "To Do", "todo")
    assert item.description == "Steps:\n\n1. **save** twice\n2. see `E1`"
    assert (item.assignee, item.labels, item.parent_key) == ("alice@x.io", ["ops", "p1"], "LOC-1")
    assert item.due == datetime(2025, 4, 1, tzinfo=UTC)


@pytest.mark.parametrize(("draft", "message"), [
    (_draft(labels=["two words"]), "labels: The label 'two words' contains spaces"),
    (_draft(title=""), "summary: You must specify a summary"),
])
async def test_create_refused_by_jira_names_the_field(jira: FakeJira, draft: Draft,
                                                      message: str) -> None:
    adapter = _adapter(jira)
    with pytest.raises(SourceError, match=message) as info:
        await adapter.create("ABC", draft)
    await adapter.close()
    assert (info.value.kind, info.value.status) == ("refused", 400)
    assert jira.issues == {}


async def test_an_unknown_assignee_or_project_is_refused_before_any_write(
        jira: FakeJira) -> None:
    adapter = _adapter(jira)
    with pytest.raises(SourceError, match=r"no Jira user matches 'nobody@x\.io'") as info:
        await adapter.create("ABC", _draft(assignee="nobody@x.io"))
    assert info.value.kind == "refused"
    with pytest.raises(SourceError, match="'XYZ' is not mirrored"):
        await adapter.create("XYZ", _draft())
    await adapter.close()
    assert jira.writes == []


async def test_update_changes_fields_and_reads_back(jira: FakeJira) -> None:
    _backfill(jira, 3)
    jira.update_issue("ABC-3", at=T0, summary="Old")
    adapter = _adapter(jira)
    ref = _ref(jira, "ABC-3")
    item = await adapter.update(ref, {"title": "New title", "priority": "critical",
                                      "labels": [], "due": date(2025, 5, 2),
                                      "description": "# Why\n\nBecause.", "assignee": None,
                                      "parent": _ref(jira, "ABC-1")})
    assert jira.writes[-1][:2] == ("PUT", f"/rest/api/3/issue/{ref.source_id}")
    assert jira.writes[-1][2]["fields"]["assignee"] is None
    assert (item.key, item.title, item.priority, item.labels) == ("LOC-3", "New title",
                                                                  "critical", [])
    assert item.description == "# Why\n\nBecause." and item.parent_key == "LOC-1"
    assert item.due == datetime(2025, 5, 2, tzinfo=UTC)
    item = await adapter.update(ref, {"due": None, "parent": None})
    assert (item.due, item.parent_key) == (None, None)
    with pytest.raises(SourceError, match="labels: The label 'a b' contains spaces") as info:
        await adapter.update(ref, {"labels": ["a b"], "title": "Never"})
    await adapter.close()
    assert (info.value.kind, info.value.status) == ("refused", 400)
    assert jira.find("ABC-3")["fields"]["summary"] == "New title"  # type: ignore[index]


async def test_transition_takes_the_issue_s_own_transition_to_the_status(
        jira: FakeJira) -> None:
    _backfill(jira, 6)  # ABC-6 is in To Do
    adapter = _adapter(jira)
    ref = _ref(jira, "ABC-6")
    item = await adapter.transition(ref, "in progress")
    assert jira.writes[-1] == ("POST", f"/rest/api/3/issue/{ref.source_id}/transitions",
                               {"transition": {"id": "31"}})
    assert (item.status, item.status_category) == ("In Progress", "in_progress")
    assert [(t.from_status, t.to_status, t.to_category) for t in item.transitions][-1] == (
        "To Do", "In Progress", "in_progress")
    writes = len(jira.writes)
    with pytest.raises(SourceError) as info:
        await adapter.transition(ref, "Won't Do")
    await adapter.close()
    assert info.value.kind == "refused"
    assert str(info.value) == ("Jira does not let ABC-6 move to \"Won't Do\"; it can move to: "
                               "Blocked, Done, In Review, To Do")
    assert len(jira.writes) == writes  # nothing was sent


async def test_a_failure_after_jira_took_the_write_is_ambiguous(jira: FakeJira) -> None:
    """Reading back a write Jira took can fail too: the change is made, so the failure says it
    may be there (a retry could make it twice). One before Jira took anything stays plain."""
    _backfill(jira, 6)  # ABC-6 is in To Do
    adapter = _adapter(jira)
    created = str(jira._next_id + 1)
    jira.faults_at[("GET", f"/rest/api/3/issue/{created}")] = [(404, {})]
    with pytest.raises(SourceError, match="may have reached") as info:
        await adapter.create("ABC", _draft())
    assert (info.value.kind, info.value.status, info.value.ambiguous) == ("not_found", 404, True)
    assert jira.find("ABC-7")["id"] == created  # type: ignore[index]
    ref = _ref(jira, "ABC-6")
    read_back = ("GET", f"/rest/api/3/issue/{ref.source_id}")
    for write in (adapter.update(ref, {"title": "Renamed"}),
                  adapter.transition(ref, "In Progress")):
        jira.faults_at[read_back] = [(503, {})] * 5
        with pytest.raises(SourceError, match="may have reached") as info:
            await write
        assert (info.value.kind, info.value.ambiguous) == ("server", True)
    fields = jira.find("ABC-6")["fields"]  # type: ignore[index]
    assert (fields["summary"], fields["status"]["name"]) == ("Renamed", "In Progress")
    jira.faults_at[("GET", f"{read_back[1]}/transitions")] = [(503, {})] * 5
    with pytest.raises(SourceError) as info:
        await adapter.transition(ref, "Done")
    await adapter.close()
    assert (info.value.kind, info.value.ambiguous) == ("server", False)


async def test_comment_is_sent_as_adf_and_returned_as_markdown(jira: FakeJira) -> None:
    _backfill(jira, 1)
    adapter = _adapter(jira)
    ref = _ref(jira, "ABC-1")
    comment = await adapter.comment(ref, "Looks **good**, see <https://ci.example/42>")
    assert jira.writes[-1][2]["body"]["content"][0]["content"][1] == {
        "type": "text", "text": "good", "marks": [{"type": "strong"}]}
    assert comment.body == "Looks **good**, see <https://ci.example/42>"
    assert comment.author == jira.email and comment.source_id
    with pytest.raises(SourceError, match="comment: Comment body can not be empty") as info:
        await adapter.comment(ref, "   ")
    await adapter.close()
    assert info.value.kind == "refused"


async def test_link_is_created_at_jira_and_read_from_both_ends(jira: FakeJira) -> None:
    _backfill(jira, 2)
    adapter = _adapter(jira)
    assert await adapter.link(_ref(jira, "ABC-2"), _ref(jira, "ABC-1"), "duplicates") is True
    assert jira.writes[-1] == ("POST", "/rest/api/3/issueLink", {
        "type": {"name": "Duplicate"}, "outwardIssue": {"key": "ABC-2"},
        "inwardIssue": {"key": "ABC-1"}})
    items = {i.key: i async for page in adapter.pages(since=None) for i in page.items}
    await adapter.close()
    assert items["LOC-2"].links == [Link("duplicates", "LOC-1", True)]
    assert items["LOC-1"].links == [Link("duplicates", "LOC-2", False)]


async def test_server_writes_plain_text_and_names_users(serve_fake) -> None:
    jira = await serve_fake(FakeJira(server=True))
    _backfill(jira, 6)
    adapter = _adapter(jira)
    item = await adapter.create("ABC", _draft(assignee="Alice Liddell"))
    fields = jira.writes[0][2]["fields"]
    assert jira.writes[0][1] == "/rest/api/2/issue"
    assert fields["description"] == "Steps:\n\n1. **save** twice\n2. see `E1`"
    assert fields["assignee"] == {"name": "alice"}
    assert (item.key, item.description, item.assignee) == (
        "LOC-7", "Steps:\n\n1. **save** twice\n2. see `E1`", "alice@x.io")
    ref = _ref(jira, "ABC-7")
    comment = await adapter.comment(ref, "Plain *wiki*")
    assert jira.writes[-1] == ("POST", f"/rest/api/2/issue/{ref.source_id}/comment",
                               {"body": "Plain *wiki*"})
    assert comment.body == "Plain *wiki*"
    item = await adapter.transition(ref, "Won't Do")
    await adapter.close()
    assert (item.status, item.status_category) == ("Won't Do", "cancelled")
