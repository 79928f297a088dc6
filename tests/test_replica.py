"""Heavy reads on a hot standby (REPLICA_DATABASE_URL), against a real streaming replica.

The test starts its own primary with the embedded PostgreSQL's binaries, provisions it as the
harness does, and makes a standby of it with ``pg_basebackup -R -X stream`` (replica_cluster.py).
Which server answered is proven without any hook in the product: with the standby's replay
paused, a row just written on the primary is missing from what the standby serves; and after a
standby restart, the explorer's backends there are those of the calls since.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import asyncpg
import pytest
from conftest import Tenant
from replica_fixtures import DATABASE, Replicated, metric, owner_count, tool

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.roles import EXPLORER_ROLE, login_at, url_for_role
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import EXPLORER


@pytest.fixture
def client(replica_client):
    return replica_client


async def count_key(client, tenant: Tenant, key: str) -> int:
    data = await tool(client, tenant, "explorer_query",
                      sql=f"SELECT count(*) AS n FROM work_items WHERE key = '{key}'")
    return data["rows"][0][0]


async def report_keys(client, tenant: Tenant) -> set[str]:
    data = await tool(client, tenant, "sql_search_issues_by_project", project_key="WEB",
                      limit=100)
    return {row["key"] for row in data["rows"]}


async def ready(client) -> dict[str, Any]:
    resp = await client.get("/ready")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def until(check, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the condition did not hold in time")


async def explorer_backends(replicated: Replicated) -> int:
    conn = await replicated.superuser(True)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE usename = $1 AND datname = $2", EXPLORER_ROLE,
                                   DATABASE)
    finally:
        await conn.close()


# -- served by the standby, under the same isolation ---------------------------------------------

async def test_explorer_and_reports_read_the_standby_and_see_writes_once_replayed(
        client, replicated: Replicated) -> None:
    mine, other = replicated.mine, replicated.other
    assert (await ready(client))["replica"] == {"state": "ok", "lag_seconds": 0.0,
                                                "serving": "replica"}
    await replicated.replay(paused=True)
    try:
        # Written on the primary (a write never goes to the standby) ...
        created = await tool(client, mine, "jira_create_issue", project_key="WEB",
                             summary="Written while replay is paused")
        key = created["key"]
        # ... and not yet replayed: what the explorer and the reports serve lacks it.
        assert await count_key(client, mine, key) == 0
        assert key not in await report_keys(client, mine)
        # A read that must see its own writes stays on the primary.
        assert (await tool(client, mine, "jira_get_issue", issue_key=key))["key"] == key
    finally:
        await replicated.replay(paused=False)
    await replicated.caught_up()
    assert await count_key(client, mine, key) == 1
    assert key in await report_keys(client, mine)
    # Another tenant's key sees none of it, through either, on the standby.
    assert await count_key(client, other, key) == 0
    assert key not in await report_keys(client, other)
    assert await metric(client, "replica_in_use") == 1
    assert await metric(client, "replica_fallbacks_total") == 0


async def test_the_explorer_tools_show_only_the_callers_rows_on_the_standby(
        client, replicated: Replicated) -> None:
    mine, other = replicated.mine, replicated.other
    written = await tool(client, mine, "jira_create_issue", project_key="WEB",
                         summary="Mine alone")
    await replicated.caught_up()
    for tenant in (mine, other):
        expected = await owner_count(replicated, tenant, "SELECT count(*) FROM work_items")
        data = await tool(client, tenant, "explorer_query",
                          sql="SELECT count(*) FROM work_items")
        assert data["rows"] == [[expected]]
        tables = await tool(client, tenant, "explorer_list_tables")
        counts = {t["name"]: t["row_count"] for t in tables["tables"]}
        assert counts["work_items"] == expected
        described = await tool(client, tenant, "explorer_describe_table", table="work_items")
        assert described["row_count"] == expected
    data = await tool(client, other, "explorer_query",
                      sql="SELECT count(*) FROM work_items WHERE title = 'Mine alone'")
    assert data["rows"] == [[0]]
    assert await count_key(client, other, written["key"]) in (0, 1)  # WEB-n: its own, maybe
    assert await explorer_backends(replicated) > 0


async def test_on_the_standby_only_a_proof_binds_a_tenant(replicated: Replicated) -> None:
    """The layer under the query check, as the explorer role on the standby itself: setting
    app.tenant_id, or a binding without the runtime role's proof, reads no row."""
    mine, other = replicated.mine, replicated.other
    explorer_url = url_for_role(replicated.cluster.standby.url(), EXPLORER_ROLE,
                                database=DATABASE)
    runtime = await asyncpg.connect(replicated.standby_runtime)
    conn = await asyncpg.connect(explorer_url)
    try:
        proof = await runtime.fetchval("SELECT explorer_support.replica_proof($1)", mine.id)
        count = "SELECT count(*) FROM explorer.work_items"
        async with conn.transaction(readonly=True):
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(mine.id))
            assert await conn.fetchval(count) == 0
            await conn.execute("SELECT set_config('explorer.binding', $1, true)",
                               f"{mine.id}:{'0' * 64}")
            assert await conn.fetchval(count) == 0
        async with conn.transaction(readonly=True):
            await conn.execute("SELECT explorer_support.bind_replica($1, $2)", mine.id, proof)
            assert await conn.fetchval(count) == await owner_count(
                replicated, mine, "SELECT count(*) FROM work_items") > 0
            # Switching tenants afterwards: the binding still names the first, so no row.
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(other.id))
            assert await conn.fetchval(count) == 0
            # Mine's proof under the other's name binds nothing either.
            await conn.execute("SELECT set_config('explorer.binding', $1, true)",
                               f"{other.id}:{proof}")
            assert await conn.fetchval(count) == 0
        async with conn.transaction(readonly=True):
            with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
                await conn.execute("SELECT explorer_support.bind_replica($1, $2)", other.id,
                                   proof)
        # The explorer role can neither ask for a proof nor read the secret.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT explorer_support.replica_proof($1)", other.id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT secret FROM explorer_support.binding_secret")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await runtime.fetchval("SELECT secret FROM explorer_support.binding_secret")
    finally:
        await conn.close()
        await runtime.close()


