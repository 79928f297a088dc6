"""No token passthrough (issue 19; MCP authorization, "Token Handling"): a user signed in with
an access token syncs and writes through to Jira, and Jira only ever sees the source's own stored
credentials, never the user's token, in any header or body."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from spiral_mcp.oauth import bindings
from spiral_mcp.server.app import create_app
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_issuer import RESOURCE, FakeIssuer
from tests.fake_jira import FakeJira
from tests.test_source_sync_server import SECRET_KEY, add_source, backfill, envelope


class Overheard:
    """Every header value and body the fake Jira was sent."""

    def __init__(self) -> None:
        self.authorizations: set[str] = set()
        self.everything: list[bytes] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.authorizations.add(request.headers.get("Authorization", ""))
        self.everything.extend(f"{name}: {value}".encode() for name, value in
                               request.headers.items())
        self.everything.append(await request.read())
        return await handler(request)


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    issuer = FakeIssuer(path=f"/realms/{uuid.uuid4().hex[:10]}")
    server = TestServer(issuer.app(), host="127.0.0.1")
    await server.start_server()
    issuer.base = str(server.make_url("")).rstrip("/")
    issuer.url = issuer.base + issuer.path
    yield issuer
    await server.close()


@pytest.fixture
async def jira(serve_fake) -> tuple[FakeJira, Overheard]:
    fake, overheard = FakeJira(), Overheard()
    app = fake.app()
    app.middlewares.insert(0, overheard.middleware)
    return await serve_fake(fake, app=app), overheard


@pytest.fixture
async def app(database_urls, issuer: FakeIssuer) -> AsyncIterator[TestClient]:
    settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0",
                             OAUTH_ISSUERS=issuer.url, OAUTH_RESOURCE=RESOURCE)
    client = TestClient(TestServer(create_app(settings, database_url=database_urls.runtime)))
    await client.start_server()
    yield client
    await client.close()


async def test_jira_sees_the_sources_credentials_never_the_users_token(
        issuer: FakeIssuer, jira: tuple[FakeJira, Overheard], app: TestClient,
        make_tenant: TenantFactory, admin_conn, queries) -> None:
    fake, overheard = jira
    backfill(fake, 3)
    tenant = await make_tenant()
    await bindings.bind(admin_conn, queries, tenant_id=tenant.id, issuer=issuer.url)
    source_id = await add_source(admin_conn, queries, tenant.id, fake)
    token = issuer.token(sub="ada", scope="spiral:read spiral:write spiral:admin")
    ada = Tenant(tenant.id, token, uuid.uuid4())

    synced = await envelope(app, ada, "sources_sync", source_id=str(source_id))
    assert synced["success"], synced
    version = (await envelope(app, ada, "jira_get_issue", issue_key="LOC-1"))["data"]["version"]
    updated = await envelope(app, ada, "jira_update_issue", issue_key="LOC-1",
                             expected_version=version, fields={"summary": "Renamed by Ada"})
    assert updated["success"], updated
    commented = await envelope(app, ada, "jira_add_comment", issue_key="LOC-1", body="Hello")
    assert commented["success"], commented

    assert fake.writes, "the write went through to Jira"
    assert fake.find("ABC-1")["fields"]["summary"] == "Renamed by Ada"
    # Jira was asked with the source's own credentials alone (its gate refuses any other)...
    assert len(overheard.authorizations) == 1
    assert next(iter(overheard.authorizations)).startswith("Basic ")
    # ...and nothing it was sent carries the token, or any part of it.
    signature = token.rsplit(".", 1)[1]
    assert not any(token.encode() in sent or signature.encode() in sent
                   for sent in overheard.everything)
