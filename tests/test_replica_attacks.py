"""A tenant with a valid key (spiral:query) attacking the hot-standby path (REPLICA_DATABASE_URL).

On the standby the explorer's tenant binding is a proof (migration 0016) kept in the transaction's
setting ``explorer.binding``, not a row; these tests try to read another tenant's rows through it:
SQL that reads or sets settings or reaches the binding's functions, another tenant's proof, the
fallbacks to the primary (a refused binding, a replay conflict), reports with crafted arguments,
one standby backend serving tenant after tenant, and the runtime role's memory limit and backend
ending there. Every attempt runs against the real streaming standby of ``replica_fixtures``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import Tenant
from replica_fixtures import DATABASE, Replicated, call, metric, owner_count, tool

from spiral_mcp.roles import EXPLORER_MEMORY_LIMIT, EXPLORER_ROLE, url_for_role
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import EXPLORER

COUNT = "SELECT count(*) FROM work_items"


@pytest.fixture
async def client(replica_client):
    return replica_client


async def served_by_standby(client) -> None:
    """Every call so far went to the standby (none fell back to the primary)."""
    assert await metric(client, "replica_in_use") == 1
    assert await metric(client, "replica_fallbacks_total") == 0


async def own_count(client, tenant: Tenant) -> int:
    return (await tool(client, tenant, "explorer_query", sql=COUNT))["rows"][0][0]


async def assert_each_sees_its_own(client, replicated: Replicated) -> None:
    for tenant in (replicated.mine, replicated.other):
        assert await own_count(client, tenant) == await owner_count(replicated, tenant, COUNT)


def explorer_at_standby(replicated: Replicated) -> str:
    return url_for_role(replicated.cluster.standby.url(), EXPLORER_ROLE, database=DATABASE)


async def proof_of(replicated: Replicated, tenant: Tenant) -> str:
    """What the runtime role (never a tenant) gets from the standby for ``tenant``."""
    runtime = await asyncpg.connect(replicated.standby_runtime)
    try:
        return await runtime.fetchval("SELECT explorer_support.replica_proof($1)", tenant.id)
    finally:
        await runtime.close()


# -- explorer_query SQL at the binding ----------------------------------------------------------

def _sql_attacks(other: uuid.UUID) -> list[str]:
    binding = f"{other}:{'0' * 64}"
    return [
        # Read the binding (its proof) or any setting.
        "SELECT current_setting('explorer.binding')",
        "SELECT pg_catalog.current_setting('explorer.binding', true)",
        "SELECT setting FROM pg_settings WHERE name = 'explorer.binding'",
        "SELECT setting FROM pg_catalog.pg_settings",
        # Change it, or the tenant, in the statement itself.
        f"SELECT set_config('explorer.binding', '{binding}', true)",
        f"SELECT pg_catalog.set_config('app.tenant_id', '{other}', true), count(*) "
        "FROM work_items",
        f"WITH s AS MATERIALIZED (SELECT set_config('explorer.binding', '{binding}', true)) "
        "SELECT count(*) FROM work_items, s",
        f"SET explorer.binding = '{binding}'",
        f"SET LOCAL app.tenant_id = '{other}'",
        "RESET ALL",
        f"SELECT count(*) FROM work_items; SELECT set_config('app.tenant_id', '{other}', true)",
        # The binding's machinery and the runtime role's functions.
        f"SELECT explorer_support.replica_proof('{other}')",
        f"SELECT explorer_support.bind_replica('{other}', repeat('0', 64))",
        f"SELECT explorer_support.bind('{other}')",
        "SELECT explorer_support.bound_tenant()",
        "SELECT secret FROM explorer_support.binding_secret",
        "SELECT * FROM explorer_support.bindings",
        "SELECT explorer_support.open_rows('c', 'SELECT * FROM public.work_items')",
        "SELECT explorer_guard.end_backend(1, now())",
        "SELECT explorer_guard.limit_memory()",
        "SELECT pg_terminate_backend(1)",
        # Other sessions: their query text, settings, statements, cursors, locks.
        "SELECT query FROM pg_stat_activity",
        "SELECT pg_stat_get_backend_activity(1)",
        "SELECT * FROM pg_prepared_statements",
        "SELECT * FROM pg_cursors",
        "SELECT * FROM pg_locks",
        "PREPARE p AS SELECT * FROM work_items",
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM work_items",
        "EXECUTE p",
        "FETCH ALL FROM explorer_rows",
        # The tables below the views, past the binding policy's schema.
        "SELECT count(*) FROM public.work_items",
        "SELECT pg_is_in_recovery()",
    ]


async def test_sql_at_the_binding_is_refused_and_leaves_nothing_on_the_standby(
        client, replicated: Replicated) -> None:
    mine, other = replicated.mine, replicated.other
    for sql in _sql_attacks(other.id):
        envelope = await call(client, mine, "explorer_query", sql=sql)
        assert not envelope["success"], (sql, envelope)
        assert envelope["error"]["code"] in ("VALIDATION_ERROR", "PERMISSION_DENIED"), \
            (sql, envelope)
    # A proof computed in SQL needs the secret: a guess is just a hash (and binds nothing).
    data = await tool(client, mine, "explorer_query",
                      sql=f"SELECT encode(sha256(decode(md5(':{other.id}'), 'hex')), 'hex') AS p")
    assert len(data["rows"][0][0]) == 64
    # Nothing the attempts did stays with the standby's connections.
    await assert_each_sees_its_own(client, replicated)
    await served_by_standby(client)


# -- the proof itself ---------------------------------------------------------------------------

async def test_another_tenants_binding_cannot_be_made_or_seen_from_an_explorer_session(
        replicated: Replicated) -> None:
    """As the explorer role on the standby (the wall under the query check): a session bound to
    the other tenant is open meanwhile; its proof is nowhere to be read, and no form of a binding
    without it reads the other's rows."""
    mine, other = replicated.mine, replicated.other
    mine_proof, other_proof = await proof_of(replicated, mine), await proof_of(replicated, other)
    victim = await asyncpg.connect(explorer_at_standby(replicated))
    attacker = await asyncpg.connect(explorer_at_standby(replicated))
    count = "SELECT count(*) FROM explorer.work_items"
    try:
        async with victim.transaction(readonly=True):
            await victim.execute("SELECT explorer_support.bind_replica($1, $2)", other.id,
                                 other_proof)
            assert await victim.fetchval(count) > 0
            # Another session of the same role sees no setting, query or activity of the victim.
            seen = await attacker.fetch(
                "SELECT name, setting FROM pg_settings WHERE setting LIKE $1",
                f"%{other_proof}%")
            assert seen == []
            for sql in ("SELECT query FROM pg_stat_activity",
                        "SELECT pg_stat_get_backend_activity(s) FROM "
                        "pg_stat_get_backend_idset() AS s",
                        "SELECT explorer_support.replica_proof($1::uuid)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await attacker.fetch(sql, *([other.id] if "$1" in sql else []))
            async with attacker.transaction(readonly=True):
                await attacker.execute("SELECT explorer_support.bind_replica($1, $2)", mine.id,
                                       mine_proof)
                mine_count = await attacker.fetchval(count)
                assert mine_count > 0
                # Its own proof, readable in its own session, names its own tenant only.
                assert await attacker.fetchval("SELECT current_setting('explorer.binding')") \
                    == f"{mine.id}:{mine_proof}"
                forged = [
                    f"{other.id}:{mine_proof}",
                    f"{str(other.id).upper()}:{mine_proof}",
                    f"{other.id}:{mine_proof}\n",
                    f"{other.id}:{mine_proof}:{mine.id}",
                    f"{other.id.hex}:{mine_proof}",
                    f" {other.id}:{mine_proof}",
                    f"{mine.id}:{mine_proof}\n{other.id}:{mine_proof}",
                    f"{other.id}:{mine_proof.upper()}",
                ]
                for binding in forged:
                    async with attacker.transaction():  # a savepoint: undone after each
                        await attacker.execute(
                            "SELECT set_config('explorer.binding', $1, true), "
                            "set_config('app.tenant_id', $2, true)", binding, str(other.id))
                        assert await attacker.fetchval(count) == 0, binding
                # Binding the other tenant with its own proof refused: a second bind_replica is
                # no way around it.
                with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
                    await attacker.execute("SELECT explorer_support.bind_replica($1, $2)",
                                           other.id, mine_proof)
    finally:
        await attacker.close()
        await victim.close()


async def test_a_proof_of_another_tenant_in_the_servers_cache_is_refused_and_served_right(
        client, replicated: Replicated) -> None:
    """The proof cache handing over the wrong tenant's proof (or a forged one) never binds the
    call to that tenant: the standby refuses it and the call's own tenant is served by the
    primary."""
    mine, other = replicated.mine, replicated.other
    standby = client.server.app[EXPLORER].standby
    expected = await owner_count(replicated, mine, COUNT)
    assert await own_count(client, mine) == expected  # its own proof is kept now
    for forged in (await proof_of(replicated, other), "0" * 64, "", "x:" + "0" * 64):
        standby._proofs[mine.id] = forged
        assert await own_count(client, mine) == expected
        assert mine.id not in standby._proofs or standby._proofs[mine.id] != forged
    assert await metric(client, 'replica_fallbacks_total{reason="refused"}') == 4
    # Back on the standby, each tenant with its own rows.
    await assert_each_sees_its_own(client, replicated)
    assert await metric(client, "replica_fallbacks_total") == 4


# -- the fallbacks to the primary ---------------------------------------------------------------

# Slow enough (seconds) to be running when the lock's replay arrives, fast enough to run again.
_SLOW = ("SELECT count(*) AS n FROM work_items a, work_items b, work_items c, work_items d "
         "WHERE length(md5(a.key || b.key || c.key || d.key)) = 32")


async def test_a_query_cancelled_by_replay_runs_again_on_the_primary_for_the_same_tenant(
        aiohttp_client, replicated: Replicated) -> None:
    """A replay conflict (the primary took an ACCESS EXCLUSIVE lock the standby's query holds
    against) cancels the standby's query; its rerun on the primary is the caller's."""
    mine, other = replicated.mine, replicated.other
    client = await aiohttp_client(create_app(
        replicated.settings(EXPLORER_TIMEOUT_S="60"), database_url=replicated.urls.runtime,
        explorer_url=replicated.urls.explorer))
    if await owner_count(replicated, mine, COUNT) == await owner_count(replicated, other, COUNT):
        await tool(client, mine, "jira_create_issue", project_key="WEB", summary="One more")
        await replicated.caught_up()
    items = await owner_count(replicated, mine, COUNT)
    standby = await replicated.superuser(True)
    primary = await replicated.superuser(False)
    try:
        # Replay waits for no standby query: the conflict cancels it at once.
        await standby.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
        await standby.execute("SELECT pg_reload_conf()")
        running = asyncio.create_task(call(client, mine, "explorer_query", sql=_SLOW))
        for _ in range(400):  # until the explorer's query holds its lock on the standby
            if await standby.fetchval(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE a.usename = $1 AND l.relation = 'public.work_items'::regclass",
                    EXPLORER_ROLE):
                break
            await asyncio.sleep(0.025)
        await asyncio.sleep(0.3)
        async with primary.transaction():
            await primary.execute("LOCK TABLE public.work_items IN ACCESS EXCLUSIVE MODE")
        envelope = await running
    finally:
        await standby.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
        await standby.execute("SELECT pg_reload_conf()")
        await standby.close()
        await primary.close()
    assert envelope["success"], envelope
    assert envelope["data"]["rows"] == [[items ** 4]]
    assert await metric(client, 'replica_fallbacks_total{reason="conflict"}') == 1
    await replicated.caught_up()
    await assert_each_sees_its_own(client, replicated)


# -- one standby backend, tenant after tenant ---------------------------------------------------

async def test_one_standby_backend_serving_both_tenants_in_turn_keeps_them_apart(
        aiohttp_client, replicated: Replicated) -> None:
    mine, other = replicated.mine, replicated.other
    client = await aiohttp_client(create_app(
        replicated.settings(DB_POOL_MIN="1", DB_POOL_MAX="1"),
        database_url=replicated.urls.runtime, explorer_url=replicated.urls.explorer))
    expected = {t.id: await owner_count(replicated, t, COUNT) for t in (mine, other)}
    pids = set()
    for tenant in (mine, other, mine, other):
        assert await own_count(client, tenant) == expected[tenant.id]
        # What a call could try to leave behind for the next tenant on this backend.
        await call(client, tenant, "explorer_query",
                   sql="SELECT set_config('explorer.binding', 'x', false)")
        pids.add(await _standby_explorer_pid(replicated))
    assert len(pids) == 1  # the same backend served every call
    # At once, one call of each tenant queued for the one connection.
    for _ in range(4):
        counts = await asyncio.gather(own_count(client, mine), own_count(client, other))
        assert counts == [expected[mine.id], expected[other.id]]
    # The catalog tools too.
    for tenant in (mine, other):
        tables = await tool(client, tenant, "explorer_list_tables")
        assert {t["name"]: t["row_count"] for t in tables["tables"]}["work_items"] \
            == expected[tenant.id]
    await served_by_standby(client)


async def _standby_explorer_pid(replicated: Replicated) -> int:
    conn = await replicated.superuser(True)
    try:
        pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE usename = $1 "
                                "AND datname = $2", EXPLORER_ROLE, DATABASE)
    finally:
        await conn.close()
    assert len(pids) == 1
    return pids[0]["pid"]


