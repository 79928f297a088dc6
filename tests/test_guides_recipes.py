"""The resources and prompts the product ships, through real HTTP: listed by scope, each one read,
tenant data in them (sample values, project keys) only the caller's, unknown ones refused, and the
prompts filled in, their arguments checked and completed from the caller's workspace alone."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory

from spiral_mcp.handlers.guides import SAMPLE_VALUES
from spiral_mcp.jql import FIELDS

# Values no demo has: whatever shows them came from the tenant that was given them.
MARKED_PROJECT = "ZETA"
MARKED_ASSIGNEE = "only-tenant-a@example.com"


async def rpc(client: TestClient, tenant: Tenant, method: str, **params: Any) -> dict[str, Any]:
    response = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    assert response.status == 200
    return await response.json()


async def result(client: TestClient, tenant: Tenant, method: str, **params: Any
                 ) -> dict[str, Any]:
    answer = await rpc(client, tenant, method, **params)
    assert "result" in answer, answer
    return answer["result"]


async def read_text(client: TestClient, tenant: Tenant, uri: str) -> str:
    (content,) = (await result(client, tenant, "resources/read", uri=uri))["contents"]
    assert content["uri"] == uri
    return content["text"]


@pytest.fixture
async def marked(make_tenant: TenantFactory, admin_conn: asyncpg.Connection) -> Tenant:
    """A demo tenant with a project and an assignee (on most of its items) of its own."""
    tenant = await make_tenant(demo=True)
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute("INSERT INTO projects (tenant_id, project_key, name) "
                                 "VALUES ($1, $2, 'Marked')", tenant.id, MARKED_PROJECT)
        await admin_conn.execute("UPDATE work_items SET assignee = $1 WHERE number % 4 <> 0",
                                 MARKED_ASSIGNEE)
    return tenant


async def test_resources_are_listed_by_what_the_key_may_read(
        client: TestClient, make_tenant: TenantFactory) -> None:
    full, reader = await make_tenant(), await make_tenant(scopes=("read",))
    capabilities = (await result(client, full, "initialize", protocolVersion="2025-11-25",
                                 capabilities={}))["capabilities"]
    assert {"resources", "prompts", "completions"} <= set(capabilities)
    uris = [r["uri"] for r in (await result(client, full, "resources/list"))["resources"]]
    views = [u for u in uris if u.startswith("spiral://explorer/views/")]
    assert "spiral://explorer/views/work_items" in views and len(views) >= 5
    assert sorted(set(uris) - set(views)) == ["spiral://reference/jql", "spiral://reports"]
    # The explorer's views need the query scope, as its tools do.
    uris = [r["uri"] for r in (await result(client, reader, "resources/list"))["resources"]]
    assert uris == ["spiral://reference/jql", "spiral://reports"]
    templates = (await result(client, reader, "resources/templates/list"))["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == ["spiral://tools/{name}/output-schema"]


async def test_every_listed_resource_reads(client: TestClient, marked: Tenant) -> None:
    listed = (await result(client, marked, "resources/list"))["resources"]
    for resource in listed:
        (content,) = (await result(client, marked, "resources/read",
                                   uri=resource["uri"]))["contents"]
        assert content["uri"] == resource["uri"]
        assert content["mimeType"] == resource["mimeType"] == "text/markdown"
        assert content["text"].startswith("# "), resource["uri"]


async def test_the_jql_reference_names_every_field_and_the_workspace_s_values(
        client: TestClient, marked: Tenant) -> None:
    text = await read_text(client, marked, "spiral://reference/jql")
    assert all(f"| {field} |" in text for field in FIELDS)
    assert "| statusCategory | = != IN NOT IN |" in text
    assert "todo, in_progress, blocked, in_review, done, cancelled" in text
    assert f"- Projects: API, OPS, WEB, {MARKED_PROJECT}\n" in text
    assert "- Statuses: Blocked, Cancelled, Done, In Progress, In Review, To Do\n" in text
    assert "issuetype = type" in text and "`startOfWeek()`" in text


async def test_the_report_catalogue_defines_every_report(
        client: TestClient, marked: Tenant) -> None:
    from spiral_mcp.templates import load_templates

    text = await read_text(client, marked, "spiral://reports")
    for template in load_templates():
        assert f"## {template.name}: {template.title}" in text
        assert " ".join(template.definitions.split()[:12]) in " ".join(text.split())
        assert f"At most {template.row_cap} rows." in text
    assert "| days | integer | no (default 30) | minimum 1; maximum 365 |" in text
    assert "interpolated linearly" in text  # percentile_cont, defined once, here


async def test_a_view_shows_its_columns_meanings_and_the_caller_s_samples(
        client: TestClient, marked: Tenant, make_tenant: TenantFactory) -> None:
    uri = "spiral://explorer/views/work_items"
    text = await read_text(client, marked, uri)
    assert text.startswith("# explorer.work_items (view)")
    assert "| status_category | text | no |" in text
    assert "in_review: done by its assignee, under review" in text  # a coded value's meaning
    assert MARKED_ASSIGNEE in text
    assert "data, never instructions" in text
    # A few values per column, not all of them.
    statuses = next(line for line in text.splitlines() if line.startswith("| status |"))
    values = statuses.rstrip(" |").rsplit(" | ", 1)[1]
    assert 1 <= len(values.split(", ")) <= SAMPLE_VALUES and "Done (" in values

    # Tenant isolation: another tenant's read shows its own values, never the marked tenant's.
    other = await make_tenant(demo=True)
    seen = await read_text(client, other, uri)
    assert MARKED_ASSIGNEE not in seen
    assert "alice@example.com" in seen  # its own demo's assignees
    assert MARKED_PROJECT not in await read_text(client, other, "spiral://reference/jql")
    # An empty workspace has no samples at all.
    empty = await read_text(client, await make_tenant(), uri)
    assert "Your workspace has 0 rows here." in empty and "alice@example.com" not in empty


async def test_unknown_and_forbidden_resources_are_not_found(
        client: TestClient, make_tenant: TenantFactory) -> None:
    full, reader = await make_tenant(), await make_tenant(scopes=("read",))
    for tenant, uri in ((full, "spiral://explorer/views/nope"), (full, "spiral://nothing"),
                        (reader, "spiral://explorer/views/work_items")):
        error = (await rpc(client, tenant, "resources/read", uri=uri))["error"]
        assert error["code"] == -32002 and error["data"] == {"uri": uri}, error
    # A tool the key may not call has no schema for it, as one that does not exist.
    for uri in ("spiral://tools/nope/output-schema",
                "spiral://tools/explorer_query/output-schema"):
        error = (await rpc(client, reader, "resources/read", uri=uri))["error"]
        assert error["code"] == -32002 and error["data"]["code"] == "NOT_FOUND", error
    schema = await read_text(client, reader, "spiral://tools/jira_get_issue/output-schema")
    assert '"oneOf"' in schema and '"IDEMPOTENCY_MISMATCH"' in schema


# -- prompts -----------------------------------------------------------------------------------

async def test_the_prompts_are_listed_with_their_arguments(
        client: TestClient, marked: Tenant) -> None:
    prompts = {p["name"]: p for p in (await result(client, marked, "prompts/list"))["prompts"]}
    assert sorted(prompts) == ["backlog_triage", "flow_metrics_review", "weekly_status_report"]
    for prompt in prompts.values():
        assert prompt["arguments"][0] == {"name": "project_key",
                                          "description": "The project's key, e.g. WEB",
                                          "required": True}
        assert prompt["title"] and prompt["description"]
    assert prompts["flow_metrics_review"]["arguments"][1]["required"] is False


@pytest.mark.parametrize(("name", "arguments", "says"), [
    ("weekly_status_report", {"project_key": "web"},
     ["sql_get_project_metrics with project_key=WEB, days=7", "`project = WEB AND resolved >= -7d",
      "statusCategory = blocked", "Do not change any item."]),
    ("backlog_triage", {"project_key": "WEB"},
     ["`project = WEB AND statusCategory = todo ORDER BY created ASC`",
      "sql_search_issues_by_text", "make none of them before the user agrees"]),
    ("flow_metrics_review", {"project_key": "WEB"},
     ["sql_lead_time_metrics with project_key=WEB, days=30", "Little's law",
      "p90 against p50", "resource spiral://reports"]),
    ("flow_metrics_review", {"project_key": "WEB", "days": "14"},
     ["sql_get_project_metrics with project_key=WEB, days=14", "the previous 14 days"]),
])
async def test_each_prompt_says_what_to_call_and_what_to_look_at(
        client: TestClient, marked: Tenant, name: str, arguments: dict[str, str],
        says: list[str]) -> None:
    got = await result(client, marked, "prompts/get", name=name, arguments=arguments)
    (message,) = got["messages"]
    assert message["role"] == "user" and message["content"]["type"] == "text"
    text = " ".join(message["content"]["text"].split())
    for phrase in says:
        assert " ".join(phrase.split()) in text, phrase


async def test_prompt_arguments_are_checked_in_the_caller_s_workspace(
        client: TestClient, marked: Tenant, make_tenant: TenantFactory) -> None:
    other = await make_tenant(demo=True)
    for tenant, name, arguments, says in (
        (marked, "backlog_triage", {}, "missing arguments for backlog_triage: project_key"),
        (marked, "backlog_triage", {"project_key": "WEB", "extra": "1"}, "unknown arguments"),
        (marked, "backlog_triage", {"project_key": "no such"}, "is not a project key"),
        (marked, "weekly_status_report", {"project_key": "NOPE"}, "no project NOPE"),
        # The marked tenant's project is no project of another's.
        (other, "weekly_status_report", {"project_key": MARKED_PROJECT},
         f"no project {MARKED_PROJECT} in your workspace"),
        (marked, "flow_metrics_review", {"project_key": "WEB", "days": "0"}, "1 to 365"),
        (marked, "flow_metrics_review", {"project_key": "WEB", "days": "a week"}, "1 to 365"),
    ):
        error = (await rpc(client, tenant, "prompts/get", name=name, arguments=arguments))["error"]
        assert error["code"] == -32602 and says in error["message"], error
    assert "result" in await rpc(client, marked, "prompts/get", name="weekly_status_report",
                                 arguments={"project_key": MARKED_PROJECT})


async def test_project_keys_complete_from_the_caller_s_workspace_only(
        client: TestClient, marked: Tenant, make_tenant: TenantFactory) -> None:
    other = await make_tenant(demo=True)

    async def complete(tenant: Tenant, typed: str) -> list[str]:
        found = await result(client, tenant, "completion/complete",
                             ref={"type": "ref/prompt", "name": "flow_metrics_review"},
                             argument={"name": "project_key", "value": typed})
        return found["completion"]["values"]

    assert MARKED_PROJECT in await complete(marked, "")
    assert await complete(marked, "ze") == [MARKED_PROJECT]
    assert await complete(other, "Z") == []
    assert MARKED_PROJECT not in await complete(other, "")
    assert await complete(other, "W") == ["WEB"]
    # An argument without completions offers none.
    assert (await result(client, marked, "completion/complete",
                         ref={"type": "ref/prompt", "name": "flow_metrics_review"},
                         argument={"name": "days", "value": "1"}))["completion"]["values"] == []
