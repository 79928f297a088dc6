"""The 2026-07-28 era's own rules, through real HTTP, beside what the handshake eras keep: removed
methods, caching hints, serverInfo in _meta, resource-not-found codes, per-request log levels,
JSON Schema 2020-12 schemas kept whole, Mcp-Param-* headers, and subscriptions/listen (ack, tags,
filter, real list changes, tenant isolation of resource updates, caps)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory, make_settings
from serving import app_clients

from spiral_mcp import admin
from spiral_mcp.handlers import Tool, builtin_tools
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.handlers.prompts import Prompt
from spiral_mcp.handlers.resources import Resource
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.schema_types import header_params
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import DISPATCHER
from tests.conformance_harness import fixture_tools
from tests.conformance_modern import CUSTOM_HEADER_SCHEMA, ModernFixtures
from tests.test_transports import (
    MODERN,
    error_of,
    headers,
    modern_request,
    open_session,
    post,
    post_modern,
    read_event,
    request,
)

SERVER_INFO = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"
LOG_LEVEL = "io.modelcontextprotocol/logLevel"
_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

Serve = Callable[..., Awaitable[TestClient]]


# -- what the app is served with ---------------------------------------------------------------

async def _read_note(ctx: ToolContext, values: dict[str, str]) -> list[dict[str, Any]]:
    uri = f"spiral://notes/{values['name']}" if values else "spiral://readme"
    return [{"uri": uri, "mimeType": "text/plain", "text": "n"}]


async def _greeting(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": {"type": "text", "text": "hello"}}]


RESOURCES = [Resource(uri="spiral://notes/{name}", name="note", description="A note",
                      read=_read_note, ttl_ms=5_000),
             Resource(uri="spiral://readme", name="readme", description="A text",
                      read=_read_note)]
PROMPTS = [Prompt(name="greet", description="Greets", render=_greeting)]


async def _touch(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    # What a writing tool does once its change is committed: the caller's tenant's resource
    # changed, and whoever of that tenant subscribed to it hears so.
    ctx.resource_updated(args["uri"])
    return {}


async def _chatty(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    for level in ("debug", "info", "error"):
        await ctx.log(level, f"a {level} message")
    return {}


async def _ok(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {}


def _tool(name: str, handler: Any, schema: dict[str, Any] | None = None) -> Tool:
    return Tool(name=name, title=name, description=f"{name} (test only)", handler=handler,
                scope="read", call_class="read", input_schema=schema or _OBJECT,
                output_schema={"type": "object"})


TOOLS = [
    _tool("test_touch", _touch, {"type": "object", "properties": {"uri": {"type": "string"}},
                                 "required": ["uri"]}),
    _tool("test_chatty", _chatty),
    _tool("test_headers", _ok, CUSTOM_HEADER_SCHEMA),
]


@pytest.fixture
async def serve(database_urls: DatabaseUrls) -> AsyncIterator[Serve]:
    async with app_clients() as start_client:
        async def start(**env: str) -> TestClient:
            fixtures = ModernFixtures()
            app = create_app(
                make_settings(database_urls, **env), database_url=database_urls.runtime,
                tools=[*builtin_tools(), *TOOLS, *fixture_tools(), *fixtures.tools()],
                resources=RESOURCES, prompts=PROMPTS)
            fixtures.attach(app)
            return await start_client(app)

        yield start


@pytest.fixture
async def client(serve: Serve) -> TestClient:
    return await serve()


async def modern(client: TestClient, tenant: Tenant, method: str, rid: Any = 1,
                 **params: Any) -> dict[str, Any]:
    extra = {}
    if method in ("resources/read",):
        extra["Mcp-Name"] = params["uri"]
    response = await post_modern(client, tenant, modern_request(method, rid, **params), **extra)
    return await response.json()


def _sse_messages(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[len("data:"):]) for line in text.splitlines()
            if line.startswith("data:")]


# -- removed methods ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["ping", "logging/setLevel", "resources/subscribe",
                                    "resources/unsubscribe", "initialize"])
async def test_removed_methods_are_404_in_the_new_era(client: TestClient, tenant: Tenant,
                                                      method: str) -> None:
    params = {"level": "info"} if method == "logging/setLevel" else \
        {"uri": "spiral://readme"} if method.startswith("resources/") else {}
    response = await post_modern(client, tenant, modern_request(method, 7, **params))
    assert (await error_of(response, 404))["code"] == -32601
    assert (await response.json())["id"] == 7


async def test_removed_methods_still_work_on_a_session(client: TestClient,
                                                       tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    for method, params in (("ping", {}), ("logging/setLevel", {"level": "info"}),
                           ("resources/subscribe", {"uri": "spiral://readme"}),
                           ("resources/unsubscribe", {"uri": "spiral://readme"})):
        response = await post(client, tenant, request(method, 1, **params), sid=sid)
        assert (await response.json())["result"] == {}, method
    note = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    assert (await post(client, tenant, note, sid=sid)).status == 202


async def test_removed_notification_is_404_in_the_new_era(client: TestClient,
                                                          tenant: Tenant) -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    response = await post(client, tenant, note, version=MODERN,
                          **{"Mcp-Method": "notifications/roots/list_changed"})
    assert (await error_of(response, 404))["code"] == -32601


# -- caching hints and serverInfo --------------------------------------------------------------

async def test_cacheable_results_carry_private_hints(client: TestClient, tenant: Tenant) -> None:
    for method, params in (("tools/list", {}), ("prompts/list", {}), ("resources/list", {}),
                           ("resources/templates/list", {}),
                           ("resources/read", {"uri": "spiral://readme"})):
        result = (await modern(client, tenant, method, **params))["result"]
        assert isinstance(result["ttlMs"], int) and result["ttlMs"] > 0, method
        # Each depends on the key (its scopes) or reads tenant data: no shared cache.
        assert result["cacheScope"] == "private", method
        assert result["_meta"][SERVER_INFO]["name"] == "spiral-mcp", method
        assert result["resultType"] == "complete"
    # A resource may know how long its reads stay fresh.
    note = (await modern(client, tenant, "resources/read", uri="spiral://notes/a"))["result"]
    assert note["ttlMs"] == 5_000
    discover = (await modern(client, tenant, "server/discover"))["result"]
    assert discover["cacheScope"] == "public" and "serverInfo" not in discover
    assert discover["_meta"][SERVER_INFO]["version"]


async def test_handshake_eras_get_no_new_fields(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    for method in ("tools/list", "resources/list"):
        result = (await (await post(client, tenant, request(method), sid=sid)).json())["result"]
        assert not {"ttlMs", "cacheScope", "_meta", "resultType"} & set(result), method
    init = await post(client, tenant, request("initialize", 0, protocolVersion="2025-11-25"))
    assert (await init.json())["result"]["serverInfo"]["name"] == "spiral-mcp"


async def test_tool_order_is_sorted_and_stable(client: TestClient, tenant: Tenant) -> None:
    names = [[t["name"] for t in (await modern(client, tenant, "tools/list"))["result"]["tools"]]
             for _ in range(2)]
    assert names[0] == sorted(names[0]) == names[1]


# -- resource not found ------------------------------------------------------------------------

async def test_resource_not_found_code_per_era(client: TestClient, tenant: Tenant) -> None:
    body = modern_request("resources/read", 1, uri="spiral://nothing")
    response = await post_modern(client, tenant, body, **{"Mcp-Name": "spiral://nothing"})
    assert (await error_of(response, 400))["code"] == -32602
    sid = await open_session(client, tenant)
    old = await post(client, tenant, request("resources/read", 1, uri="spiral://nothing"), sid=sid)
    assert (await old.json())["error"]["code"] == -32002


# -- per-request log level ---------------------------------------------------------------------

async def test_log_messages_only_for_a_request_naming_its_level(client: TestClient,
                                                                tenant: Tenant) -> None:
    silent = await post_modern(client, tenant, modern_request("tools/call", 1, name="test_chatty",
                                                              arguments={}))
    assert silent.content_type == "application/json"
    assert "result" in await silent.json()

    body = modern_request("tools/call", 2, name="test_chatty", arguments={})
    body["params"]["_meta"][LOG_LEVEL] = "info"
    loud = await post_modern(client, tenant, body)
    assert loud.content_type == "text/event-stream"
    messages = _sse_messages(await loud.text())
    logged = [m["params"]["level"] for m in messages if m.get("method") == "notifications/message"]
    assert logged == ["info", "error"]  # at or above the level asked
    assert messages[-1]["id"] == 2 and "result" in messages[-1]

    body["params"]["_meta"][LOG_LEVEL] = "loud"
    response = await post_modern(client, tenant, body)
    assert (await error_of(response, 400))["code"] == -32602


# -- JSON Schema 2020-12 kept whole ------------------------------------------------------------

async def test_2020_12_schemas_are_listed_whole_and_validated(client: TestClient,
                                                              tenant: Tenant) -> None:
    given = next(t.input_schema for t in fixture_tools() if t.name == "json_schema_2020_12_tool")
    listed = next(t for t in (await modern(client, tenant, "tools/list"))["result"]["tools"]
                  if t["name"] == "json_schema_2020_12_tool")
    assert listed["inputSchema"] == given
    assert {"allOf", "if", "then", "else"} <= set(listed["inputSchema"])
    assert listed["inputSchema"]["$defs"]["address"]["$anchor"] == "addressDef"

    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        body = modern_request("tools/call", 1, name="json_schema_2020_12_tool",
                              arguments=arguments)
        return (await (await post_modern(client, tenant, body)).json())["result"]

    assert not (await call({"contactMethod": "email", "email": "a@b.c"})).get("isError")
    # if/then: asking to be phoned needs a phone; the 2020-12 validator knows.
    refused = await call({"contactMethod": "phone", "email": "a@b.c"})
    assert refused["isError"] and \
        refused["structuredContent"]["error"]["code"] == "VALIDATION_ERROR"


# -- Mcp-Param-* headers -----------------------------------------------------------------------

def _b64(text: str) -> str:
    return f"=?base64?{base64.b64encode(text.encode()).decode()}?="


async def _call_with(client: TestClient, tenant: Tenant, arguments: dict[str, Any],
                     **param_headers: str) -> ClientResponse:
    body = modern_request("tools/call", 1, name="test_headers", arguments=arguments)
    return await post_modern(client, tenant, body,
                             **{f"Mcp-Param-{k}": v for k, v in param_headers.items()})


@pytest.mark.parametrize(("arguments", "sent"), [
    ({"region": "us-west1"}, {"Region": "us-west1"}),
    ({"region": "Hello, 世界"}, {"Region": _b64("Hello, 世界")}),
    ({"region": " padded "}, {"Region": _b64(" padded ")}),
    ({"region": "SGVsbG8="}, {"Region": "SGVsbG8="}),  # no markers: literal
    ({"region": "eu", "priority": 42}, {"Region": "eu", "Priority": "42"}),
    ({"region": "eu", "priority": 42}, {"Region": "eu", "Priority": "42.0"}),  # numerically
], ids=["plain", "base64", "spaces", "literal", "integer", "integer-float"])
async def test_matching_param_headers_pass(client: TestClient, tenant: Tenant,
                                           arguments: dict[str, Any],
                                           sent: dict[str, str]) -> None:
    response = await _call_with(client, tenant, arguments, **sent)
    assert response.status == 200, await response.text()
    assert not (await response.json())["result"].get("isError")


@pytest.mark.parametrize(("arguments", "sent"), [
    ({"region": "us-west1"}, {}),                                    # missing
    ({"region": "us-west1"}, {"Region": "eu-central1"}),             # different
    ({"region": "Hello"}, {"Region": "=?base64?SGVsbG8?="}),         # bad padding
    ({"region": "Hello"}, {"Region": "=?base64?SGVs!!!bG8=?="}),     # not the alphabet
    ({"region": "eu", "priority": 42}, {"Region": "eu", "Priority": "41"}),
    ({"region": "eu", "priority": 42}, {"Region": "eu"}),
    ({"region": "eu", "priority": 2**53}, {"Region": "eu", "Priority": str(2**53 + 1)}),
    ({"region": "eu", "priority": 42}, {"Region": "eu", "Priority": "NaN"}),
    ({"region": "eu"}, {"Region": "eu", "Priority": "=?base64?!!?="}),  # sent though not needed
], ids=["missing", "mismatch", "padding", "alphabet", "integer", "integer-missing",
        "integer-exactly", "not-a-number", "malformed-extra"])
async def test_param_header_mismatch_is_refused(client: TestClient, tenant: Tenant,
                                                arguments: dict[str, Any],
                                                sent: dict[str, str]) -> None:
    response = await _call_with(client, tenant, arguments, **sent)
    error = await error_of(response, 400)
    assert error["code"] == -32020
    assert (await response.json())["id"] == 1


@pytest.mark.parametrize(("schema", "reason"), [
    ({"type": "object", "properties": {"a": {"type": "number", "x-mcp-header": "A"}}},
     "not a string, integer or boolean"),
    ({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "A b"}}},
     "field-name token"),
    ({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "A"},
                                       "b": {"type": "string", "x-mcp-header": "a"}}},
     "same header"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": {
        "type": "string", "x-mcp-header": "A"}}}}, "properties alone"),
], ids=["number", "token", "repeated", "under-items"])
def test_invalid_header_annotations_are_refused(schema: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        header_params(schema)


def test_nested_header_annotations_are_found() -> None:
    schema = {"type": "object", "properties": {"target": {"type": "object", "properties": {
        "project": {"type": "string", "x-mcp-header": "Project"}}}}}
    (param,) = header_params(schema)
    assert param.path == ("target", "project") and param.header == "Project"


# -- subscriptions/listen ----------------------------------------------------------------------

async def listen(client: TestClient, tenant: Tenant, notifications: dict[str, Any],
                 rid: Any = "sub-1") -> ClientResponse:
    body = modern_request("subscriptions/listen", rid, notifications=notifications)
    return await post_modern(client, tenant, body)


async def next_message(stream: ClientResponse, timeout: float = 5.0) -> dict[str, Any]:
    return orjson.loads((await read_event(stream, timeout))["data"])


async def nothing_arrives(stream: ClientResponse, seconds: float = 0.6) -> None:
    with pytest.raises(TimeoutError):
        await read_event(stream, seconds)


async def test_listen_acknowledges_first_and_tags_everything(client: TestClient,
                                                             tenant: Tenant) -> None:
    stream = await listen(client, tenant, {"toolsListChanged": True, "resourcesListChanged": True,
                                           "resourceSubscriptions": ["spiral://readme",
                                                                     "spiral://nothing"]})
    assert stream.status == 200 and stream.content_type == "text/event-stream"
    ack = await next_message(stream)
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"][SUBSCRIPTION] == "sub-1"
    # What the server agreed to: no resource list changes (it has none to send), and only the
    # URIs there are.
    assert ack["params"]["notifications"] == {"toolsListChanged": True,
                                              "resourceSubscriptions": ["spiral://readme"]}

    registry = client.server.app[DISPATCHER].registry
    registry.add(_tool("test_new", _ok))
    change = await next_message(stream)
    assert change["method"] == "notifications/tools/list_changed"
    assert change["params"]["_meta"][SUBSCRIPTION] == "sub-1"
    listed = (await modern(client, tenant, "tools/list"))["result"]["tools"]
    assert "test_new" in [t["name"] for t in listed]
    registry.remove("test_new")
    assert (await next_message(stream))["method"] == "notifications/tools/list_changed"
    stream.close()


async def test_listen_sends_only_what_was_asked(client: TestClient, tenant: Tenant) -> None:
    prompts_only = await listen(client, tenant, {"promptsListChanged": True})
    await next_message(prompts_only)  # the acknowledgment
    dispatcher = client.server.app[DISPATCHER]
    dispatcher.registry.add(_tool("test_new", _ok))
    await nothing_arrives(prompts_only)
    dispatcher.prompts.add(Prompt(name="new", description="New", render=_greeting))
    assert (await next_message(prompts_only))["method"] == "notifications/prompts/list_changed"
    prompts_only.close()


async def test_a_list_change_through_the_fixture_reaches_the_stream(client: TestClient,
                                                                    tenant: Tenant) -> None:
    # As the conformance suite triggers it: a tool call on another connection.
    stream = await listen(client, tenant, {"toolsListChanged": True})
    await next_message(stream)
    call = modern_request("tools/call", 2, name="test_trigger_tool_change", arguments={})
    assert (await post_modern(client, tenant, call)).status == 200
    assert (await next_message(stream))["method"] == "notifications/tools/list_changed"
    stream.close()


async def test_a_tenants_resource_updates_never_reach_another_tenant(
        client: TestClient, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Queries) -> None:
    other = await make_tenant(name="other")
    uri = "spiral://notes/plan"
    mine = await listen(client, tenant, {"resourceSubscriptions": [uri]})
    theirs = await listen(client, other, {"resourceSubscriptions": [uri]})
    await next_message(mine)
    await next_message(theirs)

    touch = modern_request("tools/call", 3, name="test_touch", arguments={"uri": uri})
    assert (await post_modern(client, other, touch)).status == 200
    update = await next_message(theirs)
    assert update["method"] == "notifications/resources/updated"
    assert update["params"]["uri"] == uri and update["params"]["_meta"][SUBSCRIPTION] == "sub-1"
    await nothing_arrives(mine)  # the same URI in another tenant is another resource

    # Another key of the same tenant shares its data, so it hears of its changes.
    async with admin_conn.transaction():
        key_id, secret = await admin.create_api_key(admin_conn, queries, tenant_id=tenant.id,
                                                    name="second", scopes=["read"])
    second = Tenant(tenant.id, secret, key_id)
    assert (await post_modern(client, second, touch)).status == 200
    assert (await next_message(mine))["params"]["uri"] == uri
    await nothing_arrives(theirs)
    mine.close()
    theirs.close()


async def test_sessions_hear_changes_on_their_get_stream(client: TestClient,
                                                         tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    subscribe = request("resources/subscribe", 1, uri="spiral://readme")
    assert (await (await post(client, tenant, subscribe, sid=sid)).json())["result"] == {}
    stream = await client.get("/mcp", headers=headers(tenant, sid=sid, accept="text/event-stream",
                                                      **{"MCP-Protocol-Version": "2025-11-25"}))
    assert stream.status == 200
    await asyncio.sleep(0.1)  # the stream is open once its handler runs
    client.server.app[DISPATCHER].registry.add(_tool("test_new", _ok))
    assert (await next_message(stream))["method"] == "notifications/tools/list_changed"
    call = request("tools/call", 2, name="test_touch", arguments={"uri": "spiral://readme"})
    await post(client, tenant, call, sid=sid)
    update = await next_message(stream)
    assert update == {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                      "params": {"uri": "spiral://readme"}}
    stream.close()


async def test_listen_streams_are_capped_per_key(serve: Serve, tenant: Tenant,
                                                 make_tenant: TenantFactory) -> None:
    client = await serve(SESSION_MAX_PER_KEY="2")
    open_streams = [await listen(client, tenant, {"toolsListChanged": True}, rid=i)
                    for i in range(2)]
    for stream in open_streams:
        await next_message(stream)
    refused = await listen(client, tenant, {"toolsListChanged": True}, rid=3)
    assert refused.status == 429
    other = await listen(client, await make_tenant(name="other"), {"toolsListChanged": True})
    assert other.status == 200
    other.close()
    open_streams[0].close()
    for _ in range(50):  # the server notices the departure within a poll
        again = await listen(client, tenant, {"toolsListChanged": True}, rid=4)
        if again.status == 200:
            break
        await asyncio.sleep(0.1)
    assert again.status == 200
    again.close()
    open_streams[1].close()


@pytest.mark.parametrize("notifications", [None, {"toolsListChanged": "yes"},
                                           {"resourceSubscriptions": "spiral://readme"}],
                         ids=["none", "not-boolean", "not-array"])
async def test_a_malformed_filter_is_invalid_params(client: TestClient, tenant: Tenant,
                                                    notifications: Any) -> None:
    body = modern_request("subscriptions/listen", 1)
    if notifications is not None:
        body["params"]["notifications"] = notifications
    response = await post_modern(client, tenant, body)
    assert (await error_of(response, 400))["code"] == -32602


async def test_discover_states_what_is_really_sent(client: TestClient, tenant: Tenant) -> None:
    capabilities = (await modern(client, tenant, "server/discover"))["result"]["capabilities"]
    assert capabilities["tools"] == {"listChanged": True}
    assert capabilities["prompts"] == {"listChanged": True}
    assert capabilities["resources"] == {"subscribe": True, "listChanged": False}


async def test_a_listen_stream_ends_with_its_key(client: TestClient, tenant: Tenant,
                                                 admin_conn: asyncpg.Connection,
                                                 queries: Queries) -> None:
    stream = await listen(client, tenant, {"toolsListChanged": True})
    await next_message(stream)
    hub = client.server.app[DISPATCHER].changes
    assert hub.count() == 1
    metrics = await (await client.get("/metrics")).text()
    assert "mcp_listen_streams_active 1.0" in metrics
    await admin.revoke_api_key(admin_conn, queries, tenant.key_id)
    with pytest.raises(EOFError):
        await read_event(stream, 5.0)
    assert hub.count() == 0


async def test_shutdown_answers_the_listen_request(client: TestClient, tenant: Tenant) -> None:
    stream = await listen(client, tenant, {"toolsListChanged": True}, rid=9)
    await next_message(stream)
    client.server.app[DISPATCHER].changes.close_all()  # what SIGTERM's first step does
    end = await next_message(stream)
    assert end == {"jsonrpc": "2.0", "id": 9, "result": {
        "resultType": "complete", "_meta": {SUBSCRIPTION: 9}}}
    with pytest.raises(EOFError):
        await read_event(stream, 5.0)
