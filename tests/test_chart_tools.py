"""``chart: true`` on sql_get_project_metrics and sql_lead_time_metrics, through the official
``mcp`` client on a real port: a PNG image block beside the unchanged structured result; without
it (or with false) the result is exactly as before."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from conftest import Tenant, make_settings
from mcp import types
from serving import ProductionLikeServer
from test_mcp_clients import connect

from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTED = {"sql_get_project_metrics": {"project_key": "WEB", "days": 30},
           "sql_lead_time_metrics": {"project_key": "WEB", "days": 60}}


@pytest.fixture
async def server(database_urls: DatabaseUrls) -> AsyncIterator[TestServer]:
    app = create_app(make_settings(database_urls), database_url=database_urls.runtime)
    server = ProductionLikeServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def _images(result: types.CallToolResult) -> list[types.ImageContent]:
    return [block for block in result.content if isinstance(block, types.ImageContent)]


def _png_size(data: bytes) -> tuple[int, int]:
    from matplotlib import image

    assert data.startswith(PNG_SIGNATURE)
    pixels = image.imread(io.BytesIO(data), format="png")
    return pixels.shape[1], pixels.shape[0]


def _figures(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error is False, result.structured_content
    envelope = dict(result.structured_content or {})
    envelope.pop("timing_ms")
    # ends_at is the moment of the call (now): the one figure two calls may not share.
    envelope["data"] = {**envelope["data"], "rows": [
        {k: v for k, v in row.items() if k != "ends_at"} for row in envelope["data"]["rows"]]}
    return envelope


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_chart_true_adds_a_png_beside_the_same_figures(
        server: TestServer, tenant: Tenant, mode: str) -> None:
    async with connect(server, tenant, mode) as client:
        listing = {tool.name: tool for tool in (await client.list_tools()).tools}
        for name, arguments in CHARTED.items():
            chart = listing[name].input_schema["properties"]["chart"]
            assert chart["type"] == "boolean" and chart["default"] is False
            assert "PNG" in chart["description"]

            plain = await client.call_tool(name, arguments)
            unasked = await client.call_tool(name, {**arguments, "chart": False})
            drawn = await client.call_tool(name, {**arguments, "chart": True})

            assert _images(plain) == [] and _images(unasked) == []
            assert [b.type for b in plain.content] == [b.type for b in unasked.content] == \
                ["text"]
            # The numbers are the same with or without the picture.
            assert _figures(drawn) == _figures(plain) == _figures(unasked)
            assert _figures(drawn)["data"]["row_count"] > 0
            [image] = _images(drawn)
            assert image.mime_type == "image/png"
            assert _png_size(base64.b64decode(image.data)) == (1280, 720)
            # The envelope's JSON stays the last block.
            assert drawn.content[-1].type == "text"


async def test_a_chart_of_nothing_says_so_rather_than_fail(
        server: TestServer, tenant: Tenant) -> None:
    async with connect(server, tenant, "legacy") as client:
        for name in CHARTED:
            result = await client.call_tool(name, {"project_key": "NOPE", "chart": True})
            assert result.is_error is False
            [image] = _images(result)
            assert _png_size(base64.b64decode(image.data)) == (1280, 720)


async def test_other_reports_take_no_chart(server: TestServer, tenant: Tenant) -> None:
    async with connect(server, tenant, "legacy") as client:
        listing = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert "chart" not in listing["sql_get_user_workload"].input_schema["properties"]
        refused = await client.call_tool("sql_get_user_workload", {"chart": True})
        assert refused.is_error is True
        assert refused.structured_content["error"]["code"] == "VALIDATION_ERROR"


async def test_a_report_run_as_a_task_keeps_its_chart(client, tenant) -> None:
    from tests.test_tasks import call, terminal, until

    created = await call(client, tenant, "sql_lead_time_metrics", project_key="WEB", chart=True)
    assert created["resultType"] == "task"
    done = await until(client, tenant, created["taskId"], terminal)
    assert done["status"] == "completed", done
    content = done["result"]["content"]
    [image] = [block for block in content if block["type"] == "image"]
    assert image["mimeType"] == "image/png"
    assert _png_size(base64.b64decode(image["data"])) == (1280, 720)
    assert done["result"]["structuredContent"]["success"] is True
