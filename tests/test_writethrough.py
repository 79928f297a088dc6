"""Write-through (issue 7): the jira write tools on a mirrored project change the source first and
store its answer; a refusing or unreachable source is UPSTREAM_ERROR with the store unchanged; an
idempotency key keeps a retry from writing twice at the source; other tenants see nothing. Over
real HTTP, against the fake Jira."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from spiral_mcp.server.app import create_app
from spiral_mcp.sources import manage
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_asana import FakeAsana
from tests.fake_github import FakeGitHub
from tests.fake_jira import FakeJira
from tests.test_source_sync_server import BOX, SECRET_KEY, add_source, backfill, envelope, scalar

ASANA_PROJECT = "1200000000000042"


@pytest.fixture
async def jira(serve_fake) -> FakeJira:
    return await serve_fake(FakeJira())


@pytest.fixture
async def serve_spiral(database_urls) -> AsyncIterator[TestClient]:
    """The server with source access and no background sync: syncs happen when a test asks."""
    settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0")
    client = TestClient(TestServer(create_app(settings, database_url=database_urls.runtime)))
    await client.start_server()
    yield client
    await client.close()


@dataclasses.dataclass
class Site:
    """A tenant whose project LOC mirrors the fake Jira's ABC (ABC-1..3 synced as LOC-1..3)."""

    jira: FakeJira
    tenant: Tenant
    client: TestClient
    source_id: uuid.UUID
    conn: asyncpg.Connection

    async def call(self, name: str, **arguments: Any) -> dict[str, Any]:
        return await envelope(self.client, self.tenant, name, **arguments)

    async def ok(self, name: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(name, **arguments)
        assert result["success"], result
        return result["data"]

    async def upstream_error(self, name: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(name, **arguments)
        assert result["error"]["code"] == "UPSTREAM_ERROR", result
        return result["error"]

    async def row(self, key: str) -> asyncpg.Record | None:
        async with self.conn.transaction():
            await self.conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                    str(self.tenant.id))
            return await self.conn.fetchrow("SELECT * FROM work_items WHERE key = $1", key)

    async def count(self, sql: str, *args: Any) -> int:
        return await scalar(self.conn, self.tenant.id, sql, *args)

    def issue(self, key: str) -> dict[str, Any]:
        found = self.jira.find(key)
        assert found is not None, key
        return found


@pytest.fixture
async def site(jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn,
               serve_spiral: TestClient, queries) -> Site:
    backfill(jira, 3)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    site = Site(jira, tenant, serve_spiral, source_id, app_conn)
    await site.ok("sources_sync", source_id=str(source_id))
    jira.writes.clear()
    return site


async def test_create_goes_to_the_source_and_a_retry_with_its_key_does_not(
        site: Site, admin_conn) -> None:
    arguments = {"project_key": "LOC", "summary": "Made through spiral", "issue_type": "bug",
                 "priority": "high", "labels": ["api"], "description": "Steps **here**",
                 "assignee": "alice@x.io", "due_date": "2030-05-17",
                 "custom_fields": {"team": "core"}, "idempotency_key": "create-1"}
    issue = await site.ok("jira_create_issue", **arguments)
    made = site.issue("ABC-4")
    assert (issue["key"], issue["source"], issue["source_id"]) == ("LOC-4", "jira", made["id"])
    assert (issue["summary"], issue["type"], issue["priority"]) == (
        "Made through spiral", "bug", "high")
    assert issue["assignee"] == "alice@x.io" and issue["labels"] == ["api"]
    assert issue["custom_fields"] == {"team": "core"} and issue["version"] == 1
    assert made["fields"]["priority"] == {"name": "High"}
    assert made["fields"]["duedate"] == "2030-05-17"
    row = await site.row("LOC-4")
    assert row["source_id"] == made["id"] and row["title"] == "Made through spiral"
    # Audited in the write's transaction, as the owner reads it.
    assert await scalar(admin_conn, site.tenant.id, "SELECT count(*) FROM audit_log WHERE "
                        "tool = 'jira_create_issue' AND outcome = 'ok'") == 1
    again = await site.call("jira_create_issue", **arguments)
    assert again["replayed"] and again["data"] == issue
    assert [w[:2] for w in site.jira.writes] == [("POST", "/rest/api/3/issue")]
    assert site.jira.find("ABC-5") is None


async def test_update_goes_to_the_source_after_the_version_check(site: Site) -> None:
    version = (await site.row("LOC-1"))["version"]
    stale = await site.call("jira_update_issue", issue_key="LOC-1", expected_version=version + 7,
                            fields={"summary": "Never"})
    assert stale["error"]["code"] == "CONFLICT"
    assert site.jira.writes == []  # refused before the source was asked
    changed = await site.ok("jira_update_issue", issue_key="loc-1", expected_version=version,
                            fields={"summary": "Renamed through spiral", "priority": "low",
                                    "labels": ["a", "b"], "custom_fields": {"size": 3}})
    assert changed["changed"]["summary"] == {"from": "Issue 1", "to": "Renamed through spiral"}
    assert changed["changed"]["priority"] == {"from": "medium", "to": "low"}
    assert changed["changed"]["custom_fields"]["to"] == {"size": 3}
    fields = site.issue("ABC-1")["fields"]
    assert (fields["summary"], fields["priority"], fields["labels"]) == (
        "Renamed through spiral", {"name": "Low"}, ["a", "b"])
    assert "custom_fields" not in str(site.jira.writes)  # the store's own field stays home
    row = await site.row("LOC-1")
    assert (row["title"], row["priority"], row["labels"]) == ("Renamed through spiral", "low",
                                                              ["a", "b"])
    assert row["version"] == changed["version"] > version


async def test_transition_with_a_comment_goes_to_the_source(site: Site) -> None:
    moved = await site.ok("jira_transition_issue", issue_key="LOC-1", status="In Progress",
                          comment="Picking this up.")
    assert (moved["from_status"], moved["to_status"], moved["to_category"]) == (
        "To Do", "In Progress", "in_progress")
    assert site.issue("ABC-1")["fields"]["status"]["name"] == "In Progress"
    at_source = site.jira.comments[site.issue("ABC-1")["id"]]
    assert len(at_source) == 1
    row = await site.row("LOC-1")
    assert (row["status"], row["version"]) == ("In Progress", moved["version"])
    assert await site.count("SELECT count(*) FROM comments WHERE id = $1 AND source_id = $2 "
                            "AND body = 'Picking this up.'", moved["comment_id"],
                            at_source[0]["id"]) == 1
    assert await site.count("SELECT count(*) FROM work_item_transitions WHERE work_item_id = $1 "
                            "AND to_status = 'In Progress'", row["id"]) == 1


async def test_a_move_the_source_refuses_is_upstream_error_and_changes_nothing(
        site: Site) -> None:
    before = await site.row("LOC-2")
    # The synced workflow has Done; Jira's own allows To Do -> In Progress or Won't Do only.
    error = await site.upstream_error("jira_transition_issue", issue_key="LOC-2", status="Done")
    assert "can move to: In Progress, Won't Do" in error["message"]
    assert site.issue("ABC-2")["fields"]["status"]["name"] == "To Do"
    after = await site.row("LOC-2")
    assert (after["status"], after["version"]) == (before["status"], before["version"])


async def test_comment_and_link_go_to_the_source(site: Site) -> None:
    comment = await site.ok("jira_add_comment", issue_key="LOC-3", body="Seen on **prod**.")
    (at_source,) = site.jira.comments[site.issue("ABC-3")["id"]]
    assert at_source["body"]["type"] == "doc"  # sent as ADF
    assert await site.count("SELECT count(*) FROM comments WHERE id = $1 AND source_id = $2",
                            comment["id"], at_source["id"]) == 1
    link = await site.ok("jira_link_issues", outward_issue_key="LOC-2",
                         inward_issue_key="LOC-1", link_type="is blocked by")
    assert link["description"] == "LOC-1 blocks LOC-2"
    assert [(name, out, inward) for _, name, out, inward in site.jira.links] == [
        ("Blocks", site.issue("ABC-1")["id"], site.issue("ABC-2")["id"])]
    assert await site.count("SELECT count(*) FROM work_item_links WHERE id = $1 AND "
                            "link_type = 'blocks'", link["id"]) == 1


async def test_a_link_that_exists_is_refused_before_the_source_is_asked(site: Site) -> None:
    """A duplicate (the reverse of a "relates" is one) is CONFLICT from the store alone: the
    source gets no second copy, and the call's idempotency key is free again."""
    await site.ok("jira_link_issues", outward_issue_key="LOC-1", inward_issue_key="LOC-2",
                  link_type="relates to")
    site.jira.writes.clear()
    for outward, inward, key in (("LOC-2", "LOC-1", "dup-1"), ("LOC-1", "LOC-2", "dup-2"),
                                 ("LOC-2", "LOC-1", "dup-1")):
        again = await site.call("jira_link_issues", outward_issue_key=outward,
                                inward_issue_key=inward, link_type="relates",
                                idempotency_key=key)
        assert again["error"]["code"] == "CONFLICT", again
        assert "the link already exists" in again["error"]["message"]
    assert site.jira.writes == [] and len(site.jira.links) == 1
    assert await site.count("SELECT count(*) FROM work_item_links") == 1


async def test_refusals_are_upstream_errors_with_the_sources_status_and_words(
        site: Site) -> None:
    error = await site.upstream_error("jira_create_issue", project_key="LOC", summary="x" * 300)
    assert error["details"] == [{"kind": "refused", "status": 400, "ambiguous": False}]
    assert "Summary must be less than 255 characters" in error["message"]
    assert await site.row("LOC-4") is None
    site.jira.faults = [(409, {})]
    before = await site.row("LOC-1")
    error = await site.upstream_error("jira_update_issue", issue_key="LOC-1",
                                      fields={"summary": "Clash"})
    assert error["details"] == [{"kind": "bad_response", "status": 409, "ambiguous": False}]
    after = await site.row("LOC-1")
    assert (after["title"], after["version"]) == (before["title"], before["version"])
    # A failed call frees its idempotency key: the retry runs, and writes once.
    arguments = {"project_key": "LOC", "summary": "Second try", "idempotency_key": "k-1"}
    site.jira.faults = [(409, {})]
    await site.upstream_error("jira_create_issue", **arguments)
    created = await site.ok("jira_create_issue", **arguments)
    assert created["key"] == "LOC-4" and site.issue("ABC-4")["fields"]["summary"] == "Second try"


async def test_a_create_whose_fate_is_unknown_keeps_its_key(site: Site) -> None:
    """A 5xx to a create may hide a created issue: the call says so, it is not retried, and
    the same idempotency key is held back, so the agent's retry cannot create a second one."""
    arguments = {"project_key": "LOC", "summary": "Maybe made", "idempotency_key": "unsure-1"}
    site.jira.faults = [(502, {})]
    error = await site.upstream_error("jira_create_issue", **arguments)
    assert error["details"] == [{"kind": "server", "status": 502, "ambiguous": True}]
    assert "may have made the change" in error["message"]
    retry = await site.call("jira_create_issue", **arguments)
    assert retry["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS", retry
    assert [w[:2] for w in site.jira.writes] == []  # the fake refused before creating
    assert site.jira.log.count(("POST", "/rest/api/3/issue")) == 1
    # A plain refusal (nothing made) frees its key, as before.
    site.jira.faults = [(400, {})]
    again = {**arguments, "idempotency_key": "sure-1"}
    await site.upstream_error("jira_create_issue", **again)
    assert (await site.ok("jira_create_issue", **again))["key"] == "LOC-4"


async def test_a_create_made_but_not_read_back_keeps_its_key(site: Site) -> None:
    """Jira created the issue, then reading it back failed: not a refusal that left everything
    as it was, so the key is held back and a retry makes no second issue."""
    arguments = {"project_key": "LOC", "summary": "Made, unread", "idempotency_key": "unread-1"}
    site.jira.faults_at[("GET", f"/rest/api/3/issue/{site.jira._next_id + 1}")] = [(404, {})]
    error = await site.upstream_error("jira_create_issue", **arguments)
    assert error["details"] == [{"kind": "not_found", "status": 404, "ambiguous": True}]
    assert "may have reached" in error["message"]
    retry = await site.call("jira_create_issue", **arguments)
    assert retry["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS", retry
    assert [w[:2] for w in site.jira.writes] == [("POST", "/rest/api/3/issue")]
    assert site.jira.find("ABC-4") is not None and site.jira.find("ABC-5") is None
    assert await site.row("LOC-4") is None


async def test_an_unreachable_source_is_upstream_error_and_stores_nothing(
        site: Site, admin_conn) -> None:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                 str(site.tenant.id))
        await admin_conn.execute("UPDATE source_instances SET base_url = 'http://127.0.0.1:9'")
    comments = "SELECT count(*) FROM comments"
    before = await site.count(comments)
    error = await site.upstream_error("jira_add_comment", issue_key="LOC-1", body="Lost")
    assert error["details"] == [{"kind": "unreachable", "status": None, "ambiguous": False}]
    assert await site.count(comments) == before
    error = await site.upstream_error("jira_link_issues", outward_issue_key="LOC-1",
                                      inward_issue_key="LOC-2", link_type="relates to")
    assert await site.count("SELECT count(*) FROM work_item_links") == 0


async def test_a_source_that_resets_the_connection_is_upstream_error(
        site: Site, admin_conn, resetting_host: tuple[str, list[bytes]]) -> None:
    """A reset is the source's failure, never "the database is unreachable"; one after a
    comment was sent may hide it, so the key is held back."""
    base_url, heads = resetting_host
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                 str(site.tenant.id))
        await admin_conn.execute("UPDATE source_instances SET base_url = $1", base_url)
    arguments = {"issue_key": "LOC-1", "body": "Lost?", "idempotency_key": "reset-1"}
    error = await site.upstream_error("jira_add_comment", **arguments)
    assert error["details"] == [{"kind": "unreachable", "status": None, "ambiguous": True}]
    retry = await site.call("jira_add_comment", **arguments)
    assert retry["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS", retry
    assert len(heads) == 1
    error = await site.upstream_error("sources_sync", source_id=str(site.source_id))
    assert error["details"] == [{"kind": "unreachable", "status": None, "ambiguous": False}]


async def test_local_projects_stay_local_and_other_tenants_see_nothing(
        site: Site, make_tenant: TenantFactory) -> None:
    local = await site.ok("jira_create_issue", project_key="LOC", summary="Mirrored")
    async with site.conn.transaction():
        await site.conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                str(site.tenant.id))
        await site.conn.execute("INSERT INTO projects (tenant_id, project_key, name) "
                                "VALUES ($1, 'HOME', 'Local')", site.tenant.id)
    site.jira.writes.clear()
    home = await site.ok("jira_create_issue", project_key="HOME", summary="Stays here")
    await site.ok("jira_add_comment", issue_key=home["key"], body="Local note")
    assert home["source"] == "local" and site.jira.writes == []
    other = await make_tenant()
    for name, arguments in (
            ("jira_get_issue", {"issue_key": local["key"]}),
            ("jira_update_issue", {"issue_key": local["key"], "fields": {"summary": "Mine"}}),
            ("jira_add_comment", {"issue_key": local["key"], "body": "Hello"}),
            ("jira_create_issue", {"project_key": "LOC", "summary": "Sneaky"})):
        result = await envelope(site.client, other, name, **arguments)
        assert result["error"]["code"] == "NOT_FOUND", (name, result)
    assert site.jira.writes == []


async def _mirror(admin_conn, queries, client: TestClient, tenant: Tenant, kind: str,
                  fake: Any, projects: dict[str, str]) -> uuid.UUID:
    """Connect ``fake`` as the tenant's source of ``kind`` and sync it once."""
    async with admin_conn.transaction():
        source_id = await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant.id, kind=kind, name=kind,
            base_url=fake.base_url, projects=projects, token=fake.token)
    synced = await envelope(client, tenant, "sources_sync", source_id=str(source_id))
    assert synced["success"], synced
    return source_id


