"""The project dashboard's API: projects, a project's flow, its charts as PNG and SVG; every
answer checked against the OpenAPI document; another tenant's project is not found."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from api_fixtures import ApiClient

from spiral_mcp.dashboards import FlowWindow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTS = ("cfd", "throughput", "lead_cycle", "wip_age")


async def _image(api: ApiClient, path: str, who) -> tuple[int, str, str, bytes]:
    async with api.client.get(f"/api/v1{path}", headers=who.headers) as resp:
        return resp.status, resp.headers["Content-Type"], \
            resp.headers.get("Cache-Control", ""), await resp.read()


async def test_projects_are_listed_with_their_counts(api: ApiClient, tenant) -> None:
    resp = await api.get("/projects", tenant)
    assert resp.status == 200 and resp.body["tenant_id"] == str(tenant.id)
    projects = resp.data["projects"]
    assert [p["project_key"] for p in projects] == ["API", "OPS", "WEB"]
    assert all(p["items"] == 20 and p["open_items"] + p["done_items"] <= 20 for p in projects)


async def test_the_flow_of_a_project(api: ApiClient, tenant) -> None:
    resp = await api.get("/projects/WEB/flow", tenant)
    assert resp.status == 200
    flow = resp.data
    default = FlowWindow.parse(None, None)
    assert (flow["since"], flow["until"]) == (str(default.since), str(default.until))
    assert len(flow["cfd"]) == 30 and flow["name"] == "Web storefront"
    assert set(flow) == {"project_key", "name", "since", "until", "cfd", "throughput",
                         "lead_cycle", "wip"}

    since = str(dt.date.today() - dt.timedelta(days=89))
    wide = (await api.get(f"/projects/WEB/flow?since={since}", tenant)).data
    assert len(wide["cfd"]) == 90 and wide["since"] == since
    assert wide["lead_cycle"]["items_total"] >= flow["lead_cycle"]["items_total"]


@pytest.mark.parametrize(("query", "message"), [
    ("since=yesterday", "since must be a date as YYYY-MM-DD, not 'yesterday'"),
    ("since=2026-02-01&until=2026-01-01", "since (2026-02-01) is after until (2026-01-01)"),
    ("since=2020-01-01&until=2026-01-01", "the window holds 2193 days; at most 366 are allowed"),
    ("days=3", "days"),
])
async def test_a_bad_window_is_a_named_validation_error(api: ApiClient, tenant, query: str,
                                                        message: str) -> None:
    for path in ("/projects/WEB/flow", "/projects/WEB/charts/cfd.png"):
        resp = await api.get(f"{path}?{query}", tenant)
        assert resp.status == 400 and resp.error["code"] == "VALIDATION_ERROR"
        assert message in resp.error["message"]


@pytest.mark.parametrize("chart", CHARTS)
async def test_each_chart_as_png_and_svg(api: ApiClient, tenant, chart: str) -> None:
    from matplotlib import image

    status, kind, cache, body = await _image(api, f"/projects/WEB/charts/{chart}.png", tenant)
    assert (status, kind) == (200, "image/png") and "private" in cache
    assert body.startswith(PNG_SIGNATURE)
    assert image.imread(io.BytesIO(body), format="png").shape[:2] == (720, 1280)
    status, kind, cache, body = await _image(api, f"/projects/WEB/charts/{chart}.svg", tenant)
    assert (status, kind) == (200, "image/svg+xml") and "private" in cache
    assert body.startswith(b"<?xml") and b"<svg" in body and b"<script" not in body


async def test_an_empty_window_draws_no_data(api: ApiClient, make_tenant, admin_conn) -> None:
    tenant = await make_tenant()
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO projects (tenant_id, project_key, name) VALUES ($1, 'NEW', 'New')",
            tenant.id)
    status, _, _, body = await _image(api, "/projects/NEW/charts/cfd.svg", tenant)
    assert status == 200 and b'id="no-data"' in body
    flow = (await api.get("/projects/NEW/flow", tenant)).data
    assert flow["lead_cycle"]["items"] == [] and flow["wip"]["items_total"] == 0
    assert all(sum(v for k, v in day.items() if k != "day") == 0 for day in flow["cfd"])


async def test_unknown_chart_or_format_is_404_naming_the_known_ones(api: ApiClient,
                                                                    tenant) -> None:
    resp = await api.get("/projects/WEB/charts/pie.png", tenant)
    assert resp.status == 404 and resp.error["code"] == "NOT_FOUND"
    assert resp.error["message"] == \
        "no chart 'pie'; the charts are cfd, throughput, lead_cycle, wip_age"
    resp = await api.get("/projects/WEB/charts/cfd.gif", tenant)
    assert resp.status == 404
    assert resp.error["message"] == "no image format 'gif'; the formats are png, svg"


async def test_another_tenants_project_is_not_found(api: ApiClient, tenant,
                                                    make_tenant) -> None:
    other = await make_tenant()  # no projects at all
    assert (await api.get("/projects", other)).data == {"projects": []}
    for path in ("/projects/WEB/flow", "/projects/WEB/charts/cfd.png",
                 "/projects/WEB/charts/wip_age.svg"):
        resp = await api.get(path, other)
        assert resp.status == 404, path
        assert resp.error == {"code": "NOT_FOUND", "message": "no project 'WEB'",
                              "details": [], "retry_after": None}
    # A key no project can have is as not found.
    resp = await api.get("/projects/web/flow", tenant)
    assert resp.status == 404 and resp.error["message"] == "no project 'web'"


async def test_the_dashboard_needs_an_admin(api: ApiClient, make_tenant) -> None:
    reader = await make_tenant(scopes=("read",))
    for path in ("/projects", "/projects/WEB/flow", "/projects/WEB/charts/cfd.png"):
        resp = await api.get(path, reader)
        assert resp.status == 403 and resp.error["message"] == "this key lacks the admin scope"
        resp = await api.get(path)
        assert resp.status == 401
