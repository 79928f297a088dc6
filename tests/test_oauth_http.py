"""OAuth over real HTTP: real authorization servers (tests/fake_issuer.py, served on loopback
with keys made by ``cryptography`` and tokens signed by PyJWT), the app started with
OAUTH_ISSUERS and OAUTH_RESOURCE, real PostgreSQL.

The metadata documents, the 401 and step-up 403 challenges, tokens acting in the tenant their
issuer or claim value is bound to as the user they name, tokens mapping to no tenant, API keys
beside tokens, the readable 404s of a server without OAuth, a token's streams and tasks ending at
its exp, and sessions, tasks and request states that belong to the user who made them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from spiral_mcp.handlers import builtin_tools
from spiral_mcp.oauth import bindings
from spiral_mcp.oauth.identity import principal_id
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import SESSIONS
from tests.conformance_mrtr import mrtr_tools
from tests.conformance_tasks import task_fixture_tools
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_issuer import RESOURCE, FakeIssuer
from tests.serving import app_clients
from tests.test_auth import _ended, _open_streams

MODERN = "2026-07-28"
METADATA_URL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
STARTING_SCOPES = "spiral:read spiral:write spiral:query"
TASKS = {"extensions": {"io.modelcontextprotocol/tasks": {}}, "elicitation": {}}

Serve = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def idps() -> AsyncIterator[list[FakeIssuer]]:
    """Two authorization servers, each with an issuer URL of its own (the bindings are global,
    and a later test's server may get the same port)."""
    servers: list[TestServer] = []
    made: list[FakeIssuer] = []
    for _ in range(2):
        issuer = FakeIssuer(path=f"/realms/{uuid.uuid4().hex[:10]}")
        server = TestServer(issuer.app(), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        issuer.base = str(server.make_url("")).rstrip("/")
        issuer.url = issuer.base + issuer.path
        made.append(issuer)
    yield made
    for server in servers:
        await server.close()


@pytest.fixture
async def serve(database_urls: DatabaseUrls, idps: list[FakeIssuer]) -> AsyncIterator[Serve]:
    """``await serve(oauth=True, **env)``: the app trusting both issuers (or none), with the
    task and multi round-trip fixtures beside the product's tools."""
    async with app_clients() as start:
        async def make(*, oauth: bool = True, **env: str) -> TestClient:
            if oauth:
                env = {"OAUTH_ISSUERS": ",".join(i.url for i in idps), "OAUTH_RESOURCE": RESOURCE,
                       "OAUTH_LEEWAY": "0", **env}
            settings = make_settings(database_urls, TASK_POLL_INTERVAL="0.25", TASK_LEASE="1",
                                     **env)
            return await start(create_app(
                settings, database_url=database_urls.runtime, explorer_url=database_urls.explorer,
                tools=[*builtin_tools(), *task_fixture_tools(), *mrtr_tools()]))

        yield make


@pytest.fixture
async def orgs(make_tenant: TenantFactory, idps: list[FakeIssuer], admin_conn: asyncpg.Connection,
               queries: Queries) -> dict[str, Tenant]:
    """Tenant "acme" (demo data) and "globex" (none), bound per value of the first issuer's
    claim ``org``; the second issuer is trusted but bound to no tenant."""
    tenants = {"acme": await make_tenant(demo=True, name="acme"),
               "globex": await make_tenant(name="globex")}
    for org, tenant in tenants.items():
        await bindings.bind(admin_conn, queries, tenant_id=tenant.id, issuer=idps[0].url,
                            claim="org", value=org)
    return tenants


def user(issuer: FakeIssuer, tenant: Tenant | None = None, *, org: str | None = None,
         sub: str = "ada", scope: str = "spiral:read spiral:write", **claims: Any) -> Tenant:
    """A token of ``issuer`` for ``sub`` (claim ``org`` if given), dressed as a Tenant: its
    headers carry the token, its key id is the user's principal id."""
    token = issuer.token(sub=sub, scope=scope, org=org, **claims)
    tenant_id = tenant.id if tenant else uuid.uuid4()
    return Tenant(tenant_id, token, principal_id(issuer.url, sub, tenant_id))


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def rpc_body(method: str, rid: int = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


async def execute(client: TestClient, who: Tenant, method: str, **params: Any) -> ClientResponse:
    return await client.post("/execute", json=rpc_body(method, **params), headers=who.headers)


async def stateless(client: TestClient, who: Tenant, method: str, *,
                    capabilities: dict[str, Any] | None = None, **params: Any
                    ) -> ClientResponse:
    """One 2026-07-28 request, headers and _meta as its clients send them."""
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                       "io.modelcontextprotocol/clientCapabilities": capabilities or {}}
    headers = {**who.headers, "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
               "Mcp-Method": method}
    named = params.get("name") if method in ("tools/call", "prompts/get") else (
        params.get("uri") if method == "resources/read" else params.get("taskId"))
    if named is not None:
        headers["Mcp-Name"] = named
    return await client.post("/mcp", data=orjson.dumps(rpc_body(method, **params)),
                             headers=headers)


async def result_of(response: ClientResponse) -> dict[str, Any]:
    assert response.status == 200, await response.text()
    body = await response.json()
    assert "result" in body, body
    return body["result"]


def challenge(header: str) -> dict[str, str]:
    """The parameters of a ``Bearer`` challenge (values hold no quotes, RFC 6750)."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params = {}
    for part in rest.split('", '):
        name, _, value = part.partition('="')
        params[name] = value.rstrip('"')
    return params


# -- discovery ---------------------------------------------------------------------------------

async def test_the_metadata_is_served_at_both_paths_and_readable_from_any_origin(
        serve: Serve, idps: list[FakeIssuer]) -> None:
    client = await serve()
    index = await (await client.get("/")).json()
    assert index["endpoints"]["oauth_protected_resource"] == \
        "/.well-known/oauth-protected-resource/mcp"
    expected = {"resource": RESOURCE, "authorization_servers": [i.url for i in idps],
                "scopes_supported": ["spiral:read", "spiral:write", "spiral:query",
                                     "spiral:admin"],
                "bearer_methods_supported": ["header"], "resource_name": "spiral-mcp"}
    for path in ("/.well-known/oauth-protected-resource",
                 "/.well-known/oauth-protected-resource/mcp"):
        response = await client.get(path, headers={"Origin": "https://inspector.example"})
        assert response.status == 200, path
        assert await response.json() == expected
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    # A browser's preflight, from any origin, without a credential.
    preflight = await client.options("/.well-known/oauth-protected-resource/mcp", headers={
        "Origin": "https://inspector.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    # Another resource's metadata is not here; nor is an authorization server.
    other = await client.get("/.well-known/oauth-protected-resource/other")
    assert other.status == 404
    assert (await other.json())["error"]["message"] == (
        f"no metadata here; this server's is at {METADATA_URL}")
    for path, method in (("/.well-known/oauth-authorization-server", "GET"),
                         ("/.well-known/oauth-authorization-server/mcp", "GET"),
                         ("/.well-known/openid-configuration", "GET"), ("/register", "POST")):
        response = await client.request(method, path)
        assert response.status == 404, path
        assert (await response.json())["error"]["message"] == (
            "this server is an OAuth resource server, not an authorization server; its "
            f"authorization servers are listed at {METADATA_URL}")


async def test_without_oauth_every_discovery_path_says_to_send_an_api_key(
        serve: Serve, make_tenant: TenantFactory, idps: list[FakeIssuer]) -> None:
    client = await serve(oauth=False)
    for path, method in (("/.well-known/oauth-protected-resource", "GET"),
                         ("/.well-known/oauth-protected-resource/mcp", "GET"),
                         ("/.well-known/oauth-authorization-server", "GET"),
                         ("/.well-known/openid-configuration", "GET"), ("/register", "POST")):
        response = await client.request(method, path)
        assert response.status == 404 and response.content_type == "application/json", path
        assert (await response.json())["error"] == {
            "code": "OAUTH_NOT_CONFIGURED",
            "message": "this server takes API keys, not OAuth: send one as Authorization: "
                       "Bearer spk_... (an operator creates one with spiral-mcp apikey create)"}
    # No challenge toward metadata that does not exist.
    missing = await client.post("/execute", json=rpc_body("ping"))
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="spiral-mcp"'
    # A token is no key: 403 saying what this server takes, and no challenge.
    refused = await client.post("/execute", json=rpc_body("ping"),
                                headers=bearer(idps[0].token()))
    assert refused.status == 403 and "WWW-Authenticate" not in refused.headers
    assert (await refused.json())["error"]["message"].startswith(
        "this server takes API keys (spk_...) and OAuth is not configured")
    tenant = await make_tenant()
    assert (await client.post("/execute", json=rpc_body("ping"), headers=tenant.headers)
            ).status == 200


# -- authentication ----------------------------------------------------------------------------

async def test_a_request_without_a_credential_is_challenged_toward_the_metadata(
        serve: Serve) -> None:
    client = await serve()
    for headers, says in (({}, "an API key or an OAuth access token is required: "
                               "Authorization: Bearer <key or token>"),
                          ({"Authorization": "Bearer "},
                           "the API key or access token is missing after Bearer: "
                           "Authorization: Bearer <key or token>"),
                          ({"Authorization": "Basic dTpw"},
                           "the Authorization scheme must be Bearer: Authorization: Bearer "
                           "<key or token>")):
        response = await client.post("/mcp", json=rpc_body("ping"), headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer resource_metadata="{METADATA_URL}", scope="{STARTING_SCOPES}"')
        assert (await response.json())["error"] == {"code": "UNAUTHENTICATED", "message": says}


async def test_a_token_that_fails_verification_is_401_invalid_token_with_the_reason(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:
    client = await serve()
    issuer = idps[0]
    stranger = FakeIssuer()
    stranger.url = "https://stranger.example.com"
    cases = {
        "the token has expired": issuer.token(org="acme", exp=int(time.time()) - 5),
        "the token was issued for another resource": issuer.token(
            org="acme", aud="https://other.example.com/mcp"),
        "the token's issuer is not trusted by this server": stranger.token(org="acme"),
    }
    for reason, token in cases.items():
        response = await client.post("/execute", json=rpc_body("ping"), headers=bearer(token))
        assert response.status == 401, reason
        params = challenge(response.headers["WWW-Authenticate"])
        assert params.pop("error_description").startswith(reason)
        assert params == {"error": "invalid_token", "resource_metadata": METADATA_URL,
                          "scope": STARTING_SCOPES}
        error = (await response.json())["error"]
        assert error["code"] == "INVALID_TOKEN" and error["message"].startswith(reason)
        assert token not in await response.text()


async def test_a_token_maps_to_one_bound_tenant_or_is_refused_saying_why(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:
    client = await serve()
    bound, unbound = idps

    async def refusal(token: str) -> str:
        response = await client.post("/execute", json=rpc_body("ping"), headers=bearer(token))
        assert response.status == 401
        description = challenge(response.headers["WWW-Authenticate"])["error_description"]
        assert (await response.json())["error"]["message"] == description
        return description

    assert await refusal(unbound.token(org="acme")) == (
        f"no tenant is bound to this token's issuer ({unbound.url}); the server's operator "
        "binds one with spiral-mcp oauth bind")
    for org in ("initech", None):
        assert await refusal(bound.token(org=org)) == (
            f"no tenant is bound to this token's org claim at its issuer ({bound.url}); the "
            "server's operator binds one with spiral-mcp oauth bind")
    assert await refusal(bound.token(org=["acme", "globex"])) == (
        f"this token's org claim names more than one tenant bound at its issuer ({bound.url}); "
        "a token must name one")


async def test_an_unbinding_takes_effect_within_the_cache_ttl(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant],
        admin_conn: asyncpg.Connection, queries: Queries) -> None:
    ttl = 1.0
    client = await serve(AUTH_CACHE_TTL=str(ttl))
    ada = user(idps[0], orgs["globex"], org="globex")
    assert (await execute(client, ada, "ping")).status == 200  # resolved, now cached
    started = time.monotonic()
    await bindings.unbind(admin_conn, queries, tenant_id=orgs["globex"].id, issuer=idps[0].url,
                          claim="org", value="globex")
    while (response := await execute(client, ada, "ping")).status == 200:
        assert time.monotonic() - started < ttl + 2.0, "an unbound token still accepted"
        await asyncio.sleep(0.05)
    assert response.status == 401 and time.monotonic() - started >= ttl * 0.9


async def test_an_issuer_out_of_reach_is_503_not_a_refusal(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:
    client = await serve()
    idps[0].status = 500  # its metadata and keys cannot be fetched
    response = await execute(client, user(idps[0], orgs["acme"], org="acme"), "ping")
    assert response.status == 503 and "WWW-Authenticate" not in response.headers
    assert int(response.headers["Retry-After"]) >= 1
    error = (await response.json())["error"]
    assert error["code"] == "CONNECTION_ERROR"
    # Where the server looked is for the log, not the client (a token must not be a way to
    # probe the hosts this server reaches).
    assert "cannot be reached" in error["message"] and "http" not in error["message"]
    # API keys do not depend on it.
    assert (await execute(client, orgs["acme"], "ping")).status == 200


async def authors(client: TestClient, who: Tenant) -> dict[str, str]:
    """The authors of WEB-1's comments, by body."""
    read = await result_of(await execute(client, who, "tools/call", name="jira_get_issue",
                                         arguments={"issue_key": "WEB-1",
                                                    "include_comments": True}))
    return {c["body"]: c["author"] for c in read["structuredContent"]["data"]["comments"]}


async def test_a_token_acts_in_its_tenant_as_its_user(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant],
        admin_conn: asyncpg.Connection) -> None:
    client = await serve()
    acme, globex = orgs["acme"], orgs["globex"]
    ada = user(idps[0], acme, org="acme", email="ada@acme.example")
    written = await result_of(await execute(client, ada, "tools/call", name="jira_add_comment",
                                            arguments={"issue_key": "WEB-1", "body": "by token"}))
    assert written["structuredContent"]["success"] is True, written
    assert written["structuredContent"]["tenant_id"] == str(acme.id)

    async def audited() -> list[tuple]:
        async with admin_conn.transaction():
            await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                     str(acme.id))
            return [tuple(r) for r in await admin_conn.fetch(
                "SELECT actor, key_id FROM audit_log WHERE tool = 'jira_add_comment'")]

    deadline = time.monotonic() + 5
    while not (rows := await audited()):
        assert time.monotonic() < deadline, "no audit row"
        await asyncio.sleep(0.05)
    # The user claim (email, the first of OAUTH_USER_CLAIMS present) is the actor; the key id
    # is the user's principal id.
    assert rows == [("ada@acme.example", principal_id(idps[0].url, "ada", acme.id))]
    assert (await authors(client, ada))["by token"] == "ada@acme.example"

    # The same user under the other tenant's org value sees that tenant, which has no WEB-1.
    elsewhere = user(idps[0], globex, org="globex", email="ada@acme.example")
    missing = await result_of(await execute(client, elsewhere, "tools/call",
                                            name="jira_get_issue",
                                            arguments={"issue_key": "WEB-1"}))
    assert missing["structuredContent"]["error"]["code"] == "NOT_FOUND"
    # Without an email, the next user claim names the user (sub).
    anonymous = user(idps[0], acme, org="acme", sub="svc-7", email=None)
    await result_of(await execute(client, anonymous, "tools/call", name="jira_add_comment",
                                  arguments={"issue_key": "WEB-1", "body": "by service"}))
    assert (await authors(client, ada))["by service"] == "svc-7"


