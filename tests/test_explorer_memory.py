"""What one explorer query may take (issue 16, section 3), measured on the database server.

The bound: an explorer backend's private memory (heap and anonymous mappings) stays under
``roles.EXPLORER_MEMORY_LIMIT`` (256 MiB, the kernel's RLIMIT_DATA set as each explorer connection
opens), so its resident size, with the shared buffers and code it maps, stays under 512 MiB here;
a backend a timed-out call leaves running is gone within 2 s of the answer; and the server process
reads at most the result's byte cap of rows from the database, whatever the rows, errors or samples.

Peak memory is read from ``/proc/<pid>/status`` of the backend (VmHWM, the peak resident size),
so these tests need the database server on this machine; they skip otherwise. Each attack runs
on a backend of its own, so the peak is that attack's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from spiral_mcp.db import Database, create_pool
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.explorer import Explorer, create_explorer_pool
from spiral_mcp.explorer.allowlist import MAX_VALUE_BYTES, WRAPPED
from spiral_mcp.explorer.catalog import tenant_samples
from spiral_mcp.explorer.runner import MAX_RESULT_BYTES
from spiral_mcp.explorer.validator import CheckedQuery
from spiral_mcp.queries import Queries
from spiral_mcp.roles import EXPLORER_MEMORY_LIMIT

MIB = 1 << 20
# The resident bound asserted here: the private limit plus what a backend maps of shared buffers
# (128 MB on a default server) and code.
RESIDENT_BOUND = 512 * MIB
# What a result may add to its rows' bytes on the wire: row descriptions, type lookups, the
# protocol's own messages, one capped error.
OVERHEAD = 64 << 10


def _status(pid: int) -> dict[str, int]:
    """The backend's memory figures in bytes (VmHWM: peak resident; RssFile, RssShmem: code and
    shared memory it maps; VmData: its private address space)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            figures[key] = int(value.split()[0]) * 1024
    return figures


