"""What an agent sees first: the tool list's size, its input schemas in forms every major client
accepts, and the icons of the server, tools, resources and prompts.

The figure is the serialized ``tools`` array of ``tools/list`` (compact JSON, as the wire carries
it) for a key with every scope: every conversation pays it before its first call. It was 66,160
characters before issue #18 (68,616 as the issue measured it, with its own serializer).
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory

from spiral_mcp.schema_types import portable_problems as dialect_problems

FOOTPRINT_LIMIT = 24_000

def test_the_dialect_walk_finds_what_clients_reject() -> None:
    """The rule (``schema_types.portable_problems``), held against the forms the Inspector
    reported and those Gemini's function declarations refuse."""
    assert dialect_problems({"type": "object", "properties": {
        "a": {"type": ["string", "null"]}, "b": {"type": "null"},
        "c": {"oneOf": [{"type": "string"}]}, "d": {"type": "string", "const": "x"},
        "e": {"type": "array"}, "f": {"anyOf": [{"type": "string"}, {"minLength": 1}]},
        "g": {"$ref": "#/$defs/g"}, "h": {"type": "object", "additionalProperties": {}},
    }}) == [
        "/properties/a: type must be one of ['array', 'boolean', 'integer', 'number', "
        "'object', 'string'], not ['string', 'null']",
        "/properties/b: type must be one of ['array', 'boolean', 'integer', 'number', "
        "'object', 'string'], not 'null'",
        "/properties/c/oneOf: keyword not every client accepts",
        "/properties/c: type must be one of ['array', 'boolean', 'integer', 'number', "
        "'object', 'string'], not None",
        "/properties/d/const: keyword not every client accepts",
        "/properties/e: an array needs items",
        "/properties/f/anyOf/1: a branch needs one type",
        "/properties/f/anyOf/1: type must be one of ['array', 'boolean', 'integer', 'number', "
        "'object', 'string'], not None",
        "/properties/g/$ref: keyword not every client accepts",
        "/properties/g: type must be one of ['array', 'boolean', 'integer', 'number', "
        "'object', 'string'], not None",
        "/properties/h/additionalProperties: only false",
    ]


async def rpc(client: TestClient, tenant: Tenant, method: str, **params: Any) -> dict[str, Any]:
    response = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    assert response.status == 200
    answer = await response.json()
    assert "result" in answer, answer
    return answer["result"]


@pytest.fixture
async def every_scope(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant(scopes=("read", "write", "query", "admin"))


async def test_the_tool_list_of_every_scope_is_under_24000_characters(
        client: TestClient, every_scope: Tenant) -> None:
    result = await rpc(client, every_scope, "tools/list")
    assert "nextCursor" not in result
    tools = result["tools"]
    footprint = len(orjson.dumps(tools))
    print(f"\ntools/list footprint: {footprint} characters for {len(tools)} tools "
          f"(before issue #18: 66,160)")
    assert len(tools) == 21
    assert footprint < FOOTPRINT_LIMIT


async def test_every_listed_input_schema_is_in_the_portable_dialect(
        client: TestClient, every_scope: Tenant) -> None:
    tools = (await rpc(client, every_scope, "tools/list"))["tools"]
    problems = {t["name"]: dialect_problems(t["inputSchema"]) for t in tools}
    assert {name: found for name, found in problems.items() if found} == {}
    assert all(t["inputSchema"]["type"] == "object" for t in tools)


async def test_the_listing_says_each_thing_once(client: TestClient, every_scope: Tenant) -> None:
    """Every output schema is the shared envelope; a read-only tool carries only the hints that
    mean something for it; no property description repeats its tool's description."""
    tools = (await rpc(client, every_scope, "tools/list"))["tools"]
    assert {orjson.dumps(t["outputSchema"]) for t in tools} == {
        b'{"type":"object","required":["success"]}'}
    for tool in tools:
        hints = tool["annotations"]
        assert set(hints) == ({"readOnlyHint", "openWorldHint"} if hints["readOnlyHint"] else
                              {"readOnlyHint", "destructiveHint", "idempotentHint",
                               "openWorldHint"}), tool["name"]
        assert "title" not in hints  # the tool's own title says it
        assert "$schema" not in tool["inputSchema"]


# -- icons -------------------------------------------------------------------------------------

_DATA_URI = re.compile(r"data:image/svg\+xml;base64,([A-Za-z0-9+/]+=*)")
_ICON_BYTES = 200  # each is inlined in every listing that shows it


def check_icons(icons: Any) -> None:
    """``icons`` is a well-formed MCP icon list: an SVG of a few hundred bytes, inline."""
    assert isinstance(icons, list) and len(icons) == 1
    (icon,) = icons
    assert set(icon) == {"src"}
    match = _DATA_URI.fullmatch(icon["src"])
    assert match is not None, icon["src"][:60]
    try:
        svg = base64.b64decode(match.group(1), validate=True)
    except binascii.Error as exc:
        raise AssertionError(f"not base64: {exc}") from None
    assert len(svg) <= _ICON_BYTES
    root = ET.fromstring(svg)  # noqa: S314 (the package's own files, 200 bytes at most)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox") == "0 0 8 8"
    # An SVG icon must not carry script or reach out (the specification's warning).
    assert not any(e.tag.endswith(("script", "foreignObject", "image", "use")) for e in root.iter())
    assert not any(a.lower().startswith("on") or a.endswith("href")
                   for e in root.iter() for a in e.attrib)


async def test_the_server_tools_resources_and_prompts_have_icons(
        client: TestClient, every_scope: Tenant) -> None:
    initialized = await rpc(client, every_scope, "initialize", protocolVersion="2025-11-25",
                            capabilities={}, clientInfo={"name": "t", "version": "1"})
    check_icons(initialized["serverInfo"]["icons"])
    listed = [*(await rpc(client, every_scope, "tools/list"))["tools"],
              *(await rpc(client, every_scope, "resources/list"))["resources"],
              *(await rpc(client, every_scope, "resources/templates/list"))["resourceTemplates"],
              *(await rpc(client, every_scope, "prompts/list"))["prompts"]]
    for entry in listed:
        check_icons(entry.get("icons"))
    # Each toolset shows its own.
    tools = (await rpc(client, every_scope, "tools/list"))["tools"]
    by_toolset: dict[str, set[str]] = {}
    for tool in tools:
        by_toolset.setdefault(tool["name"].split("_")[0], set()).add(tool["icons"][0]["src"])
    assert all(len(srcs) == 1 for srcs in by_toolset.values())
    assert len({next(iter(s)) for s in by_toolset.values()}) == len(by_toolset) == 4