async def test_a_create_in_an_asana_project_takes_the_stores_next_number(
        make_tenant: TenantFactory, admin_conn, app_conn, serve_fake, serve_spiral: TestClient,
        queries) -> None:
    """Asana tasks have no numbers: the store gives the new task its project's next number,
    under the project's lock, and a later sync keeps it."""
    fake = FakeAsana()
    fake.add_project(ASANA_PROJECT, "Design")
    for n in range(3):
        fake.add_task(ASANA_PROJECT, f"Task {n}", modified=datetime(2026, 1, 1 + n, tzinfo=UTC))
    await serve_fake(fake, path="/api/1.0")
    tenant, client = await make_tenant(), serve_spiral
    source_id = await _mirror(admin_conn, queries, client, tenant, "asana", fake,
                              {ASANA_PROJECT: "DES"})
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 3
    made = await envelope(client, tenant, "jira_create_issue", project_key="DES",
                          summary="Drawn through spiral", idempotency_key="asana-1")
    assert made["success"], made
    assert made["data"]["key"] == "DES-4" and made["data"]["source"] == "asana"
    gid = made["data"]["source_id"]
    assert fake.tasks[gid]["name"] == "Drawn through spiral"
    resynced = await envelope(client, tenant, "sources_sync", source_id=str(source_id),
                              full=True)
    assert resynced["success"], resynced
    assert await scalar(app_conn, tenant.id, "SELECT key FROM work_items WHERE "
                        "source_id = $1", gid) == "DES-4"
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 4