def _local_backend(pid: int) -> None:
    """Skip unless ``pid`` is a PostgreSQL process of this machine (its /proc can be read)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        command = b""
    if b"postgres" not in command:
        pytest.skip("the database server is not on this machine: its backends' memory cannot "
                    "be read from /proc")


class CountingProxy:
    """A TCP hop between a pool and PostgreSQL that counts the bytes the server sends."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.received = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):  # a socket directory (the embedded server)
            up_reader, up_writer = await asyncio.open_unix_connection(
                f"{self.host}/.s.PGSQL.{self.port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                       count: bool) -> None:
            try:
                while data := await source.read(1 << 16):
                    if count:
                        self.received += len(data)
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()


async def _explorer(url: str, *, timeout: float, runtime: Database | None = None) -> Explorer:
    queries = Queries.load()
    pool = await create_explorer_pool(url, min_size=1, max_size=1, connect_timeout=5,
                                      query_timeout=timeout, queries=queries)
    return await Explorer.start(pool, queries, acquire_timeout=5, query_timeout=timeout,
                                max_rows=100, runtime=runtime)


@pytest.fixture
async def runtime(database_urls) -> AsyncIterator[Database]:
    pool = await create_pool(database_urls.runtime, min_size=1, max_size=2, connect_timeout=5,
                             statement_timeout=5)
    yield Database(pool, Queries.load(), acquire_timeout=5)
    await pool.close()


@pytest.fixture
async def measured(database_urls, runtime) -> AsyncIterator[Explorer]:
    """An explorer on one backend of its own, with time enough for an attack to reach the
    memory limit."""
    explorer = await _explorer(database_urls.explorer, timeout=20, runtime=runtime)
    yield explorer
    await explorer.close()
    await explorer.database.pool.close()


async def _pid(explorer: Explorer) -> int:
    async with explorer.database.connection() as conn:
        return conn.get_server_pid()


async def _refusal(explorer: Explorer, tenant, sql: str) -> ServiceError:
    with pytest.raises(ServiceError) as refused:
        await explorer.query(tenant.id, sql)
    return refused.value


def _doubled(levels: int, *, materialized: bool) -> str:
    """A text of 8 bytes doubled ``levels`` times with || alone, one CTE per doubling."""
    kind = "MATERIALIZED " if materialized else ""
    ctes = ["a0 AS (SELECT 'xxxxxxxx'::text AS s)"] + [
        f"a{i} AS {kind}(SELECT s || s AS s FROM a{i - 1})" for i in range(1, levels + 1)]
    return f"WITH {', '.join(ctes)} SELECT length(s) FROM a{levels}"


V, P = ErrorCode.VALIDATION_ERROR, ErrorCode.PERMISSION_DENIED

# (case, sql, code, words of the refusal). Without their fixes each of these took from 600 MB to
# several GB on one backend (the first, 9.4 GB); those refused by name make nothing at all.
ATTACKS = [
    # issue 16's: widths in format(), five columns of 900 MB
    ("format star widths", "SELECT " + ", ".join(["format('%*s', 900000000, 'x')"] * 5),
     V, "format widths"),
    ("format written widths", "SELECT format('%900000000s', 'x')", V, "format widths"),
    # functions whose result size an argument sets: refused before they make anything
    ("repeat", "SELECT length(repeat('x', 900000000))", V, "repeat would make"),
    ("lpad", "SELECT length(lpad('x', 250000000, 'yz')), length(lpad('y', 250000000, 'yz'))",
     V, "lpad would make"),
    ("rpad", "SELECT length(rpad('x', 250000000, '€'))", V, "rpad would make"),
    ("nested replace folded into one constant",
     "SELECT length(" + "replace(" * 9 + "'xxxxxxxxxx'" + ", 'x', 'xxxxxxxxxx')" * 9 + ")",
     V, "replace would make"),
    ("regexp_replace back references",
     "SELECT length(regexp_replace(repeat('a', 1000000), '(a)', repeat('\\1', 500), 'g'))",
     V, "regexp_replace would make"),
    ("regexp_match of a thousand groups",
     "SELECT cardinality(regexp_match(repeat('a', 1000000), "
     "repeat('(', 1000) || 'a*' || repeat(')', 1000)))", V, "regexp_match would make"),
    ("array_to_string with a long separator",
     "SELECT length(array_to_string(string_to_array(repeat('a', 1000000), NULL), "
     "repeat('-', 1000)))", V, "array_to_string would make"),
    ("array_replace with a larger element",
     "SELECT cardinality(array_replace(string_to_array(repeat('a', 1000000), NULL), 'a', "
     "repeat('b', 1000)))", V, "array_replace would make"),
    ("jsonpath copying every level",
     "SELECT length(jsonb_path_query_array(('[' || repeat('[', 5000) || repeat(']', 5000) || "
     "']')::jsonb, 'lax $.**')::text)", V, ".**"),
    ("jsonb_pretty of deep nesting",
     "SELECT length(jsonb_pretty((repeat('[', 5000) || repeat(']', 5000))::jsonb))",
     P, "jsonb_pretty"),
    # what no check of the query's text can bound: the memory limit ends each
    ("a value doubled through materialized CTEs", _doubled(26, materialized=True), V,
     "MiB of database memory"),
    ("an expression doubled by the planner, folded into one constant",
     _doubled(19, materialized=False), V, "MiB of database memory"),
    ("string_agg over a series",
     "SELECT length(string_agg(repeat('x', 1000), '')) FROM generate_series(1, (SELECT 700000))",
     V, "MiB of database memory"),
    ("array_agg over a series",
     "SELECT cardinality(array_agg(repeat('x', 100))) FROM generate_series(1, (SELECT 6000000))",
     V, "MiB of database memory"),
    ("the hash table of a recursive UNION",
     "WITH RECURSIVE t(n) AS (SELECT 1 UNION SELECT n + 1 FROM t WHERE n < 8000000) "
     "SELECT count(*) FROM t", V, "MiB of database memory"),
]


@pytest.mark.parametrize(("sql", "code", "words"), [a[1:] for a in ATTACKS],
                         ids=[a[0] for a in ATTACKS])
async def test_an_attack_is_refused_or_stopped_within_the_bound(measured, make_tenant, sql, code,
                                                                 words):
    tenant = await make_tenant()
    pid = await _pid(measured)
    _local_backend(pid)
    started = time.perf_counter()
    refused = await _refusal(measured, tenant, sql)
    seconds = time.perf_counter() - started
    figures = _status(pid)
    private = figures["VmHWM"] - figures["RssFile"] - figures["RssShmem"]
    print(f"peak resident {figures['VmHWM'] / MIB:.0f} MiB, private {private / MIB:.0f} MiB, "
          f"{seconds:.2f} s")
    assert refused.code == code, refused.message
    assert words in refused.message
    assert figures["VmHWM"] < RESIDENT_BOUND
    assert private < EXPLORER_MEMORY_LIMIT + 8 * MIB  # and its stack
    # The backend is fine afterwards and serves the next query.
    assert (await measured.query(tenant.id, "SELECT 1 AS one"))["rows"] == [[1]]


async def test_every_explorer_backend_has_its_memory_limited(measured):
    pid = await _pid(measured)
    _local_backend(pid)
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    data = next(line.split() for line in limits if line.startswith("Max data size"))
    assert data[3:5] == [str(EXPLORER_MEMORY_LIMIT)] * 2  # soft and hard


async def test_a_query_within_the_bound_is_not_hindered(measured, make_tenant):
    tenant = await make_tenant(demo=True)
    pid = await _pid(measured)
    _local_backend(pid)
    # A sort of 1,000,000 texts and a hash of 200,000 groups (some 100 MB between them) spill
    # to disk instead of holding memory.
    data = await measured.query(
        tenant.id, "SELECT count(DISTINCT md5(g::text)), (SELECT count(*) FROM (SELECT g % "
        "200000, count(*) FROM generate_series(1, (SELECT 1000000)) g GROUP BY 1) x) "
        "FROM generate_series(1, (SELECT 1000000)) g")
    assert data["rows"] == [[1000000, 200000]]
    assert _status(pid)["VmHWM"] < RESIDENT_BOUND


async def test_a_value_of_exactly_the_cap_is_made_and_one_byte_more_is_not(measured,
                                                                           make_tenant):
    tenant = await make_tenant()
    data = await measured.query(tenant.id, f"SELECT length(repeat('x', {MAX_VALUE_BYTES}))")
    assert data["rows"] == [[MAX_VALUE_BYTES]]
    refused = await _refusal(measured, tenant, f"SELECT repeat('x', {MAX_VALUE_BYTES + 1})")
    assert f"{MAX_VALUE_BYTES + 1} bytes" in refused.message
    # A wrapper never makes a value larger than 1 MiB, but may keep one that already was.
    data = await measured.query(
        tenant.id, "SELECT length(replace(s, 'a', 'b')), length(regexp_replace(s, 'a+', '-', "
        "'g')) FROM (SELECT string_agg(md5(g::text), '') AS s FROM generate_series(1, 100000) "
        "g) x")
    assert data["rows"][0][0] == 3200000


async def test_every_signature_of_a_wrapped_function_has_its_wrapper(admin_conn):
    """An unqualified call resolves to the wrapper only if one has the same argument types; the
    wrapper keeps the built-in's result, strictness and volatility."""
    rows = await admin_conn.fetch(
        "SELECT n.nspname, p.proname, oidvectortypes(p.proargtypes) AS args, "
        "pg_get_function_result(p.oid) AS result, p.proisstrict, p.provolatile "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname IN ('pg_catalog', 'explorer') AND p.proname = ANY($1::text[])",
        sorted(WRAPPED))
    builtin = {(r["proname"], r["args"]): r for r in rows if r["nspname"] == "pg_catalog"}
    wrapper = {(r["proname"], r["args"]): r for r in rows if r["nspname"] == "explorer"}
    assert {name for name, _ in builtin} == WRAPPED
    assert builtin.keys() == wrapper.keys()
    for key, original in builtin.items():
        assert [wrapper[key][f] for f in ("result", "proisstrict", "provolatile")] == \
            [original[f] for f in ("result", "proisstrict", "provolatile")], key


# -- what the server process reads ------------------------------------------------------------


@pytest.fixture
async def counted(database_urls) -> AsyncIterator[tuple[Explorer, CountingProxy]]:
    """An explorer whose connection goes through a proxy that counts the server's bytes."""
    parts = urlsplit(database_urls.explorer)
    # The server's address, also when the URL names a socket directory (?host=/path).
    query = dict(parse_qsl(parts.query))
    host = query.pop("host", None) or parts.hostname or "127.0.0.1"
    proxy = CountingProxy(host, int(query.pop("port", None) or parts.port or 5432))
    port = await proxy.start()
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{port}"
    explorer = await _explorer(urlunsplit(parts._replace(netloc=netloc, query=urlencode(query))),
                               timeout=20)
    yield explorer, proxy
    await explorer.database.pool.close()
    await proxy.close()


async def _read(explorer: Explorer, proxy: CountingProxy, tenant, sql: str
                ) -> tuple[int, dict | ServiceError]:
    proxy.received = 0
    try:
        outcome: dict | ServiceError = await explorer.query(tenant.id, sql)
    except ServiceError as exc:
        outcome = exc
    return proxy.received, outcome


async def test_rows_beyond_the_cap_are_never_read(counted, make_tenant):
    explorer, proxy = counted
    tenant = await make_tenant()
    # Twenty rows of 900 kB: under the old per-row cap each was sent (16 in the first batch).
    received, data = await _read(
        explorer, proxy, tenant, "SELECT g, (SELECT string_agg(md5((g * h)::text), '') FROM "
        "generate_series(1, 28000) h) FROM generate_series(1, 20) g")
    assert isinstance(data, dict) and data["truncated_by"] == "max_bytes", data
    assert data["row_count"] == 1
    assert received < MAX_RESULT_BYTES + OVERHEAD
    # Rows larger in their binary form than as text (arrays of small numbers: 8 bytes each
    # against 2) are counted as sent.
    received, data = await _read(
        explorer, proxy, tenant, "SELECT g, (SELECT array_agg(h % 10) FROM generate_series(1, "
        "100000) h) FROM generate_series(1, 20) g")
    assert isinstance(data, dict) and data["truncated_by"] == "max_bytes", data
    assert received < MAX_RESULT_BYTES + OVERHEAD


@pytest.mark.parametrize(("sql", "words"), [
    # a value PostgreSQL echoes in full in its error: 3.2 MB of text that is not a number
    ("SELECT (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100000) g)::int",
     "invalid input syntax for type integer"),
    # folded while planning, and a DETAIL naming a 2 MB token
    ("SELECT (repeat('x', 1048576) || repeat('y', 1048576))::jsonb",
     "invalid input syntax for type json"),
])
async def test_an_error_echoing_a_value_is_read_capped(counted, make_tenant, sql, words):
    explorer, proxy = counted
    tenant = await make_tenant()
    received, refused = await _read(explorer, proxy, tenant, sql)
    assert isinstance(refused, ServiceError) and refused.code == ErrorCode.VALIDATION_ERROR
    assert words in refused.message and len(refused.message) < 5000
    assert all(len(str(v)) < 3000 for d in refused.details for v in d.values())
    assert received < OVERHEAD


async def test_samples_of_long_values_are_never_read(counted, make_tenant, admin_conn):
    explorer, proxy = counted
    tenant = await make_tenant(demo=True)
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        # Every item of the tenant with the same 2 MB description: one distinct value.
        await admin_conn.execute("UPDATE work_items SET description = repeat('d', 2000000)")
    proxy.received = 0
    async with explorer.bound(tenant.id) as conn:
        samples = await tenant_samples(conn, explorer.queries, "work_items")
    assert "description" not in samples and "status_category" in samples
    assert proxy.received < OVERHEAD


# -- a backend that runs past its call's answer -----------------------------------------------


@pytest.fixture
async def stubborn(admin_conn) -> AsyncIterator[str]:
    """A function that ignores cancels (its statement_timeout, the driver's cancel request) for
    `seconds`, as a backend busy without interrupt checks would: only ending it stops it."""
    await admin_conn.execute("""
        CREATE FUNCTION explorer_support.test_ignore_cancel(seconds float8) RETURNS int
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
        DECLARE
            until constant timestamptz := clock_timestamp() + make_interval(secs => seconds);
        BEGIN
            WHILE clock_timestamp() < until LOOP
                BEGIN
                    PERFORM pg_sleep(0.02);
                EXCEPTION WHEN query_canceled THEN
                    NULL;
                END;
            END LOOP;
            RETURN 1;
        END $$;
        GRANT EXECUTE ON FUNCTION explorer_support.test_ignore_cancel(float8) TO spiral_explorer
    """)
    yield "SELECT explorer_support.test_ignore_cancel(8)"
    await admin_conn.execute("DROP FUNCTION explorer_support.test_ignore_cancel(float8)")


class _Unchecked:
    """No check of PostgreSQL's reading."""

    async def check(self, *args: object, **kwargs: object) -> None:
        return None


async def _alive(superuser: asyncpg.Connection, pid: int) -> bool:
    return await superuser.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) > 0