async def test_the_catalog_tools_name_no_table_beyond_the_explorers_on_the_standby(
        client, replicated: Replicated) -> None:
    mine = replicated.mine
    for table in ("binding_secret", "explorer_support.binding_secret", "bindings",
                  "pg_settings", "../work_items", "work_items; SELECT 1"):
        envelope = await call(client, mine, "explorer_describe_table", table=table)
        assert not envelope["success"], (table, envelope)
        assert envelope["error"]["code"] in ("VALIDATION_ERROR", "NOT_FOUND"), envelope
    await served_by_standby(client)


# -- reports on the standby ---------------------------------------------------------------------

async def test_reports_on_the_standby_with_crafted_arguments_show_only_the_callers_rows(
        client, replicated: Replicated) -> None:
    mine, other = replicated.mine, replicated.other
    secret = f"Other's secret {uuid.uuid4().hex}"
    written = await tool(client, other, "jira_create_issue", project_key="WEB", summary=secret)
    await replicated.caught_up()
    found = await tool(client, other, "sql_search_issues_by_text", query=secret.split()[-1])
    assert [row["key"] for row in found["rows"]] == [written["key"]]
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("sql_search_issues_by_text", {"query": secret.split()[-1]}),
        ("sql_search_issues_by_text", {"query": "secret"}),
        ("sql_search_issues_by_project", {"project_key": "WEB", "limit": 100}),
        ("sql_search_issues_by_project", {"project_key": "WEB' OR '1'='1", "limit": 100}),
        ("sql_get_issue_history", {"issue_key": written["key"]}),
    ]
    for name, arguments in attempts:
        envelope = await call(client, mine, name, **arguments)
        if not envelope["success"]:
            assert envelope["error"]["code"] in ("VALIDATION_ERROR", "NOT_FOUND"), envelope
            continue
        for row in envelope["data"]["rows"]:
            assert secret not in str(row), (name, arguments)
    await served_by_standby(client)


