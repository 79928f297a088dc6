"""The official ``mcp`` client's OAuth support end to end: the product over HTTP, a real OpenID
provider (npm's oidc-provider) on loopback, nothing faked between them.

From the 401 the client discovers the Protected Resource Metadata, then the provider's metadata,
registers itself (dynamic client registration, or a Client ID Metadata Document), sends the user
to sign in (a stand-in browser, ``Browser``, posts the provider's forms), exchanges the code with
PKCE, and calls tools in the tenant the user's org is bound to; it refreshes an expired token and
steps up when a tool needs a scope the token lacks. Machine clients use the client credentials
extensions (a client secret, or a private_key_jwt assertion). Without Node.js these tests are
skipped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
from conftest import TenantFactory
from https_documents import LocalCa, serve_documents
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from oauth_serving import World, open_world, world
from oidc_provider import REDIRECT_URI, OidcProvider, RsaKey, jwt_parts

from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries

__all__ = ["world"]  # the fixture, imported for pytest

MODES = ("legacy", "auto")


class MemoryStorage:
    """The client's token storage (``mcp.client.auth.TokenStorage``), keeping every token set."""

    def __init__(self) -> None:
        self.saved: list[OAuthToken] = []
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.saved[-1] if self.saved else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.saved.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Browser:
    """The user's side of the authorization code flow: the redirect handler opens the
    authorization URL, signs in as ``login`` and consents; the callback handler hands back what
    the provider redirected with. ``grant_first`` stands for a user who, the first time, grants
    only those scopes of what was asked."""

    def __init__(self, provider: OidcProvider, login: str, *,
                 grant_first: str | None = None) -> None:
        self.provider = provider
        self.login = login
        self.grant_first = grant_first
        self.urls: list[str] = []
        self._answer: dict[str, str] = {}
        provider.sign_out()

    def asked(self, index: int = -1) -> dict[str, str]:
        """The parameters of an authorization request the client made."""
        return {name: values[0] for name, values in parse_qs(urlsplit(self.urls[index]).query)
                .items()}

    async def redirect(self, url: str) -> None:
        self.urls.append(url)
        if self.grant_first is not None and len(self.urls) == 1:
            parts = urlsplit(url)
            query = {**self.asked(), "scope": self.grant_first}
            url = urlunsplit(parts._replace(query=urlencode(query)))
        self._answer = await self.provider.authorize(url, login=self.login)

    async def callback(self) -> AuthorizationCodeResult:
        assert "code" in self._answer, self._answer
        return AuthorizationCodeResult(code=self._answer["code"], state=self._answer.get("state"),
                                       iss=self._answer.get("iss"))


def user_client(world: World, browser: Browser, storage: MemoryStorage,
                **options: Any) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=world.app.resource,
        client_metadata=OAuthClientMetadata(
            client_name="spiral-mcp e2e", redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"], response_types=["code"],
            token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=browser.redirect, callback_handler=browser.callback,
        **options)


@contextlib.asynccontextmanager
async def connect(world: World, auth: httpx2.Auth, mode: str = "legacy"
                  ) -> AsyncIterator[Client]:
    transport = streamable_http_client(world.app.resource,
                                       http_client=httpx2.AsyncClient(auth=auth, timeout=30))
    async with Client(transport, mode=mode) as client:
        yield client