async def test_api_keys_keep_working_beside_tokens_and_a_bad_one_is_403(
        serve: Serve, orgs: dict[str, Tenant]) -> None:
    client = await serve()
    acme = orgs["acme"]
    listed = await result_of(await execute(client, acme, "tools/list"))
    assert "jira_add_comment" in {t["name"] for t in listed["tools"]}
    for key, says in ((acme.key[:-1] + ("A" if acme.key[-1] != "A" else "B"),
                       "the API key is not valid: it is unknown, revoked or expired"),
                      (acme.key[:-2], "the API key is malformed: it has 109 characters")):
        # Checked as an API key, OAuth or not: no challenge that would start an OAuth flow.
        response = await client.post("/mcp", json=rpc_body("ping"), headers=bearer(key))
        assert response.status == 403 and "WWW-Authenticate" not in response.headers
        error = (await response.json())["error"]
        assert error["code"] == "INVALID_API_KEY" and error["message"].startswith(says)


# -- step-up -----------------------------------------------------------------------------------

async def test_a_call_needing_a_scope_the_token_lacks_is_a_step_up_on_every_transport(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant],
        make_tenant: TenantFactory, admin_conn: asyncpg.Connection) -> None:
    client = await serve()
    acme = orgs["acme"]
    reader = user(idps[0], acme, org="acme", scope="spiral:read")
    comment = {"name": "jira_add_comment",
               "arguments": {"issue_key": "WEB-2", "body": "should not land"}}
    expected = {"error": "insufficient_scope",
                "error_description": "tools/call jira_add_comment: this token lacks the scope "
                                     "spiral:write; authorize it and retry with the new token",
                "resource_metadata": METADATA_URL, "scope": "spiral:write"}

    async def stepped_up(response: ClientResponse) -> None:
        assert response.status == 403, await response.text()
        assert challenge(response.headers["WWW-Authenticate"]) == expected
        assert (await response.json())["error"]["code"] == "INSUFFICIENT_SCOPE"

    await stepped_up(await execute(client, reader, "tools/call", **comment))
    await stepped_up(await stateless(client, reader, "tools/call", **comment))
    # A session of the handshake eras.
    mcp = {**reader.headers, "Accept": "application/json, text/event-stream",
           "Content-Type": "application/json"}
    init = await client.post("/mcp", headers=mcp, json=rpc_body(
        "initialize", 0, protocolVersion="2025-11-25", capabilities={},
        clientInfo={"name": "t", "version": "1"}))
    mcp |= {"Mcp-Session-Id": init.headers["Mcp-Session-Id"],
            "MCP-Protocol-Version": "2025-11-25"}
    await client.post("/mcp", headers=mcp, json={"jsonrpc": "2.0",
                                                 "method": "notifications/initialized"})
    await stepped_up(await client.post("/mcp", headers=mcp, json=rpc_body("tools/call",
                                                                          **comment)))
    # Legacy HTTP+SSE: refused at the POST, before the 202.
    sse = await client.get("/sse", headers={**reader.headers, "Accept": "text/event-stream"})
    endpoint = (await sse.content.readline(), await sse.content.readline())[1]
    path = endpoint.decode().removeprefix("data: ").strip()
    await stepped_up(await client.post(path, headers=reader.headers,
                                       json=rpc_body("tools/call", **comment)))
    sse.close()
    # Nothing ran: no comment was written.
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(acme.id))
        assert await admin_conn.fetchval(
            "SELECT count(*) FROM comments WHERE body = 'should not land'") == 0

    # Reading needs only read: it runs.
    read = await result_of(await stateless(client, reader, "tools/call", name="jira_get_issue",
                                           arguments={"issue_key": "WEB-2"}))
    assert read["structuredContent"]["success"] is True
    # An API key lacking the scope keeps its in-band answer (it cannot step up).
    keyed = await make_tenant(scopes=("read",))
    denied = await result_of(await execute(client, keyed, "tools/call", **comment))
    assert denied["isError"] is True
    assert denied["structuredContent"]["error"]["code"] == "PERMISSION_DENIED"


