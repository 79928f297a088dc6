"""MCP resources, prompts and completion, through real HTTP: served only when registered (here
the tests' own in place of the product's, which test_guides_recipes.py covers), scoped by the
key, tenant data read under the caller's tenant, and every bad request answered with the
specific JSON-RPC error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory, make_settings
from serving import app_clients

from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.handlers.prompts import Prompt, PromptArgument
from spiral_mcp.handlers.resources import Resource, ResourceRegistry
from spiral_mcp.protocol import dispatcher
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import SESSIONS

Serve = Callable[..., Awaitable[TestClient]]


async def _item_title(ctx: ToolContext, values: dict[str, str]) -> list[dict[str, Any]]:
    async with ctx.transaction(readonly=True) as conn:
        title = await conn.fetchval("SELECT title FROM work_items WHERE key = $1", values["key"])
    if title is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no work item {values['key']}")
    return [{"uri": f"spiral://items/{values['key']}", "mimeType": "text/plain", "text": title}]


async def _readme(ctx: ToolContext, values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"uri": "spiral://readme", "mimeType": "text/plain", "text": "hello"}]


async def _greeting(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": {"type": "text", "text": f"Hello {args['name']}"}}]


RESOURCES = [
    Resource(uri="spiral://readme", name="readme", description="A text", read=_readme,
             mime_type="text/plain"),
    Resource(uri="spiral://admin-notes", name="admin-notes", description="For admins",
             read=_readme, scope="admin"),
    Resource(uri="spiral://items/{key}", name="item", description="A work item's title",
             read=_item_title),
    Resource(uri="spiral://notes/{name}", name="note", description="A note", read=_readme),
    Resource(uri="spiral://notes/admin", name="admin-note", description="For admins",
             read=_readme, scope="admin"),
]


async def _missing(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    raise ServiceError(ErrorCode.NOT_FOUND, "nothing to say")

PROMPTS = [
    Prompt(name="greet", description="Greets someone", render=_greeting,
           arguments=(PromptArgument(name="name", description="Who",
                                     choices=("Ada", "Alan", "Grace")),)),
    Prompt(name="missing", description="Finds nothing", render=_missing),
]


@pytest.fixture
async def serve(database_urls: DatabaseUrls) -> AsyncIterator[Serve]:
    async with app_clients() as start_client:
        async def start(env: dict[str, str] | None = None, **registered: Any) -> TestClient:
            # What a test does not register is not served (not the product's own either).
            return await start_client(create_app(
                make_settings(database_urls, **(env or {})), database_url=database_urls.runtime,
                **{"resources": (), "prompts": (), **registered}))

        yield start


async def rpc(client: TestClient, tenant: Tenant, method: str, **params: Any) -> dict[str, Any]:
    response = await client.post("/execute", data=orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        headers={**tenant.headers, "Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    return await response.json()


async def session(client: TestClient, tenant: Tenant) -> dict[str, str]:
    """Headers of an initialized streamable-HTTP session."""
    base = {**tenant.headers, "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"}
    response = await client.post("/mcp", data=orjson.dumps(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}), headers=base)
    assert response.status == 200
    headers = {**base, "Mcp-Session-Id": response.headers["Mcp-Session-Id"],
               "MCP-Protocol-Version": "2025-11-25"}
    response = await client.post("/mcp", data=orjson.dumps(
        {"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=headers)
    assert response.status == 202
    return headers


async def test_with_none_registered_no_resources_or_prompts_are_served(
        serve: Serve, make_tenant: TenantFactory) -> None:
    client, tenant = await serve(), await make_tenant()
    capabilities = (await rpc(client, tenant, "initialize", protocolVersion="2025-11-25",
                              capabilities={}))["result"]["capabilities"]
    assert set(capabilities) == {"tools", "logging"}
    for method in ("resources/list", "resources/read", "prompts/list", "completion/complete"):
        assert (await rpc(client, tenant, method))["error"]["code"] == -32601


async def test_resources_are_listed_and_read_by_what_the_key_may_see(
        serve: Serve, make_tenant: TenantFactory) -> None:
    client = await serve(resources=RESOURCES)
    admin, reader = await make_tenant(), await make_tenant(scopes=("read",))
    capabilities = (await rpc(client, reader, "initialize", protocolVersion="2025-11-25",
                              capabilities={}))["result"]["capabilities"]
    assert capabilities["resources"] == {"subscribe": True, "listChanged": False}
    assert "prompts" not in capabilities and capabilities["completions"] == {}

    listed = (await rpc(client, admin, "resources/list"))["result"]["resources"]
    assert [r["uri"] for r in listed] == ["spiral://admin-notes", "spiral://notes/admin",
                                          "spiral://readme"]
    listed = (await rpc(client, reader, "resources/list"))["result"]["resources"]
    assert listed == [{"uri": "spiral://readme", "name": "readme", "description": "A text",
                       "mimeType": "text/plain"}]
    templates = (await rpc(client, reader, "resources/templates/list"))["result"]
    assert templates["resourceTemplates"] == [
        {"uriTemplate": "spiral://items/{key}", "name": "item",
         "description": "A work item's title"},
        {"uriTemplate": "spiral://notes/{name}", "name": "note", "description": "A note"}]
    assert (await rpc(client, reader, "resources/read", uri="spiral://notes/x"))["result"]

    read = (await rpc(client, reader, "resources/read", uri="spiral://readme"))["result"]
    assert read == {"contents": [{"uri": "spiral://readme", "mimeType": "text/plain",
                                  "text": "hello"}]}
    # A resource the key may not read is as unknown as one that does not exist, also when a
    # template it may read matches the URI.
    for uri in ("spiral://admin-notes", "spiral://nothing", "spiral://items/a/b",
                "spiral://notes/admin"):
        error = (await rpc(client, reader, "resources/read", uri=uri))["error"]
        assert error == {"code": -32002, "message": f"resource not found: {uri}",
                         "data": {"uri": uri}}
    error = (await rpc(client, reader, "resources/read"))["error"]
    assert error["code"] == -32602 and "uri" in error["message"]


async def test_a_resource_reads_only_the_caller_s_tenant(
        serve: Serve, make_tenant: TenantFactory, database_urls: DatabaseUrls) -> None:
    client = await serve(resources=RESOURCES)
    owner, other = await make_tenant(demo=True), await make_tenant(demo=False)
    conn = await asyncpg.connect(database_urls.runtime)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(owner.id))
            key = await conn.fetchval("SELECT min(key) FROM work_items")
    finally:
        await conn.close()
    assert key is not None
    read = await rpc(client, owner, "resources/read", uri=f"spiral://items/{key}")
    assert read["result"]["contents"][0]["text"]
    # Another tenant's key: the reader's NOT_FOUND, as the resource error code.
    error = (await rpc(client, other, "resources/read", uri=f"spiral://items/{key}"))["error"]
    assert error["code"] == -32002 and error["data"]["code"] == "NOT_FOUND"


async def test_subscriptions_belong_to_a_session(serve: Serve, make_tenant: TenantFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    client = await serve(resources=RESOURCES)
    tenant = await make_tenant()
    headers = await session(client, tenant)

    async def call(method: str, **params: Any) -> dict[str, Any]:
        response = await client.post("/mcp", data=orjson.dumps(
            {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}), headers=headers)
        return await response.json()

    assert (await call("resources/subscribe", uri="spiral://readme"))["result"] == {}
    live = await client.app[SESSIONS].get(headers["Mcp-Session-Id"], tenant.key_id,
                                          tenant_id=tenant.id, transport="streamable")
    assert live is not None and live.subscriptions == {"spiral://readme"}
    error = (await call("resources/subscribe", uri="spiral://nothing"))["error"]
    assert error["code"] == -32002 and live.subscriptions == {"spiral://readme"}
    assert (await call("resources/unsubscribe", uri="spiral://readme"))["result"] == {}
    assert live.subscriptions == set()
    monkeypatch.setattr(dispatcher, "MAX_SUBSCRIPTIONS", 1)
    assert (await call("resources/subscribe", uri="spiral://notes/a"))["result"] == {}
    error = (await call("resources/subscribe", uri="spiral://notes/b"))["error"]
    assert error["code"] == -32600 and "at most 1" in error["message"]
    assert live.subscriptions == {"spiral://notes/a"}
    # No session, nothing to deliver updates on.
    error = (await rpc(client, tenant, "resources/subscribe", uri="spiral://readme"))["error"]
    assert error["code"] == -32600


async def test_prompts_are_filled_in_and_their_arguments_checked(
        serve: Serve, make_tenant: TenantFactory) -> None:
    client = await serve(prompts=PROMPTS)
    tenant = await make_tenant(scopes=("read",))
    capabilities = (await rpc(client, tenant, "initialize", protocolVersion="2025-11-25",
                              capabilities={}))["result"]["capabilities"]
    assert capabilities["prompts"] == {"listChanged": True} and "resources" not in capabilities
    listed = (await rpc(client, tenant, "prompts/list"))["result"]["prompts"]
    assert listed[0] == {"name": "greet", "description": "Greets someone", "arguments": [
        {"name": "name", "description": "Who", "required": True}]}
    got = (await rpc(client, tenant, "prompts/get", name="greet",
                     arguments={"name": "Ada"}))["result"]
    assert got == {"description": "Greets someone", "messages": [
        {"role": "user", "content": {"type": "text", "text": "Hello Ada"}}]}
    for params, message in (
        ({"name": "greet"}, "missing arguments for greet: name"),
        ({"name": "greet", "arguments": {"name": 1}}, "prompt arguments must be"),
        ({"name": "greet", "arguments": {"name": "x", "age": "3"}}, "unknown arguments"),
        ({"name": "nope"}, "unknown prompt: nope"),
        ({"name": "missing"}, "nothing to say"),  # the renderer's NOT_FOUND
    ):
        error = (await rpc(client, tenant, "prompts/get", **params))["error"]
        assert error["code"] == -32602 and message in error["message"], error


async def test_completion_offers_an_argument_s_choices(serve: Serve,
                                                       make_tenant: TenantFactory) -> None:
    client = await serve(prompts=PROMPTS, resources=RESOURCES)
    tenant = await make_tenant()
    result = (await rpc(client, tenant, "completion/complete",
                        ref={"type": "ref/prompt", "name": "greet"},
                        argument={"name": "name", "value": "A"}))["result"]
    assert result == {"completion": {"values": ["Ada", "Alan"], "total": 2, "hasMore": False}}
    result = (await rpc(client, tenant, "completion/complete",
                        ref={"type": "ref/resource", "uri": "spiral://items/{key}"},
                        argument={"name": "key", "value": "P"}))["result"]
    assert result["completion"]["values"] == []
    for ref, argument in (
        ({"type": "ref/prompt", "name": "greet"}, {"name": "age", "value": ""}),
        ({"type": "ref/prompt", "name": "nope"}, {"name": "name", "value": ""}),
        ({"type": "ref/resource", "uri": "spiral://unknown/{x}"}, {"name": "x", "value": ""}),
        ({"type": "ref/tool"}, {"name": "x", "value": ""}),
        ({"type": "ref/prompt", "name": "greet"}, {"value": 3}),
    ):
        error = (await rpc(client, tenant, "completion/complete", ref=ref,
                           argument=argument))["error"]
        assert error["code"] == -32602, (ref, argument, error)


def test_a_template_must_be_unambiguous() -> None:
    for template in ("x://{a}/{a}", "x://{a}{b}"):
        with pytest.raises(ValueError):
            ResourceRegistry([Resource(uri=template, name="t", description="t", read=_readme)])


async def test_reads_and_prompts_spend_the_key_s_read_budget(serve: Serve,
                                                            make_tenant: TenantFactory) -> None:
    client = await serve({"RATE_LIMIT_READ": "2", "RATE_LIMIT_WINDOW": "3600"},
                         resources=RESOURCES, prompts=PROMPTS)
    tenant, other = await make_tenant(), await make_tenant()
    assert "result" in await rpc(client, tenant, "resources/read", uri="spiral://readme")
    assert "result" in await rpc(client, tenant, "prompts/get", name="greet",
                                 arguments={"name": "Ada"})
    for method, params in (("resources/read", {"uri": "spiral://readme"}),
                           ("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}})):
        error = (await rpc(client, tenant, method, **params))["error"]
        assert error["code"] == -32603 and error["data"]["code"] == "RATE_LIMITED", error
        assert error["data"]["retry_after"] > 0
    # Another key's budget is its own.
    assert "result" in await rpc(client, other, "resources/read", uri="spiral://readme")