async def structured(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert result.structured_content is not None, result
    return dict(result.structured_content)


@pytest.mark.parametrize("mode", MODES)
async def test_a_user_signs_in_through_the_official_client(world: World, mode: str) -> None:
    browser, storage = Browser(world.provider, "alice"), MemoryStorage()
    async with connect(world, user_client(world, browser, storage), mode) as client:
        issue = await structured(client, "jira_get_issue", {"issue_key": "WEB-3"})
        assert issue["success"] is True
        assert issue["tenant_id"] == str(world.acme.id)
        tables = await structured(client, "explorer_list_tables", {})
        assert tables["success"] is True, tables

    # One sign-in: discovery from the 401 and the metadata, registration, PKCE, the resource.
    assert len(browser.urls) == 1
    asked = browser.asked()
    assert asked["code_challenge_method"] == "S256"
    assert asked["resource"] == world.app.resource
    assert {"spiral:read", "spiral:write", "spiral:query"} <= set(asked["scope"].split())
    assert storage.client_info is not None
    assert asked["client_id"] == storage.client_info.client_id  # registered dynamically
    _, claims = jwt_parts(storage.saved[-1].access_token)
    assert claims["aud"] == world.app.resource
    assert claims["iss"] == world.provider.issuer
    assert claims["email"] == "alice@example.com"


async def test_an_expired_token_is_refreshed(database_urls: DatabaseUrls, queries: Queries,
                                             make_tenant: TenantFactory) -> None:
    async with open_world(database_urls, queries, make_tenant, access_token_ttl=5,
                          OAUTH_LEEWAY="0") as short:
        browser, storage = Browser(short.provider, "bob"), MemoryStorage()
        async with connect(short, user_client(short, browser, storage)) as client:
            first = await structured(client, "jira_search", {})
            assert first["tenant_id"] == str(short.acme.id)
            await asyncio.sleep(5.5)
            # The product refuses the first token now (no leeway here)...
            expired = await short.app.call_tool(storage.saved[0].access_token, "jira_search", {})
            assert expired.status == 401
            assert "expired" in expired.headers["WWW-Authenticate"] + await expired.text()
            # ...and the client refreshes before its next call, in the same session.
            again = await structured(client, "jira_search", {})
            assert again["tenant_id"] == str(short.acme.id)
        assert len(browser.urls) == 1  # refreshed, not signed in again
        assert len(storage.saved) == 2
        assert storage.saved[1].access_token != storage.saved[0].access_token


async def test_a_tool_needing_more_scope_makes_the_client_step_up(world: World) -> None:
    browser = Browser(world.provider, "alice", grant_first="spiral:read offline_access")
    storage = MemoryStorage()
    async with connect(world, user_client(world, browser, storage)) as client:
        assert (await structured(client, "jira_search", {}))["success"] is True
        assert storage.saved[-1].scope == "spiral:read"
        comment = await structured(client, "jira_add_comment",
                                   {"issue_key": "WEB-3", "body": "after step-up"})
        assert comment["success"] is True, comment
        assert "alice@example.com" in str(comment["data"])
    # The 403 insufficient_scope sent the user back once, asking for write too.
    assert len(browser.urls) == 2
    assert {"spiral:read", "spiral:write"} <= set(browser.asked(1)["scope"].split())
    assert "spiral:write" in (storage.saved[-1].scope or "").split()


async def test_a_client_id_metadata_document_instead_of_registration(
        database_urls: DatabaseUrls, queries: Queries, make_tenant: TenantFactory,
        tmp_path) -> None:
    ca = LocalCa.create(tmp_path)
    async with serve_documents(ca) as (origin, documents), open_world(
            database_urls, queries, make_tenant, documents_ca=ca.ca_file) as cimd:
        client_id = f"{origin}/spiral-e2e/client.json"
        documents["/spiral-e2e/client.json"] = {
            "client_id": client_id, "client_name": "spiral-mcp e2e",
            "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "token_endpoint_auth_method": "none"}
        browser, storage = Browser(cimd.provider, "carol"), MemoryStorage()
        auth = user_client(cimd, browser, storage, client_metadata_url=client_id)
        async with connect(cimd, auth) as client:
            found = await structured(client, "jira_search", {})
            assert found["tenant_id"] == str(cimd.globex.id)
        assert browser.asked()["client_id"] == client_id
        assert jwt_parts(storage.saved[-1].access_token)[1]["client_id"] == client_id


async def test_a_machine_client_with_a_secret(world: World) -> None:
    registered = await world.provider.register_machine_client(org_id="acme")
    storage = MemoryStorage()
    auth = ClientCredentialsOAuthProvider(
        server_url=world.app.resource, storage=storage, client_id=registered["client_id"],
        client_secret=registered["client_secret"], issuer=world.provider.issuer)
    async with connect(world, auth, "auto") as client:
        issue = await structured(client, "jira_get_issue", {"issue_key": "WEB-3"})
        assert issue["tenant_id"] == str(world.acme.id)
    _, claims = jwt_parts(storage.saved[-1].access_token)
    assert claims["sub"] == registered["client_id"]
    assert claims["aud"] == world.app.resource


async def test_a_machine_client_with_a_private_key_jwt(world: World) -> None:
    key = RsaKey.generate()
    registered = await world.provider.register_machine_client(
        org_id="globex", token_endpoint_auth_method="private_key_jwt",
        token_endpoint_auth_signing_alg="RS256", jwks={"keys": [key.public_jwk()]})
    client_id = registered["client_id"]
    assertion = SignedJWTParameters(issuer=client_id, subject=client_id,
                                    signing_key=key.private_pem().decode())
    storage = MemoryStorage()
    auth = PrivateKeyJWTOAuthProvider(
        server_url=world.app.resource, storage=storage, client_id=client_id,
        assertion_provider=assertion.create_assertion_provider(), issuer=world.provider.issuer)
    async with connect(world, auth) as client:
        found = await structured(client, "jira_search", {})
        assert found["tenant_id"] == str(world.globex.id)
        assert found["data"]["issues"] == []