async def test_github_issues_are_created_and_closed_through_the_tools(
        make_tenant: TenantFactory, admin_conn, app_conn, serve_fake, serve_spiral: TestClient,
        queries) -> None:
    """The same tools on a project mirrored from GitHub: the issue is made there, closing it
    moves the store to Closed, and a link stays local (GitHub has none)."""
    fake = FakeGitHub()
    fake.add_issue("octo/web", title="Existing", updated=datetime(2026, 1, 1, tzinfo=UTC))
    await serve_fake(fake)
    tenant, client = await make_tenant(), serve_spiral
    await _mirror(admin_conn, queries, client, tenant, "github", fake, {"octo/web": "WEB"})
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 1
    made = await envelope(client, tenant, "jira_create_issue", project_key="WEB",
                          summary="Broken header", issue_type="bug", priority="high")
    assert made["success"], made
    assert (made["data"]["key"], made["data"]["status"]) == ("WEB-2", "Open")
    assert {label["name"] for label in fake.issue("octo/web", 2)["labels"]} >= {"bug"}
    closed = await envelope(client, tenant, "jira_transition_issue", issue_key="WEB-2",
                            status="Closed")
    assert closed["success"] and closed["data"]["to_category"] == "done", closed
    assert fake.issue("octo/web", 2)["state"] == "closed"
    # GitHub's timestamps have one-second precision: a change may come back with the
    # `updated` already stored, and must be stored all the same.
    fake.clock = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(seconds=1)
    renamed = await envelope(client, tenant, "jira_update_issue", issue_key="WEB-1",
                             fields={"summary": "Existing, renamed"})
    assert renamed["success"], renamed
    assert fake.issue("octo/web", 1)["updated_at"].startswith("2026-01-01T00:00:00")
    assert await scalar(app_conn, tenant.id, "SELECT title FROM work_items WHERE "
                        "key = 'WEB-1'") == "Existing, renamed"
    linked = await envelope(client, tenant, "jira_link_issues", outward_issue_key="WEB-2",
                            inward_issue_key="WEB-1", link_type="blocks")
    assert linked["success"], linked
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_item_links") == 1
    other = await make_tenant()
    unseen = await envelope(client, other, "jira_get_issue", issue_key="WEB-2")
    assert unseen["error"]["code"] == "NOT_FOUND", unseen
    assert await scalar(app_conn, other.id, "SELECT count(*) FROM work_items") == 0


