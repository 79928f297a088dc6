"""Access tokens against the product over HTTP, with a real OpenID provider (npm's oidc-provider)
and its real keys: what is accepted, in which tenant, and each way a token must be refused (wrong
audience or issuer, expired, not yet valid, bad signature, alg none, HS256 with the public key, a
retired key, another tenant's org, too few scopes), with the challenge the client gets. Without
Node.js these tests are skipped."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
from aiohttp import ClientResponse
from conftest import TenantFactory
from oauth_serving import Bearer, World, bind, open_world, serve_oauth_app, world
from oidc_provider import RsaKey, jwt_parts, sign_jwt, start_provider
from test_transports import SESSION, open_session, post, request

from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries

__all__ = ["world"]  # the fixture, imported for pytest


async def challenge(response: ClientResponse, status: int = 401) -> str:
    """The refusal's WWW-Authenticate and body, for assertions on what the client is told."""
    text = await response.text()
    assert response.status == status, text
    return f"{response.headers.get('WWW-Authenticate', '')}\n{text}"


async def tool_result(response: ClientResponse) -> dict[str, Any]:
    """The structuredContent of a tools/call answered with JSON or one SSE event."""
    text = await response.text()
    assert response.status == 200, text
    if response.content_type == "text/event-stream":
        data = [line.removeprefix("data:").strip() for line in text.splitlines()
                if line.startswith("data:")]
        text = data[-1]
    body = orjson.loads(text)
    assert "result" in body, body
    return dict(body["result"]["structuredContent"])


def reissued(token: str, key: RsaKey, **changes: Any) -> str:
    """The provider's token with ``changes`` to its claims, signed again with ``key``."""
    header, claims = jwt_parts(token)
    claims.update(changes)
    return sign_jwt({k: v for k, v in claims.items() if v is not None}, key=key,
                    kid=header["kid"])


async def test_a_user_acts_in_the_tenant_its_org_is_bound_to(world: World) -> None:
    token = await world.user_token("alice")
    issue = await tool_result(await world.app.call_tool(token, "jira_get_issue",
                                                        {"issue_key": "WEB-3"}))
    assert issue["success"] is True
    assert issue["tenant_id"] == str(world.acme.id)
    comment = await tool_result(await world.app.call_tool(
        token, "jira_add_comment", {"issue_key": "WEB-3", "body": "seen by alice"}))
    assert comment["success"] is True, comment
    assert "alice@example.com" in orjson.dumps(comment["data"]).decode()


async def test_another_orgs_user_sees_only_its_own_tenant(world: World) -> None:
    token = await world.user_token("carol")
    missing = await tool_result(await world.app.call_tool(token, "jira_get_issue",
                                                          {"issue_key": "WEB-3"}))
    assert missing["success"] is False
    assert missing["error"]["code"] == "NOT_FOUND"
    found = await tool_result(await world.app.call_tool(token, "jira_search", {}))
    assert found["success"] is True
    assert found["tenant_id"] == str(world.globex.id)
    assert found["data"]["issues"] == []


async def test_a_user_of_no_bound_org_is_refused(world: World) -> None:
    token = await world.user_token("dave")  # signs in, but has no org_id
    assert "no tenant is bound" in await challenge(
        await world.app.call_tool(token, "jira_search", {}))


async def test_a_machine_client_acts_in_its_orgs_tenant(world: World) -> None:
    client = await world.provider.register_machine_client(org_id="acme")
    answer = await world.provider.client_credentials_token(client, resource=world.app.resource,
                                                           scope="spiral:read")
    issue = await tool_result(await world.app.call_tool(answer["access_token"],
                                                        "jira_get_issue", {"issue_key": "WEB-3"}))
    assert issue["tenant_id"] == str(world.acme.id)


async def test_a_token_for_another_resource_is_refused(world: World) -> None:
    token = await world.user_token("alice", resource="http://127.0.0.1:9/elsewhere")
    said = await challenge(await world.app.call_tool(token, "jira_search", {}))
    assert 'error="invalid_token"' in said
    assert "another resource" in said
    assert "resource_metadata=" in said


