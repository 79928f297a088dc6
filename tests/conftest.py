"""Shared fixtures: a real PostgreSQL (TEST_DATABASE_URL, or the embedded server), a fresh database
provisioned and migrated for this run, tenants with keys, and the app served over real HTTP."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as redis
from browser import browser, phone_browser, screenshot_dir  # noqa: F401 (fixtures)
from faults import OwnRedis

from spiral_mcp import admin
from spiral_mcp.config import Settings, load_settings
from spiral_mcp.provision import DatabaseUrls, provision, start_embedded
from spiral_mcp.queries import Queries
from spiral_mcp.roles import OWNER_ROLE, url_for_role
from spiral_mcp.server.app import create_app
from spiral_mcp.sources import networks as source_networks
from tests.balancer import haproxy_binary

ROOT = Path(__file__).resolve().parent.parent


# Every fake source is served on loopback, which sources may reach only when the operator lists
# it (SOURCE_PRIVATE_NETWORKS): every served app, adapter and check of the tests lists it, as the
# CLI's runs do (LOOPBACK_SETTING); the tests of the rule take it out again (public_only).
LOOPBACK_SETTING = "127.0.0.0/8,::1/128"
LOOPBACK = source_networks.SourceNetworks(tuple(
    ipaddress.ip_network(cidr) for cidr in LOOPBACK_SETTING.split(",")))


@pytest.fixture(autouse=True)
def sources_reach_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_networks, "DEFAULT", LOOPBACK)


@pytest.fixture
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sources reach public addresses only, as with SOURCE_PRIVATE_NETWORKS unset."""
    monkeypatch.setattr(source_networks, "DEFAULT", source_networks.SourceNetworks())