@pytest.mark.parametrize("ended_by", ["runtime role", "closed connection"])
async def test_a_backend_still_running_after_the_answer_is_gone_within_2_s(
        database_urls, runtime, superuser_url, make_tenant, stubborn, monkeypatch, ended_by):
    timeout = 0.5
    explorer = await _explorer(database_urls.explorer, timeout=timeout,
                               runtime=runtime if ended_by == "runtime role" else None)
    superuser = await asyncpg.connect(superuser_url)
    try:
        # The stubborn function is no allowed one: neither wall may stand in the way here.
        monkeypatch.setattr(explorer.validator, "check",
                            lambda sql: CheckedQuery(sql=sql, statement=sql))
        monkeypatch.setattr(explorer, "resolution", _Unchecked())
        tenant = await make_tenant()
        pid = await _pid(explorer)
        started = time.perf_counter()
        refused = await _refusal(explorer, tenant, stubborn)
        answered = time.perf_counter()
        assert refused.code == ErrorCode.QUERY_TIMEOUT
        # Answered at its time limit (the server's, then the client's backstop), not when the
        # backend finally stops.
        assert answered - started < timeout + 1.5
        while await _alive(superuser, pid):
            assert time.perf_counter() - answered < 2.0, "the backend runs on past the answer"
            await asyncio.sleep(0.05)
        print(f"answered after {answered - started:.2f} s, backend gone "
              f"{time.perf_counter() - answered:.2f} s later")
        # The pool hands out a fresh connection, not the abandoned one.
        assert (await explorer.query(tenant.id, "SELECT 1 AS one"))["rows"] == [[1]]
        assert await _pid(explorer) != pid
    finally:
        await explorer.close()
        await explorer.database.pool.close()
        await superuser.close()