# -- memory limit and ending backends on the standby --------------------------------------------

async def test_the_standby_explorer_backends_carry_the_memory_limit(
        client, replicated: Replicated) -> None:
    await own_count(client, replicated.mine)
    pid = await _standby_explorer_pid(replicated)
    limits = Path(f"/proc/{pid}/limits").read_text()  # the standby runs on this machine
    line = next(line for line in limits.splitlines() if line.startswith("Max data size"))
    assert line.split()[3:5] == [str(EXPLORER_MEMORY_LIMIT)] * 2


async def test_ending_an_abandoned_standby_backend_never_hits_another_tenants_session(
        client, replicated: Replicated) -> None:
    """The runtime role ends a backend by pid and a time it was seen alive: a backend of another
    tenant's session that started after the abandoned one was seen (it reused the pid) is never
    hit, nor a backend of the primary."""
    explorer = client.server.app[EXPLORER]
    on_primary = await asyncpg.connect(replicated.urls.explorer)
    try:
        async with explorer._session(replicated.mine.id) as session:
            assert session.on_standby
        victim = await asyncpg.connect(explorer_at_standby(replicated))
        try:
            # A session that started after the abandoned one was seen alive: spared.
            assert not await explorer._end_backend(session.runtime, victim.get_server_pid(),
                                                   session.alive_at, session.server_started)
            # A backend of the primary, by the standby's runtime pool: not there to end.
            assert not await explorer._end_backend(session.runtime, on_primary.get_server_pid(),
                                                   session.alive_at, session.server_started)
            assert await victim.fetchval("SELECT 1") == 1
        finally:
            await victim.close()
        assert await on_primary.fetchval("SELECT 1") == 1
    finally:
        await on_primary.close()


async def test_ending_a_standby_backend_never_reaches_the_same_pid_on_another_server(
        client, replicated: Replicated) -> None:
    """The runtime pool on the standby and the explorer's may reach different servers (a name in
    front of several standbys, REPLICA_EXPLORER_DATABASE_URL naming another): there the
    abandoned backend's pid is some other session's, likely in containers that number alike,
    and it started before the abandoned one was seen. A request carrying another server's start
    ends nothing; here the primary stands for that other server."""
    explorer = client.server.app[EXPLORER]
    victim = await asyncpg.connect(replicated.urls.explorer)  # an explorer backend elsewhere
    try:
        async with explorer._session(replicated.other.id) as session:
            assert session.on_standby
        assert explorer.runtime is not None
        ended = await explorer._end_backend(explorer.runtime, victim.get_server_pid(),
                                            session.alive_at, session.server_started)
        assert not ended
        assert await victim.fetchval("SELECT 1") == 1
        # Its own server's start: that one is ended.
        started = await victim.fetchval("SELECT pg_postmaster_start_time()")
        assert await explorer._end_backend(explorer.runtime, victim.get_server_pid(),
                                           session.alive_at, started)
    finally:
        victim.terminate()