@pytest.fixture(scope="session")
def superuser_url() -> str:
    """A superuser URL: TEST_DATABASE_URL when given, else an embedded server for the tests."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return start_embedded(ROOT / ".test-pg")


@pytest.fixture(scope="session")
async def database_urls(superuser_url: str) -> AsyncIterator[DatabaseUrls]:
    name = f"spiral_test_{uuid.uuid4().hex[:12]}"
    urls = await provision(superuser_url, name)
    yield urls
    conn = await asyncpg.connect(superuser_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def fresh_database(superuser_url: str) -> AsyncIterator[str]:
    """An empty database owned by the owner role, never the shared test database; its URL as
    the owner. The roles exist already (the session's provisioning made them)."""
    name = f"spiral_fresh_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(superuser_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" OWNER "{OWNER_ROLE}"')
        yield url_for_role(superuser_url, OWNER_ROLE, database=name)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture(scope="session")
def queries() -> Queries:
    return Queries.load()


@pytest.fixture
async def admin_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the owner role (what the CLI uses)."""
    assert database_urls.admin is not None
    conn = await asyncpg.connect(database_urls.admin)
    yield conn
    await conn.close()


@pytest.fixture
async def app_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the runtime role (what the server uses)."""
    conn = await asyncpg.connect(database_urls.runtime)
    yield conn
    await conn.close()


class Tenant:
    def __init__(self, tenant_id: uuid.UUID, key: str, key_id: uuid.UUID) -> None:
        self.id = tenant_id
        self.key = key
        self.key_id = key_id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


TenantFactory = Callable[..., Awaitable[Tenant]]


@pytest.fixture
async def explorer(database_urls: DatabaseUrls) -> AsyncIterator[Any]:
    """The data explorer on a pool of its own, as the server builds it."""
    from spiral_mcp.explorer import Explorer, create_explorer_pool

    pool = await create_explorer_pool(database_urls.explorer, min_size=1, max_size=1,
                                      connect_timeout=5, query_timeout=2)
    try:
        yield await Explorer.start(pool, Queries.load(), acquire_timeout=5, query_timeout=2,
                                   max_rows=100)
    finally:
        await pool.close()


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    """A tenant with the demo data and a key with every scope."""
    return await make_tenant(demo=True)


@pytest.fixture
def make_tenant(database_urls: DatabaseUrls, queries: Queries) -> TenantFactory:
    """Create a tenant and a key: ``await make_tenant(scopes=[...], user=..., demo=False)``."""

    async def make(
        *, scopes: tuple[str, ...] = ("read", "write", "query", "admin"),
        user: str | None = "tester@example.com", demo: bool = False, name: str = "test",
    ) -> Tenant:
        assert database_urls.admin is not None
        return await new_tenant(database_urls.admin, queries, scopes=scopes, user=user,
                                demo=demo, name=name)

    return make


async def new_tenant(
    admin_url: str, queries: Queries, *,
    scopes: tuple[str, ...] = ("read", "write", "query", "admin"),
    user: str | None = "tester@example.com", demo: bool = False, name: str = "test",
) -> Tenant:
    """A tenant and a key, made as the owner at ``admin_url`` (see ``make_tenant``)."""
    from spiral_mcp import demo as demo_data

    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            tenant_id = await admin.create_tenant(conn, queries, name)
            key_id, secret = await admin.create_api_key(
                conn, queries, tenant_id=tenant_id, name="test key", scopes=list(scopes),
                user=user,
            )
            if demo:
                await demo_data.load_demo(conn, queries, tenant_id=tenant_id,
                                          items_per_project=20)
    finally:
        await conn.close()
    return Tenant(tenant_id, secret, key_id)


def make_settings(database_urls: DatabaseUrls, **env: str) -> Settings:
    base = {"DATABASE_URL": database_urls.runtime, "AUTH_CACHE_TTL": "0", "DB_POOL_MIN": "1",
            "DB_POOL_MAX": "5"}
    return load_settings(environ={**base, **env})


@pytest.fixture
def settings(database_urls: DatabaseUrls) -> Settings:
    return make_settings(database_urls)


@pytest.fixture
async def client(aiohttp_client, settings: Settings, database_urls: DatabaseUrls):
    """The app, served on a real loopback socket, and a client for it."""
    return await aiohttp_client(create_app(settings, database_url=database_urls.runtime,
                                           explorer_url=database_urls.explorer))


@pytest.fixture(scope="session")
async def redis_url() -> str:
    """A reachable Redis, or a skip with the reason; in CI a missing Redis fails the run."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        await asyncio.wait_for(client.ping(), 2)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Redis at {url}: {exc}")
        pytest.skip(f"no Redis reachable at {url} ({exc}); set REDIS_URL to run this test")
    finally:
        await client.aclose()
    return url


@pytest.fixture
async def serve_fake(superuser_url: str, database_urls: DatabaseUrls):
    """Serve a fake source API (anything with ``app()``) over real HTTP until the test ends:
    ``await serve_fake(FakeJira())``; its address, with ``path`` if given, is ``fake.base_url``.

    When the test ends, the sources it pointed at the fake are retired to an address nothing
    listens on: the shared database keeps every test's tenants, and a later test's fake may
    be given the same port, where a server's background sync would find them again."""
    from aiohttp.test_utils import TestServer

    servers: list[TestServer] = []

    async def start(fake: Any, *, path: str = "", app: Any = None) -> Any:
        server = TestServer(app if app is not None else fake.app())
        await server.start_server()
        servers.append(server)
        fake.base_url = str(server.make_url(path)).rstrip("/")
        return fake

    yield start
    roots = [str(server.make_url("")).rstrip("/") for server in servers]
    for server in servers:
        await server.close()
    if roots:
        await retire_sources(roots, superuser_url, database_urls)


async def retire_sources(roots: list[str], superuser_url: str,
                         database_urls: DatabaseUrls) -> None:
    # As the superuser: row-level security hides every tenant's sources from the owner.
    assert database_urls.admin is not None
    database = urlsplit(database_urls.admin).path.lstrip("/")
    conn = await asyncpg.connect(superuser_url, database=database)
    try:
        await conn.execute(
            "UPDATE source_instances SET base_url = 'http://127.0.0.1:1/retired'"
            " WHERE base_url = ANY($1::text[])"
            " OR base_url LIKE ANY (SELECT root || '/%' FROM unnest($1::text[]) AS root)",
            roots)
    finally:
        await conn.close()


@pytest.fixture
async def resetting_host() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A host that reads each request's head, then resets the connection, as a crashing proxy
    does: its base URL, and the heads it read."""
    import socket
    import struct

    heads: list[bytes] = []

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        # Lingering 0 s makes the close a reset (RST), not an orderly end (FIN).
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", heads
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="session")
def haproxy() -> str:
    """HAProxy's program, or a skip; in CI (.ci/run installs it) a failure, as for Node.js."""
    found = haproxy_binary()
    if found is None:
        reason = "haproxy is not installed (Debian: apt-get install haproxy)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs HAProxy for the balancer tests: {reason}")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    """A Redis of the test module's own (no persistence), which its tests may stop and start:
    the machine's Redis is shared with other runs."""
    if not OwnRedis.available():
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# The admin API's client, every answer checked against the OpenAPI document.
from api_fixtures import api  # noqa: E402, F401

# The replica tests' cluster, one for the whole run (imported last: it imports this module).
from replica_fixtures import replica_client, replicated  # noqa: E402, F401
