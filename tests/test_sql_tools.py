"""Report templates served as tools: listed, callable over HTTP, described at GET /templates,
extended by SPIRAL_TEMPLATES_DIR, refused at start-up when broken, timed in a metric."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings

from spiral_mcp.server.app import create_app
from spiral_mcp.templates import TemplateError

BUILTIN = {"sql_search_issues_by_project", "sql_get_project_metrics", "sql_search_issues_by_text",
           "sql_get_issue_history", "sql_get_user_workload", "sql_lead_time_metrics"}

CUSTOM = """\
-- name: sql_open_items_count
-- title: Open items per project
-- row_cap: 50
-- description: How many items of each project are not done or cancelled.
-- param min_open: {"type": "integer", "minimum": 0, "default": 0}
SELECT project_key, count(*) AS open_items
FROM work_items
WHERE status_category NOT IN ('done', 'cancelled')
GROUP BY project_key
HAVING count(*) >= $1
ORDER BY project_key
"""


async def _call(client, tenant, name: str, arguments: dict) -> dict:
    resp = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    return (await resp.json())["result"]["structuredContent"]


async def test_the_six_templates_are_tools(client, make_tenant) -> None:
    tenant = await make_tenant(scopes=("read",))
    listed = {t["name"] for t in (await (await client.get("/tools", headers=tenant.headers))
                                  .json())["tools"]}
    assert listed >= BUILTIN
    described = (await (await client.get("/templates", headers=tenant.headers)).json())
    by_name = {t["name"]: t for t in described["templates"]}
    assert set(by_name) == BUILTIN
    assert by_name["sql_get_project_metrics"]["input_schema"]["required"] == ["project_key"]
    assert "percentile_cont" in by_name["sql_get_project_metrics"]["definitions"]


async def test_a_template_runs_in_the_callers_tenant(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    other = await make_tenant(demo=True)
    envelope = await _call(client, tenant, "sql_search_issues_by_project",
                           {"project_key": "WEB", "limit": 100})
    assert envelope["success"], envelope
    data = envelope["data"]
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        expected = [r["key"] for r in await admin_conn.fetch(
            "SELECT key FROM work_items WHERE project_key = 'WEB' "
            "ORDER BY updated_at DESC, created_at DESC, number DESC")]
    assert [r["key"] for r in data["rows"]] == expected
    assert data["row_count"] == len(expected) and data["truncated"] is False
    assert {"name": "key", "type": "text"} in data["columns"]
    # The other tenant has the same project and keys: none of its rows may appear.
    other_rows = (await _call(client, other, "sql_search_issues_by_project",
                              {"project_key": "WEB", "limit": 100}))["data"]["rows"]
    assert {r["updated_at"] for r in other_rows}.isdisjoint({r["updated_at"] for r in data["rows"]})
    metrics = await (await client.get("/metrics")).text()
    assert 'sql_template_duration_seconds_count{template="sql_search_issues_by_project"}' in metrics


async def test_bad_parameters_are_validation_errors(client, make_tenant) -> None:
    tenant = await make_tenant()
    envelope = await _call(client, tenant, "sql_get_project_metrics",
                           {"project_key": "WEB", "days": 400})
    assert envelope["error"]["code"] == "VALIDATION_ERROR"
    assert envelope["error"]["details"][0]["path"] == "/days"


async def test_operator_templates_appear_beside_the_builtin_ones(
    aiohttp_client, database_urls, make_tenant, tmp_path: Path
) -> None:
    (tmp_path / "open.sql").write_text(CUSTOM)
    settings = make_settings(database_urls, SPIRAL_TEMPLATES_DIR=str(tmp_path))
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    tenant = await make_tenant(demo=True)
    envelope = await _call(client, tenant, "sql_open_items_count", {})
    assert envelope["success"], envelope
    assert [r["project_key"] for r in envelope["data"]["rows"]] == ["API", "OPS", "WEB"]


def test_a_broken_operator_template_stops_start_up(database_urls, tmp_path: Path) -> None:
    (tmp_path / "broken.sql").write_text(CUSTOM.replace("SELECT project_key",
                                                        "DELETE FROM work_items; SELECT 1, "))
    settings = make_settings(database_urls, SPIRAL_TEMPLATES_DIR=str(tmp_path))
    with pytest.raises(TemplateError, match=r"broken\.sql"):
        create_app(settings, database_url=database_urls.runtime)
