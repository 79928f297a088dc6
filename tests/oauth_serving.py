"""The product with OAuth on, served on a real loopback port whose URL is its OAUTH_RESOURCE,
beside a real OpenID provider (tests/oidc_provider.py): what the OAuth end-to-end tests share."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory, make_settings
from oidc_provider import OidcProvider, start_provider
from serving import ProductionLikeServer

from spiral_mcp.admin.errors import AdminError
from spiral_mcp.handlers import builtin_tools
from spiral_mcp.oauth import bindings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app

__all__ = ["USERS", "Bearer", "OAuthApp", "World", "bind", "free_port", "open_world",
           "serve_oauth_app", "world"]

# The provider's users: alice and bob work for acme, carol for globex; dave has no org.
USERS = {"alice": {"email": "alice@example.com", "org_id": "acme"},
         "bob": {"email": "bob@example.com", "org_id": "acme"},
         "carol": {"email": "carol@example.com", "org_id": "globex"}}


@dataclass(frozen=True)
class Bearer:
    """An access token where the transport tests' helpers take a tenant: its headers."""

    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class OAuthApp:
    """The served product: ``resource`` is its /mcp URL, also its OAUTH_RESOURCE."""

    resource: str
    client: TestClient

    async def call_tool(self, token: str, name: str, arguments: dict[str, Any]
                        ) -> ClientResponse:
        """A tools/call of the stateless era (no session) with ``token``."""
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": name, "arguments": arguments, "_meta": meta}}
        return await self.client.post("/mcp", json=body, headers={
            **Bearer(token).headers, "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": name})


def free_port() -> int:
    # The resource URL must be known before the app is made: its port is picked first.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_oauth_app(database_urls: DatabaseUrls, *, issuers: Sequence[str],
                          port: int | None = None, host: str = "127.0.0.1",
                          **env: str) -> AsyncIterator[OAuthApp]:
    """The product serving /mcp on 127.0.0.1 (on ``port``, else a free one) with
    OAUTH_ISSUERS=``issuers`` and OAUTH_RESOURCE its own /mcp URL, named with ``host``
    (``env`` adds settings)."""
    port = port or free_port()
    resource = f"http://{host}:{port}/mcp"
    settings = make_settings(database_urls, OAUTH_ISSUERS=",".join(issuers),
                             OAUTH_RESOURCE=resource, **env)
    app = create_app(settings, database_url=database_urls.runtime, tools=builtin_tools())
    client = TestClient(ProductionLikeServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield OAuthApp(resource=resource, client=client)
    finally:
        await client.close()


async def bind(database_urls: DatabaseUrls, queries: Queries, *, tenant_id: uuid.UUID,
               issuer: str, claim: str | None = None, value: str | None = None) -> None:
    """Bind an issuer (or one value of its claim) to a tenant, as `spiral-mcp oauth bind`."""
    assert database_urls.admin is not None
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await bindings.bind(conn, queries, tenant_id=tenant_id, issuer=issuer, claim=claim,
                            value=value)
    finally:
        await conn.close()


async def unbind_orgs(database_urls: DatabaseUrls, queries: Queries, issuer: str,
                      orgs: list[tuple[uuid.UUID, str]]) -> None:
    """Take back a world's org_id bindings as it ends: the shared database keeps every test's,
    and a later test's provider may be given the same port, where they would collide."""
    assert database_urls.admin is not None
    conn = await asyncpg.connect(database_urls.admin)
    try:
        for tenant_id, org in orgs:
            with contextlib.suppress(AdminError):  # the test took it back itself
                await bindings.unbind(conn, queries, tenant_id=tenant_id, issuer=issuer,
                                      claim="org_id", value=org)
    finally:
        await conn.close()


@dataclass(frozen=True)
class World:
    """A provider, the product trusting it, and two tenants bound to its org_id claim: acme
    (with the demo data) and globex (empty)."""

    provider: OidcProvider
    app: OAuthApp
    acme: Tenant
    globex: Tenant

    async def user_token(self, login: str = "alice", *, scope: str = "spiral:read spiral:write "
                         "spiral:query", resource: str | None = None) -> str:
        """An access token of ``login`` by the authorization code flow (signed in afresh)."""
        self.provider.sign_out()
        client = await self.provider.register_client()
        answer = await self.provider.authorization_code_tokens(
            client, resource=resource or self.app.resource, scope=scope, login=login)
        return str(answer["access_token"])


@contextlib.asynccontextmanager
async def open_world(database_urls: DatabaseUrls, queries: Queries,
                     make_tenant: TenantFactory, *, access_token_ttl: int = 300,
                     documents_ca: Path | None = None, opaque: bool = False,
                     **env: str) -> AsyncIterator[World]:
    """A ``World``: its provider's tokens live ``access_token_ttl`` seconds (``documents_ca``:
    see ``start_provider``); with ``opaque`` they are opaque, and the product introspects them
    as a resource server registered at the provider. ``env`` adds to the product's settings
    (OAUTH_JWKS_MIN_REFRESH is 1 s unless given)."""
    acme = await make_tenant(demo=True, name="acme")
    globex = await make_tenant(name="globex")
    env.setdefault("OAUTH_JWKS_MIN_REFRESH", "1")
    async with contextlib.AsyncExitStack() as stack:
        provider = await stack.enter_async_context(start_provider(
            accounts=USERS, access_token_ttl=access_token_ttl, documents_ca=documents_ca))
        if opaque:
            server = await provider.register_resource_server()
            env.update(OAUTH_INTROSPECTION_URL=provider.metadata["introspection_endpoint"],
                       OAUTH_INTROSPECTION_CLIENT_ID=server["client_id"],
                       OAUTH_INTROSPECTION_CLIENT_SECRET=server["client_secret"])
        app = await stack.enter_async_context(
            serve_oauth_app(database_urls, issuers=[provider.issuer], **env))
        if opaque:
            await provider.reconfigure(opaque_resources=[app.resource])
        orgs = [(acme.id, "acme"), (globex.id, "globex")]
        for tenant_id, org in orgs:
            await bind(database_urls, queries, tenant_id=tenant_id, issuer=provider.issuer,
                       claim="org_id", value=org)
        try:
            yield World(provider=provider, app=app, acme=acme, globex=globex)
        finally:
            await unbind_orgs(database_urls, queries, provider.issuer, orgs)


@pytest.fixture
async def world(database_urls: DatabaseUrls, queries: Queries,
                make_tenant: TenantFactory) -> AsyncIterator[World]:
    async with open_world(database_urls, queries, make_tenant) as opened:
        yield opened