async def test_a_token_of_an_issuer_not_configured_is_refused(world: World) -> None:
    async with start_provider(accounts={"alice": {"email": "a@x", "org_id": "acme"}}) as other:
        client = await other.register_machine_client(org_id="acme")
        answer = await other.client_credentials_token(client, resource=world.app.resource)
        said = await challenge(await world.app.call_tool(answer["access_token"],
                                                         "jira_search", {}))
    assert 'error="invalid_token"' in said
    assert "issuer is not trusted" in said


async def test_a_configured_issuer_bound_to_no_tenant_is_refused(
        database_urls: DatabaseUrls, queries: Queries, world: World) -> None:
    async with start_provider() as unbound, serve_oauth_app(
            database_urls, issuers=[world.provider.issuer, unbound.issuer]) as app:
        client = await unbound.register_machine_client()
        answer = await unbound.client_credentials_token(client, resource=app.resource)
        said = await challenge(await app.call_tool(answer["access_token"], "jira_search", {}))
        assert "no tenant is bound" in said

        # Bound whole to globex, the same token now acts there.
        await bind(database_urls, queries, tenant_id=world.globex.id, issuer=unbound.issuer)
        found = await tool_result(await app.call_tool(answer["access_token"], "jira_search", {}))
        assert found["tenant_id"] == str(world.globex.id)


async def test_the_providers_claims_re_signed_with_its_key_are_accepted(world: World) -> None:
    # The control for the forged refusals below: only their one change makes them fail.
    token = reissued(await world.user_token("alice"), world.provider.signing_key)
    found = await tool_result(await world.app.call_tool(token, "jira_search", {}))
    assert found["tenant_id"] == str(world.acme.id)


async def test_an_expired_token_is_refused(world: World) -> None:
    now = int(time.time())
    token = reissued(await world.user_token(), world.provider.signing_key,
                     iat=now - 900, exp=now - 300)  # past the default leeway of 60 s
    said = await challenge(await world.app.call_tool(token, "jira_search", {}))
    assert 'error="invalid_token"' in said
    assert "expired" in said


async def test_a_token_not_yet_valid_is_refused(world: World) -> None:
    token = reissued(await world.user_token(), world.provider.signing_key,
                     nbf=int(time.time()) + 600)
    assert "not valid yet" in await challenge(await world.app.call_tool(token, "jira_search",
                                                                        {}))


async def test_a_token_signed_by_another_key_under_the_providers_kid_is_refused(
        world: World) -> None:
    impostor = RsaKey.generate(world.provider.signing_key.kid)
    token = reissued(await world.user_token(), impostor)
    assert "signature does not verify" in await challenge(
        await world.app.call_tool(token, "jira_search", {}))


async def test_a_token_with_a_changed_claim_is_refused(world: World) -> None:
    token = await world.user_token("carol")
    head, _, signature = token.split(".")
    claims = jwt_parts(token)[1]
    claims["org_id"] = "acme"  # carol claims acme's tenant, keeping the provider's signature
    body = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    assert "signature does not verify" in await challenge(
        await world.app.call_tool(f"{head}.{body}.{signature}", "jira_search", {}))


async def test_an_unsigned_token_is_refused(world: World) -> None:
    _, claims = jwt_parts(await world.user_token())
    token = sign_jwt(claims, alg="none")
    assert "algorithm is not accepted" in await challenge(
        await world.app.call_tool(token, "jira_search", {}))


async def test_a_token_signed_hs256_with_the_public_key_is_refused(world: World) -> None:
    _, claims = jwt_parts(await world.user_token())
    key = world.provider.signing_key
    for secret in (key.public_pem(), orjson.dumps(key.public_jwk())):
        token = sign_jwt(claims, alg="HS256", secret=secret, kid=key.kid)
        assert "algorithm is not accepted" in await challenge(
            await world.app.call_tool(token, "jira_search", {}))


async def test_keys_the_provider_rotates_in_are_found_and_retired_ones_refused(
        world: World) -> None:
    old_token = await world.user_token("alice")
    found = await tool_result(await world.app.call_tool(old_token, "jira_search", {}))
    assert found["tenant_id"] == str(world.acme.id)

    new_key = RsaKey.generate()
    assert await world.provider.rotate_keys([new_key]) == [new_key.kid]
    new_token = await world.user_token("alice")
    assert jwt_parts(new_token)[0]["kid"] == new_key.kid
    # OAUTH_JWKS_MIN_REFRESH is 1 s here: a kid not seen yet is looked up once that long has
    # passed since the last fetch.
    await asyncio.sleep(1.1)
    found = await tool_result(await world.app.call_tool(new_token, "jira_search", {}))
    assert found["tenant_id"] == str(world.acme.id)

    # That fetch no longer listed the old key: its still unexpired token is refused.
    said = await challenge(await world.app.call_tool(old_token, "jira_search", {}))
    assert 'error="invalid_token"' in said
    assert "signing key is not one its issuer publishes" in said


