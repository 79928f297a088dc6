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

FOOTPRINT_LIMIT = 24_000

# The input-schema dialect every major client accepts, Gemini's function declarations (an
# OpenAPI 3.0 subset) the narrowest of them: one type per schema and never "null" (optional means
# not required; "" clears a field), no $ref/$defs/oneOf/allOf/not/if/const (an enum of one value
# instead), an array always with typed items, anyOf only of typed branches. additionalProperties
# (false only) stays: JSON Schema's validators and OpenAI's strict mode want it, and Gemini's
# clients drop it (gemini-cli strips it from MCP schemas); SEP-1613 says never strip it.
_TYPES = frozenset({"object", "string", "integer", "number", "boolean", "array"})
_KEYWORDS = frozenset({
    "type", "description", "title", "default", "enum", "format", "properties", "required",
    "additionalProperties", "items", "anyOf", "minimum", "maximum", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "minProperties", "maxProperties",
})


def dialect_problems(schema: Any, path: str = "") -> list[str]:
    """Where ``schema`` leaves the portable dialect, each as 'path: what'."""
    if not isinstance(schema, dict):
        return [f"{path or '/'}: a schema must be an object"]
    problems = [f"{path}/{k}: keyword not every client accepts" for k in schema
                if k not in _KEYWORDS]
    if "anyOf" in schema:
        branches = schema["anyOf"]
        problems += [f"{path}/anyOf/{i}: a branch needs one type" for i, b in enumerate(branches)
                     if not isinstance(b, dict) or b.get("type") not in _TYPES]
        problems += [p for i, b in enumerate(branches)
                     for p in dialect_problems(b, f"{path}/anyOf/{i}")]
        if "type" in schema:
            problems.append(f"{path}: type beside anyOf")
        return problems
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        problems.append(f"{path or '/'}: type must be one of {sorted(_TYPES)}, not {kind!r}")
    if "enum" in schema and (kind != "string" or not all(
            isinstance(v, str) for v in schema["enum"])):
        problems.append(f"{path}/enum: an enum is of strings, on a string")
    if schema.get("additionalProperties", False) is not False:
        problems.append(f"{path}/additionalProperties: only false")
    if kind == "array":
        if not isinstance(schema.get("items"), dict):
            problems.append(f"{path}: an array needs items")
        else:
            problems += dialect_problems(schema["items"], f"{path}/items")
    for name, sub in schema.get("properties", {}).items():
        problems += dialect_problems(sub, f"{path}/properties/{name}")
    if set(schema.get("required", ())) - set(schema.get("properties", {})):
        problems.append(f"{path}/required: names a property not declared")
    return problems


def test_the_dialect_walk_finds_what_clients_reject() -> None:
    """The rule of this file, held against the forms the Inspector reported."""
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