async def test_a_write_to_an_asana_subtask_keeps_its_parent(
        make_tenant: TenantFactory, admin_conn, app_conn, serve_fake, serve_spiral: TestClient,
        queries) -> None:
    """The store numbers Asana tasks, so an answer names the parent by key only if the adapter
    was told the parent's key: a write must not drop the parent of the item it stores."""
    fake = FakeAsana()
    fake.add_project(ASANA_PROJECT, "Design")
    parent = fake.add_task(ASANA_PROJECT, "Parent", modified=datetime(2025, 1, 1, tzinfo=UTC))
    fake.add_task(ASANA_PROJECT, "Child", modified=datetime(2025, 1, 2, tzinfo=UTC),
                  parent=parent)
    await serve_fake(fake, path="/api/1.0")
    tenant, client = await make_tenant(), serve_spiral
    await _mirror(admin_conn, queries, client, tenant, "asana", fake, {ASANA_PROJECT: "DES"})
    child = "SELECT parent_key FROM work_items WHERE title LIKE 'Child%'"
    assert await scalar(app_conn, tenant.id, child) == "DES-1"

    key = await scalar(app_conn, tenant.id, "SELECT key FROM work_items WHERE title = 'Child'")
    updated = await envelope(client, tenant, "jira_update_issue", issue_key=key,
                             fields={"summary": "Child, renamed"})
    assert updated["success"], updated
    assert updated["data"]["changed"]["summary"]["to"] == "Child, renamed"
    assert await scalar(app_conn, tenant.id, child) == "DES-1"
    moved = await envelope(client, tenant, "jira_transition_issue", issue_key=key,
                           status="Completed")
    assert moved["success"], moved
    assert await scalar(app_conn, tenant.id, child) == "DES-1"
