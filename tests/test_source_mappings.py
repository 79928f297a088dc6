"""Changing an instance's mapping overrides after `source add` (issue 7): `spiral-mcp source set ID
--map KEY:NAME=VALUE --unmap KEY:NAME`, checked as `source add` checks them, all or nothing; a full
sync re-applies them to stored items."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from spiral_mcp.config import SETTINGS
from spiral_mcp.queries import Queries
from spiral_mcp.sources import manage
from tests.conftest import LOOPBACK_SETTING, TenantFactory
from tests.fake_jira import FakeJira
from tests.test_source_sync_server import BOX, FAST, T0, add_source, scalar


@pytest.fixture
async def jira(serve_fake) -> FakeJira:
    return await serve_fake(FakeJira())


async def change(admin_conn: asyncpg.Connection, queries: Queries, source_id: uuid.UUID,
                 **options) -> dict:
    async with admin_conn.transaction():
        return await manage.change_overrides(admin_conn, queries, source_id, **options)


async def config(admin_conn: asyncpg.Connection, queries: Queries,
                 source_id: uuid.UUID) -> dict:
    async with admin_conn.transaction():
        row = await manage.find_source(admin_conn, queries, source_id)
    return orjson.loads(row["config"])


async def test_overrides_are_set_replaced_and_removed(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, queries) -> None:
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    assert await change(admin_conn, queries, source_id, tenant_id=tenant.id, mapped=[
        "status_categories:Triage=todo", "status_categories:QA=in_review"]) == {
        "status_categories": {"Triage": "todo", "QA": "in_review"}}
    # Adapters match names whatever their case: qa replaces QA.
    assert await change(admin_conn, queries, source_id, mapped=["status_categories:qa=done"],
                        unmapped=["status_categories:triage"]) == {
        "status_categories": {"qa": "done"}}
    assert await change(admin_conn, queries, source_id,
                        unmapped=["status_categories:QA"]) == {}
    assert await config(admin_conn, queries, source_id) == {"projects": {"ABC": "LOC"}}


@pytest.mark.parametrize(("mapped", "unmapped", "message"), [
    (["priority_labels:sev1=high"], [], "jira has no mapping 'priority_labels' (its mappings: "
                                        "status_categories)"),
    (["status_categories:Triage=later"], [], "'later' is not one of blocked, cancelled, done"),
    (["status_categories:Triage"], [], "expected KEY:NAME=VALUE"),
    ([], ["types:Incident"], "jira has no mapping 'types'"),
    ([], ["status_categories"], "--unmap 'status_categories': expected KEY:NAME"),
    ([], ["status_categories:Review"], "--unmap status_categories:Review: the source has no "
                                       "such override (its status_categories overrides: QA)"),
    (["status_categories:Hold=blocked"], ["status_categories:qa", "status_categories:Hold"],
     "status_categories:Hold is both mapped and unmapped"),
])
async def test_a_bad_change_is_one_clear_line_and_changes_nothing(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, queries, mapped: list[str],
        unmapped: list[str], message: str) -> None:
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    await change(admin_conn, queries, source_id, mapped=["status_categories:QA=in_review"])
    before = await config(admin_conn, queries, source_id)
    with pytest.raises(manage.SourceAdminError, match=re.escape(message)):
        await change(admin_conn, queries, source_id, mapped=mapped, unmapped=unmapped)
    assert await config(admin_conn, queries, source_id) == before


async def test_an_unknown_or_another_tenants_instance_is_not_found(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, queries) -> None:
    mine, other = await make_tenant(), await make_tenant()
    source_id = await add_source(admin_conn, queries, mine.id, jira)
    missing = uuid.uuid4()
    with pytest.raises(manage.SourceAdminError, match=f"no source with id {missing}"):
        await change(admin_conn, queries, missing, mapped=["status_categories:QA=done"])
    with pytest.raises(manage.SourceAdminError, match=f"no source with id {source_id}"):
        await change(admin_conn, queries, source_id, tenant_id=other.id,
                     mapped=["status_categories:QA=done"])
    assert await config(admin_conn, queries, source_id) == {"projects": {"ABC": "LOC"}}


async def test_a_full_sync_reapplies_a_changed_mapping_to_stored_items(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, queries) -> None:
    for n, status in enumerate(("In Review", "In Review", "To Do"), start=1):
        jira.add_issue(f"ABC-{n}", summary=f"Issue {n}", status=status,
                       updated=T0 - timedelta(hours=5 - n))
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)

    async def sync(**options) -> None:
        await manage.run_sync(admin_conn, queries, BOX, source_id, **options, **FAST)

    async def reviewed_as(category: str) -> int:
        return await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items WHERE "
                            "status = 'In Review' AND status_category = $1", category)

    await sync()
    assert await reviewed_as("in_review") == 2
    await change(admin_conn, queries, source_id, mapped=["status_categories:In Review=blocked"])
    await sync()  # nothing changed at Jira: the items it is not asked for keep their mapping
    assert await reviewed_as("in_review") == 2
    await sync(full=True)
    assert await reviewed_as("blocked") == 2
    assert await scalar(app_conn, tenant.id, "SELECT max(version) FROM work_items") == 2


Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def source_cli(database_urls, tmp_path: Path) -> Run:
    """``await source_cli("set", ...)``: ``spiral-mcp source ...`` as the operator runs it."""
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env |= {"ADMIN_DATABASE_URL": database_urls.admin, "SPIRAL_DATA_DIR": str(tmp_path),
            "SPIRAL_SECRET_KEY": "x" * 43 + "=",
            "SOURCE_PRIVATE_NETWORKS": LOOPBACK_SETTING}  # the fakes are on loopback

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spiral_mcp", "source", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    return run


async def test_cli_source_set(jira: FakeJira, make_tenant: TenantFactory, admin_conn, queries,
                              source_cli: Run) -> None:
    tenant, other = await make_tenant(), await make_tenant()
    source_id = str(await add_source(admin_conn, queries, tenant.id, jira))
    code, out, err = await source_cli("set", source_id, "--map",
                                      "status_categories:Triage=todo", "--map",
                                      "status_categories:QA=in_review")
    assert code == 0, err
    assert orjson.loads(out) == {"status_categories": {"Triage": "todo", "QA": "in_review"}}
    assert f"spiral-mcp source sync {source_id} --full" in err
    code, out, err = await source_cli("set", source_id, "--tenant", str(tenant.id), "--unmap",
                                      "status_categories:Triage")
    assert (code, orjson.loads(out)) == (0, {"status_categories": {"QA": "in_review"}}), err
    code, out, err = await source_cli("list", "--tenant", str(tenant.id))
    assert '"QA": "in_review"' in out and "Triage" not in out
    for args, message in [
        ((), "nothing to change: give --map KEY:NAME=VALUE, --unmap KEY:NAME or --rate RATE"),
        (("--map", "types:Incident=bug"), "jira has no mapping 'types'"),
        (("--map", "status_categories:QA=soon"), "'soon' is not one of"),
        (("--unmap", "status_categories:Triage"), "the source has no such override"),
        (("--tenant", str(other.id), "--map", "status_categories:QA=done"),
         f"no source with id {source_id}"),
    ]:
        code, out, err = await source_cli("set", source_id, *args)
        assert (code, out, err.count("\n")) == (1, "", 1) and message in err, (args, err)
    code, out, err = await source_cli("set", str(uuid.uuid4()), "--map",
                                      "status_categories:QA=done")
    assert code == 1 and "no source with id" in err
    assert (await config(admin_conn, queries, uuid.UUID(source_id)))["status_categories"] == {
        "QA": "in_review"}