async def test_a_changed_binding_secret_costs_one_call_on_the_primary(
        client, replicated: Replicated) -> None:
    """The owner may change the secret (a leaked proof): a proof this process kept is refused
    by the standby, that call is served by the primary, and the next one asks for a new proof."""
    mine = replicated.mine
    assert await count_key(client, mine, "WEB-1") == 1  # its proof is kept now
    assert replicated.urls.admin is not None
    owner = await asyncpg.connect(replicated.urls.admin)
    try:
        await owner.execute("UPDATE explorer_support.binding_secret "
                            "SET secret = md5(gen_random_uuid()::text)")
    finally:
        await owner.close()
    await replicated.caught_up()
    assert await count_key(client, mine, "WEB-1") == 1
    assert await metric(client, 'replica_fallbacks_total{reason="refused"}') == 1
    assert await count_key(client, mine, "WEB-1") == 1
    assert await metric(client, "replica_fallbacks_total") == 1
    assert (await ready(client))["replica"]["serving"] == "replica"


async def test_an_abandoned_standby_backend_is_ended_by_the_runtime_role_there(
        client, replicated: Replicated) -> None:
    """pg_terminate_backend reaches only the server it runs on: a standby session's backend is
    ended through the runtime role's pool on the standby."""
    explorer = client.server.app[EXPLORER]
    with pytest.raises(ServiceError) as ended:
        async with explorer._session(replicated.mine.id) as session:
            assert session.on_standby
            assert session.runtime is not explorer.runtime
            pid = session.conn.get_server_pid()
            await explorer._end_backend(session.runtime, pid, session.alive_at,
                                        session.server_started)
            await session.conn.fetchval("SELECT 1")
    assert ended.value.code is ErrorCode.CONNECTION_ERROR


# -- lag and outages: the primary serves, /ready and /metrics say so ---------------------------

