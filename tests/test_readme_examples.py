"""README's examples work as written: every call of the Tools section's example list runs, in
order, through POST /execute against a tenant with a fresh demo (the data ``make run`` loads), and
succeeds, and every result meets the tool's listed output schema and its complete one.

The ``sources_sync`` example names a source instance by id, and no demo has one: the tenant gets
an instance pointing at the fake Jira, and the example's placeholder id is replaced by that
instance's id (the one thing changed in any example).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator

from spiral_mcp import demo
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.sources import manage
from spiral_mcp.sources.secrets import SecretBox
from tests.conftest import TenantFactory, make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients
from tests.test_docs import readme_examples

SECRET_KEY = "x" * 43 + "="


async def test_every_readme_example_succeeds_against_a_fresh_demo(
        make_tenant: TenantFactory, database_urls: DatabaseUrls, admin_conn: asyncpg.Connection,
        queries: Queries, serve_fake) -> None:
    tenant = await make_tenant(user="demo@example.com")
    async with admin_conn.transaction():
        await demo.load_demo(admin_conn, queries, tenant_id=tenant.id)  # as `make run` does
    jira = await serve_fake(FakeJira())
    async with admin_conn.transaction():
        source_id = await manage.add_source(
            admin_conn, queries, SecretBox(SECRET_KEY), tenant_id=tenant.id, kind="jira",
            name="acme", base_url=jira.base_url, projects={"ABC": "ABC"}, email=jira.email,
            token=jira.token)

    examples = readme_examples()
    sync = next(e for e in examples if e["name"] == "sources_sync")
    written = dict(sync["arguments"])

    settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0")
    async with app_clients() as start:
        client: TestClient = await start(create_app(
            settings, database_url=database_urls.runtime, explorer_url=database_urls.explorer))

        async def call(number: int, params: dict[str, Any]) -> dict[str, Any]:
            resp = await client.post("/execute", headers=tenant.headers, json={
                "jsonrpc": "2.0", "id": number, "method": "tools/call", "params": params})
            assert resp.status == 200, params["name"]
            return await resp.json()

        async def rpc(method: str, **params: Any) -> dict[str, Any]:
            resp = await client.post("/execute", headers=tenant.headers, json={
                "jsonrpc": "2.0", "id": 0, "method": method, "params": params})
            return (await resp.json())["result"]

        # Every real result, a success or an error, meets both the schema the tool list shows
        # (the envelope) and the tool's complete one (a resource).
        listed = {t["name"]: Draft202012Validator(t["outputSchema"])
                  for t in (await rpc("tools/list"))["tools"]}
        complete = {name: Draft202012Validator(orjson.loads((await rpc(
            "resources/read", uri=f"spiral://tools/{name}/output-schema"))["contents"][0]["text"]),
            format_checker=Draft202012Validator.FORMAT_CHECKER) for name in listed}

        def check(name: str, envelope: dict[str, Any]) -> None:
            listed[name].validate(envelope)
            complete[name].validate(envelope)

        # As README says: the placeholder id names no instance of the tenant.
        answer = await call(0, {"name": "sources_sync", "arguments": written})
        assert answer["result"]["structuredContent"]["error"]["code"] == "NOT_FOUND"
        check("sources_sync", answer["result"]["structuredContent"])
        sync["arguments"] = {**written, "source_id": str(source_id)}

        failures = []
        for number, params in enumerate(examples, start=1):
            answer = await call(number, params)
            result = answer.get("result")
            if result is None or result["isError"]:
                error = (result or {}).get("structuredContent", {}).get("error") or answer
                failures.append((params["name"], error))
            else:
                check(params["name"], result["structuredContent"])
        assert not failures, "\n".join(f"{name}: {error}" for name, error in failures)
        assert sorted(listed) == sorted(e["name"] for e in examples)