async def test_a_token_with_none_of_the_mapped_scopes_lists_nothing_and_is_told_what_to_ask(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:
    client = await serve()
    bare = user(idps[0], orgs["acme"], org="acme", scope="openid profile")
    assert (await result_of(await stateless(client, bare, "tools/list")))["tools"] == []
    response = await stateless(client, bare, "resources/read", uri="spiral://reference/jql")
    assert response.status == 403
    assert challenge(response.headers["WWW-Authenticate"])["scope"] == "spiral:read"
    # Every scope a batch needs, in one challenge.
    batch = [rpc_body("tools/call", 1, name="jira_get_issue", arguments={"issue_key": "WEB-1"}),
             rpc_body("tools/call", 2, name="explorer_query", arguments={"sql": "SELECT 1"})]
    mcp = {**bare.headers, "Accept": "application/json, text/event-stream",
           "Content-Type": "application/json"}
    init = await client.post("/mcp", headers=mcp, json=rpc_body(
        "initialize", 0, protocolVersion="2025-03-26", capabilities={},
        clientInfo={"name": "t", "version": "1"}))
    mcp |= {"Mcp-Session-Id": init.headers["Mcp-Session-Id"],
            "MCP-Protocol-Version": "2025-03-26"}
    await client.post("/mcp", headers=mcp, json={"jsonrpc": "2.0",
                                                 "method": "notifications/initialized"})
    response = await client.post("/mcp", headers=mcp, json=batch)
    assert response.status == 403
    params = challenge(response.headers["WWW-Authenticate"])
    assert params["scope"] == "spiral:read spiral:query"
    assert params["error_description"].startswith(
        "tools/call jira_get_issue; tools/call explorer_query: this token lacks the scope "
        "spiral:read spiral:query")


# -- streams, sessions, tasks and request states -----------------------------------------------

async def test_the_streams_of_a_token_end_at_its_exp(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:
    client = await serve()
    ada = user(idps[0], orgs["acme"], org="acme", exp=int(time.time()) + 3)
    streams = await _open_streams(client, ada.key)
    for name in ("sse", "mcp"):
        assert await _ended(streams[name], within=3 + 3) <= 6
    refused = await client.post("/mcp", headers=streams["headers"], json=rpc_body("ping"))
    assert refused.status == 401
    assert challenge(refused.headers["WWW-Authenticate"])["error_description"] == \
        "the token has expired"
    # An expiring token is not a revoked key: the session is the user's, and the user's
    # refreshed token carries on with it (the official client refreshes and keeps its session
    # id; a session ended here would fail its next call).
    assert await client.app[SESSIONS].get(streams["sid"], ada.key_id, tenant_id=orgs["acme"].id,
                                          transport="streamable")
    refreshed = user(idps[0], orgs["acme"], org="acme", jti="refreshed")
    again = await client.post("/mcp", json=rpc_body("ping"),
                              headers={**streams["headers"], **refreshed.headers})
    assert again.status == 200, await again.text()


async def test_a_task_of_a_user_outlives_the_token_it_was_started_with(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:
    client = await serve()  # TASK_LEASE=1: the task's lease is renewed three times a second
    # A whole second at least before exp for the first call, which also fetches the issuer's
    # metadata and keys (slow on a loaded machine).
    expiry = int(time.time()) + 3
    short = user(idps[0], orgs["acme"], org="acme", exp=expiry)
    created = await result_of(await stateless(client, short, "tools/call", capabilities=TASKS,
                                              name="slow_compute", arguments={"seconds": 60}))
    assert created["resultType"] == "task"
    # Past the token's exp, and many renewals later.
    await asyncio.sleep(max(0.0, expiry - time.time()) + 0.5)
    # A fresh token of the same user reads the task, still running: it is the user's, as the
    # session is, not the token's.
    fresh = user(idps[0], orgs["acme"], org="acme")
    task = await result_of(await stateless(client, fresh, "tasks/get", capabilities=TASKS,
                                           taskId=created["taskId"]))
    assert task["status"] == "working", task
    await result_of(await stateless(client, fresh, "tasks/cancel", capabilities=TASKS,
                                    taskId=created["taskId"]))
    deadline = time.monotonic() + 10
    while (task := await result_of(await stateless(
            client, fresh, "tasks/get", capabilities=TASKS, taskId=created["taskId"])
    ))["status"] == "working":
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.2)
    assert task["status"] == "cancelled", task
    # The expired token itself reads nothing.
    refused = await stateless(client, short, "tasks/get", capabilities=TASKS,
                              taskId=created["taskId"])
    assert refused.status == 401


async def test_sessions_tasks_and_request_states_belong_to_the_user(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:
    client = await serve()
    acme = orgs["acme"]
    ada = user(idps[0], acme, org="acme")
    bob = user(idps[0], acme, org="acme", sub="bob", email="bob@example.com")
    ada_at_globex = user(idps[0], orgs["globex"], org="globex")
    ada_again = user(idps[0], acme, org="acme", jti="another token")
    assert ada_again.key != ada.key and ada_again.key_id == ada.key_id
    assert len({ada.key_id, bob.key_id, ada_at_globex.key_id}) == 3

    # A session: another user's token, of this tenant or of another, does not find it.
    mcp = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = await client.post("/mcp", headers={**mcp, **ada.headers}, json=rpc_body(
        "initialize", 0, protocolVersion="2025-11-25", capabilities={},
        clientInfo={"name": "t", "version": "1"}))
    session = {**mcp, "Mcp-Session-Id": init.headers["Mcp-Session-Id"],
               "MCP-Protocol-Version": "2025-11-25"}
    for stranger in (bob, ada_at_globex):
        response = await client.post("/mcp", headers={**session, **stranger.headers},
                                     json=rpc_body("ping"))
        assert response.status == 404
    assert (await client.post("/mcp", headers={**session, **ada_again.headers},
                              json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            ).status == 202
    assert (await client.post("/mcp", headers={**session, **ada_again.headers},
                              json=rpc_body("ping"))).status == 200

    # A task.
    created = await result_of(await stateless(client, ada, "tools/call", capabilities=TASKS,
                                              name="slow_compute", arguments={"seconds": 1}))
    for stranger in (bob, ada_at_globex):
        for method in ("tasks/get", "tasks/cancel"):
            response = await stateless(client, stranger, method, capabilities=TASKS,
                                       taskId=created["taskId"])
            assert (await response.json())["error"]["code"] == -32602, method
    found = await result_of(await stateless(client, ada_again, "tasks/get", capabilities=TASKS,
                                            taskId=created["taskId"]))
    assert found["taskId"] == created["taskId"]

    # A request state.
    name = "test_input_required_result_tampered_state"
    asked = await result_of(await stateless(client, ada, "tools/call", capabilities=TASKS,
                                            name=name, arguments={}))
    retry = {"name": name, "arguments": {}, "requestState": asked["requestState"],
             "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}}}
    for stranger in (bob, ada_at_globex):
        refused = await (await stateless(client, stranger, "tools/call", capabilities=TASKS,
                                         **retry)).json()
        assert refused["error"]["data"] == {"reason": "other_key"}
    done = await result_of(await stateless(client, ada_again, "tools/call", capabilities=TASKS,
                                           **retry))
    assert done.get("resultType", "complete") == "complete" and not done.get("isError"), done