async def test_a_standby_lagging_past_the_bound_hands_reads_to_the_primary_until_it_catches_up(
        aiohttp_client, replicated: Replicated) -> None:
    client = await aiohttp_client(create_app(
        replicated.settings(REPLICA_MAX_LAG="0.5"), database_url=replicated.urls.runtime,
        explorer_url=replicated.urls.explorer))
    mine = replicated.mine
    # An idle primary is no lag, however long since the last replayed transaction.
    await asyncio.sleep(1.0)
    assert (await ready(client))["replica"]["state"] == "ok"
    await replicated.replay(paused=True)
    try:
        key = (await tool(client, mine, "jira_create_issue", project_key="WEB",
                          summary="Written while the standby lags"))["key"]

        async def lagging() -> bool:
            return (await ready(client))["replica"]["state"] == "lagging"

        await until(lagging)
        body = await ready(client)
        assert body["status"] == "ready"
        assert body["replica"]["serving"] == "primary" and body["replica"]["lag_seconds"] > 0.5
        # Served by the primary: the write is there already.
        assert await count_key(client, mine, key) == 1
        assert key in await report_keys(client, mine)
        assert await metric(client, "replica_in_use") == 0
        assert await metric(client, "replica_lag_seconds") > 0.5
        assert await metric(client, 'replica_fallbacks_total{reason="lagging"}') >= 2
    finally:
        await replicated.replay(paused=False)

    async def back() -> bool:
        return (await ready(client))["replica"] == {"state": "ok", "lag_seconds": 0.0,
                                                    "serving": "replica"}

    await until(back)
    assert await metric(client, "replica_in_use") == 1


async def test_a_stopped_standby_hands_reads_to_the_primary_and_takes_them_back_restarted(
        client, replicated: Replicated) -> None:
    mine, other = replicated.mine, replicated.other
    assert await count_key(client, mine, "WEB-1") == 1  # pools open on the standby
    await asyncio.to_thread(replicated.cluster.stop_standby)
    try:
        # Calls still answer, from the primary, with the same isolation.
        assert await count_key(client, mine, "WEB-1") == 1
        assert "WEB-1" in await report_keys(client, mine)
        for tenant in (mine, other):
            data = await tool(client, tenant, "explorer_query",
                              sql="SELECT count(*) FROM work_items")
            assert data["rows"] == [[await owner_count(replicated, tenant,
                                                       "SELECT count(*) FROM work_items")]]

        async def unreachable() -> bool:
            return (await ready(client))["replica"]["state"] == "unreachable"

        await until(unreachable)
        body = await ready(client)
        assert body["status"] == "ready" and body["replica"]["serving"] == "primary"
        assert body["replica"]["lag_seconds"] is None and body["replica"]["error"]
        assert await metric(client, "replica_in_use") == 0
        assert math.isnan(await metric(client, "replica_lag_seconds"))
        assert await metric(client, 'replica_fallbacks_total{reason="unreachable"}') >= 1
        assert await count_key(client, mine, "WEB-1") == 1
    finally:
        await asyncio.to_thread(replicated.cluster.start_standby)

    async def back() -> bool:
        return (await ready(client))["replica"]["state"] == "ok"

    await until(back)
    await replicated.caught_up()
    assert await explorer_backends(replicated) == 0  # none since the restart, yet
    assert await count_key(client, mine, "WEB-1") == 1
    assert "WEB-1" in await report_keys(client, mine)
    assert await explorer_backends(replicated) > 0
    assert await metric(client, "replica_in_use") == 1


# -- settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "message"), [
    ({"REPLICA_DATABASE_URL": "mysql://x"}, "REPLICA_DATABASE_URL: expected a postgresql://"),
    ({"REPLICA_DATABASE_URL": "postgresql://a@h/db"}, "REPLICA_DATABASE_URL: needs DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://a@h/db", "REPLICA_DATABASE_URL": "postgresql://a@h/db"},
     "REPLICA_DATABASE_URL: is DATABASE_URL itself"),
    ({"DATABASE_URL": "postgresql://a@h/db",
      "REPLICA_EXPLORER_DATABASE_URL": "postgresql://e@r/db"},
     "REPLICA_EXPLORER_DATABASE_URL: needs REPLICA_DATABASE_URL"),
    ({"REPLICA_MAX_LAG": "-1"}, "REPLICA_MAX_LAG:"),
    ({"REPLICA_MAX_LAG": "soon"}, "REPLICA_MAX_LAG:"),
    ({"REPLICA_CHECK_INTERVAL": "0"}, "REPLICA_CHECK_INTERVAL:"),
])
def test_bad_replica_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        load_settings(environ=env)


def test_the_standby_explorer_login_is_the_primarys_at_the_standby() -> None:
    assert login_at("postgresql://spiral_explorer:s3cret@primary:5432/spiral",
                    "postgresql://spiral_app:x@standby:6432/spiral?sslmode=require") == \
        "postgresql://spiral_explorer:s3cret@standby:6432/spiral?sslmode=require"
    assert login_at("postgresql://primary/spiral", "postgresql://u@standby/spiral") == \
        "postgresql://standby/spiral"