async def test_a_token_without_the_tools_scope_gets_a_step_up_challenge(world: World) -> None:
    token = await world.user_token("alice", scope="spiral:read")
    assert (await tool_result(await world.app.call_tool(token, "jira_search", {})))["success"]
    said = await challenge(await world.app.call_tool(
        token, "jira_add_comment", {"issue_key": "WEB-3", "body": "x"}), 403)
    assert 'error="insufficient_scope"' in said
    assert 'scope="spiral:write"' in said
    assert "resource_metadata=" in said


async def test_a_session_belongs_to_its_user_whatever_their_token(world: World) -> None:
    alice, bob, carol = [await world.user_token(login) for login in ("alice", "bob", "carol")]
    sid = await open_session(world.app.client, Bearer(alice))
    call = request("tools/call", 2, name="jira_get_issue", arguments={"issue_key": "WEB-3"})

    # Alice again, with another token (a refresh or a new sign-in): her session.
    again = await post(world.app.client, Bearer(await world.user_token("alice")), call, sid=sid,
                       version="2025-11-25")
    assert again.status == 200, await again.text()
    assert again.headers.get(SESSION, sid) == sid
    # Bob, same tenant, and carol, another: no such session for them.
    for other in (bob, carol):
        refused = await post(world.app.client, Bearer(other), call, sid=sid,
                             version="2025-11-25")
        assert refused.status == 404, await refused.text()


async def test_opaque_tokens_are_checked_by_introspection(
        database_urls: DatabaseUrls, queries: Queries, make_tenant: TenantFactory) -> None:
    async with open_world(database_urls, queries, make_tenant, opaque=True) as opaque:
        token = await opaque.user_token("alice")
        assert "." not in token  # not a JWT: only the provider can say what it is
        issue = await tool_result(await opaque.app.call_tool(token, "jira_get_issue",
                                                             {"issue_key": "WEB-3"}))
        assert issue["tenant_id"] == str(opaque.acme.id)
        carol = await opaque.user_token("carol")
        found = await tool_result(await opaque.app.call_tool(carol, "jira_search", {}))
        assert found["tenant_id"] == str(opaque.globex.id)

        machine = await opaque.provider.register_machine_client(org_id="acme")
        answer = await opaque.provider.client_credentials_token(
            machine, resource=opaque.app.resource, scope="spiral:read")
        found = await tool_result(await opaque.app.call_tool(answer["access_token"],
                                                             "jira_search", {}))
        assert found["tenant_id"] == str(opaque.acme.id)

        said = await challenge(await opaque.app.call_tool("an-opaque-token-nobody-issued",
                                                          "jira_search", {}))
        assert 'error="invalid_token"' in said
        assert "not active" in said


async def test_a_401_leads_to_the_provider_through_the_resource_metadata(world: World) -> None:
    response = await world.app.client.post("/mcp", json=request("ping"), headers={
        "Accept": "application/json, text/event-stream"})
    said = await challenge(response)
    assert "error=" not in said.splitlines()[0]  # no credential: a bare challenge
    metadata_url = said.split('resource_metadata="', 1)[1].split('"', 1)[0]
    async with world.provider.http.get(metadata_url) as answer:
        assert answer.status == 200
        metadata = await answer.json()
    assert metadata["resource"] == world.app.resource
    assert metadata["authorization_servers"] == [world.provider.issuer]
    assert {"spiral:read", "spiral:write", "spiral:query"} <= set(metadata["scopes_supported"])
    assert metadata["bearer_methods_supported"] == ["header"]
    # The issuer named there publishes its metadata where RFC 8414 and OpenID say.
    for document in ("oauth-authorization-server", "openid-configuration"):
        async with world.provider.http.get(
                f"{world.provider.issuer}/.well-known/{document}") as answer:
            assert answer.status == 200, document
            assert (await answer.json())["issuer"] == world.provider.issuer
