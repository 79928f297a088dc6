"""Sources, foundation: encrypted credentials, the Jira adapter against a fake Jira speaking the
real wire format, and the resumable incremental sync (issue 7)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.sources import manage
from spiral_mcp.sources.base import SourceError
from spiral_mcp.sources.jira import JiraAdapter, category_for, priority_for, type_for
from spiral_mcp.sources.secrets import CredentialError, SecretBox, load_secret_box
from tests.fake_jira import FakeJira

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


# --- against the fake Jira -------------------------------------------------------------------
@pytest.fixture
async def jira():
    fake = FakeJira()
    server = TestServer(fake.app())
    await server.start_server()
    fake.base_url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    yield fake
    await server.close()


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
            projects={"ABC": "LOC"}, email=fake.email, token=token or fake.token)


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
    # Three moves, two inline and the third fetched from /changelog; three comments likewise.
    assert [tuple(m) for m in moves] == [("To Do", "In Progress", "in_progress"),
                                         ("In Progress", "In Review", "in_review"),
                                         ("In Review", "Done", "done")]
    assert comments == 3
    assert ("GET", f"/rest/api/3/issue/{jira_issue['id']}/changelog") not in jira.log  # 10%4=2


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
    # /myself first (for the time zone): 429 with Retry-After 1, then 503, then 502, then fine.
    jira.faults = [(429, {"Retry-After": "1"}), (503, {}), (502, {})]
    started = datetime.now(UTC)
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert progress.items == 5
    assert (datetime.now(UTC) - started).total_seconds() >= 1.0  # waited as asked
    assert jira.log.count(("GET", "/rest/api/3/myself")) == 4
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


async def test_a_sync_killed_half_way_resumes_without_duplicates_or_gaps(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 100)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    jira.broken_page = 3
    with pytest.raises(SourceError, match="500"):
        await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=20, retries=1,
                              **FAST)
    count_sql = "SELECT count(*) FROM work_items WHERE source = 'jira'"
    assert await _count(app_conn, tenant.id, count_sql) == 40  # pages 1 and 2 committed
    async with admin_conn.transaction():
        row = await manage.find_source(admin_conn, queries, source_id)
    assert orjson.loads(row["sync_cursor"])["updated"].startswith("2025-02-27T")  # ABC-40
    jira.broken_page = None
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


async def test_another_tenant_never_sees_synced_items_or_sources(
        jira: FakeJira, make_tenant, admin_conn, app_conn, queries) -> None:
    _backfill(jira, 10)
    owner, other = await make_tenant(), await make_tenant()
    source_id = await _add(admin_conn, queries, owner.id, jira)
    await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert await _count(app_conn, owner.id, "SELECT count(*) FROM work_items") == 10
    for sql in ("SELECT count(*) FROM work_items", "SELECT count(*) FROM comments",
                "SELECT count(*) FROM work_item_transitions", "SELECT count(*) FROM projects",
                "SELECT count(*) FROM source_instances"):
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
            "SPIRAL_SECRET_KEY": "x" * 43 + "=", "JIRA_TOKEN": jira.token}

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
    code, out, err = await run("remove", source_id)
    assert code == 0, err
    code, out, err = await run("test", source_id)
    assert code == 1 and "no source with id" in err