async def test_ending_a_backend_never_hits_a_session_that_reused_its_pid(database_urls, runtime,
                                                                         superuser_url):
    explorer_conn = await asyncpg.connect(database_urls.explorer)
    app_conn = await asyncpg.connect(database_urls.runtime)
    superuser = await asyncpg.connect(superuser_url)
    try:
        pid = explorer_conn.get_server_pid()
        started = await superuser.fetchval(
            "SELECT backend_start FROM pg_stat_activity WHERE pid = $1", pid)
        server = await superuser.fetchval("SELECT pg_postmaster_start_time()")
        async with runtime.connection() as conn:
            def end(pid: int, alive_at: Any, server_started: Any = server) -> Any:
                return runtime.queries.explorer_end_backend(
                    conn, pid=pid, alive_at=alive_at, server_started=server_started)

            # Seen alive before this session started: another session that had the pid.
            assert await end(pid, started.replace(year=started.year - 1)) is False
            # Not an explorer backend.
            assert await end(app_conn.get_server_pid(), started) is False
            # Seen on another server (which started at another time): its pid is another's.
            assert await end(pid, started, server.replace(year=server.year - 1)) is False
            assert await _alive(superuser, pid)
            assert await end(pid, started) is True
        deadline = time.perf_counter() + 2
        while await _alive(superuser, pid):
            assert time.perf_counter() < deadline
            await asyncio.sleep(0.05)
    finally:
        explorer_conn.terminate()
        await app_conn.close()
        await superuser.close()


async def test_a_database_without_the_memory_limit_is_named_at_start_up(measured, superuser_url,
                                                                         database_urls):
    assert await measured.unguarded() == []
    grant = "EXECUTE ON FUNCTION explorer_guard.limit_memory()"
    su = await asyncpg.connect(superuser_url, database=urlsplit(database_urls.runtime).path[1:])
    try:
        await su.execute(f"REVOKE {grant} FROM spiral_explorer")
        assert await measured.unguarded() == ["no memory limit (explorer_guard.limit_memory)"]
    finally:
        await su.execute(f"GRANT {grant} TO spiral_explorer")
        await su.close()
