"""GET /api/v1/usage over real HTTP: the figures per bucket and tool (or key) against the same
figures computed in Python from the rows the test writes, the window's bounds and refusals, and
another tenant's calls never counted."""

from __future__ import annotations

import io
import random
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from api_fixtures import ApiClient
from audit_rows import BASE, Row, percentile_cont, write_rows
from matplotlib import image

from spiral_mcp.admin.usage_charts import CHART_TITLES, usage_chart_data
from spiral_mcp.charts import METRICS_CHARTS
from spiral_mcp.charts.metrics import MAX_ROWS

HOUR = timedelta(hours=1)
WINDOW = {"since": "2026-11-02T10:00:00Z", "until": "2026-11-02T14:00:00Z"}  # 4 hour buckets


def _rows(key_id: uuid.UUID) -> list[Row]:
    draw = random.Random(21)
    rows = []
    for i in range(300):
        at = BASE + timedelta(minutes=draw.randrange(0, 4 * 60))
        if i % 9 == 0:
            at = BASE + 2 * HOUR  # on a bucket's edge: it starts the third bucket
        rows.append(Row(
            at=at, tool=draw.choice(["jira_search", "jira_get_issue"]),
            key_id=key_id if i % 3 else None, outcome="error" if draw.random() < 0.2 else "ok",
            duration_ms=None if i % 50 == 7 else round(draw.lognormvariate(3, 1), 3)))
    # Outside the window on both sides: never counted.
    rows += [Row(at=BASE - timedelta(microseconds=1)), Row(at=BASE + 4 * HOUR)]
    return rows


@pytest.fixture
async def written(make_tenant, admin_conn) -> tuple[Any, list[Row]]:
    tenant = await make_tenant()
    return tenant, await write_rows(admin_conn, tenant.id, _rows(tenant.key_id))


async def _usage(api: ApiClient, tenant: Any, **query: Any) -> dict[str, Any]:
    resp = await api.get("/usage?" + urlencode(query), tenant)
    assert resp.status == 200, resp.body
    return resp.data


async def _image(api: ApiClient, path: str, who: Any) -> tuple[int, str, str, bytes]:
    # Not through api.get: its answer is read as text, an image is bytes.
    async with api.client.get(f"/api/v1{path}", headers=who.headers) as resp:
        return (resp.status, resp.headers["Content-Type"], resp.headers.get("Cache-Control", ""),
                await resp.read())


def _figures(rows: list[Row]) -> dict[str, Any]:
    durations = [r.duration_ms for r in rows if r.duration_ms is not None]
    errors = sum(r.outcome == "error" for r in rows)
    return {"calls": len(rows), "errors": errors,
            "error_rate": errors / len(rows) if rows else None,
            **{f"p{p}_ms": percentile_cont(durations, p / 100) for p in (50, 95, 99)}}


def _assert_figures(got: dict[str, Any], rows: list[Row]) -> None:
    expected = _figures(rows)
    assert got["calls"] == expected["calls"] and got["errors"] == expected["errors"]
    for name in ("error_rate", "p50_ms", "p95_ms", "p99_ms"):
        assert got[name] == (None if expected[name] is None
                             else pytest.approx(expected[name], abs=1e-3)), name


def _in(rows: list[Row], since: datetime, until: datetime) -> list[Row]:
    return [r for r in rows if since <= r.at < until]


async def test_figures_per_hour_and_tool_match_python(api: ApiClient, written) -> None:
    tenant, rows = written
    report = await _usage(api, tenant, bucket="hour", **WINDOW)
    starts = [BASE + i * HOUR for i in range(4)]
    assert report["buckets"] == [s.isoformat() for s in starts]
    assert (report["bucket"], report["by"]) == ("hour", "tool")
    inside = _in(rows, BASE, BASE + 4 * HOUR)
    _assert_figures(report["totals"], inside)
    assert [s["name"] for s in report["series"]] == sorted(
        {"jira_search", "jira_get_issue"},
        key=lambda t: -sum(r.tool == t for r in inside))  # busiest first
    for series in report["series"]:
        assert series["tool"] == series["name"] and series["key_id"] is None
        mine = [r for r in inside if r.tool == series["tool"]]
        _assert_figures(series["totals"], mine)
        for i, start in enumerate(starts):
            point = {name: series[name][i] for name in
                     ("calls", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms")}
            _assert_figures(point, _in(mine, start, start + HOUR))


async def test_per_key_series_name_the_key(api: ApiClient, written) -> None:
    tenant, rows = written
    report = await _usage(api, tenant, by="key", bucket="day", **WINDOW)
    assert report["buckets"] == [BASE.replace(hour=0).isoformat()]
    inside = _in(rows, BASE, BASE + 4 * HOUR)
    by_name = {s["name"]: s for s in report["series"]}
    assert set(by_name) == {"test key", "no key"}
    assert by_name["test key"]["key_id"] == str(tenant.key_id)
    assert by_name["no key"]["key_id"] is None and by_name["no key"]["tool"] is None
    _assert_figures(by_name["test key"]["totals"],
                    [r for r in inside if r.key_id == tenant.key_id])
    _assert_figures(by_name["no key"]["totals"], [r for r in inside if r.key_id is None])


async def test_one_tool_or_one_key(api: ApiClient, written) -> None:
    tenant, rows = written
    inside = _in(rows, BASE, BASE + 4 * HOUR)
    report = await _usage(api, tenant, tool="jira_search", **WINDOW)
    [series] = report["series"]
    assert series["tool"] == "jira_search"
    _assert_figures(report["totals"], [r for r in inside if r.tool == "jira_search"])
    report = await _usage(api, tenant, key_id=str(tenant.key_id), tool="jira_get_issue",
                          **WINDOW)
    _assert_figures(report["totals"], [r for r in inside if r.key_id == tenant.key_id
                                       and r.tool == "jira_get_issue"])


async def test_empty_buckets_are_zeros_and_an_empty_window_is_no_series(api: ApiClient,
                                                                       written) -> None:
    tenant, _ = written
    report = await _usage(api, tenant, since="2026-11-02T07:30:00Z",
                          until="2026-11-02T11:00:00Z")
    assert report["buckets"] == [f"2026-11-02T{h:02}:00:00+00:00" for h in (7, 8, 9, 10)]
    for series in report["series"]:
        assert series["calls"][:2] == [0, 0] and series["p95_ms"][:2] == [None, None]
        assert series["error_rate"][:2] == [None, None]
        assert series["calls"][3] > 0
    report = await _usage(api, tenant, since="2025-01-01T00:00:00Z",
                          until="2025-01-02T00:00:00Z")
    assert report["series"] == [] and len(report["buckets"]) == 24
    assert report["totals"] == {"calls": 0, "errors": 0, "error_rate": None, "p50_ms": None,
                                "p95_ms": None, "p99_ms": None}


async def test_the_default_window_is_whole_buckets_up_to_until(api: ApiClient, tenant) -> None:
    for bucket, stride, count in (("hour", HOUR, 24), ("day", 24 * HOUR, 30)):
        report = await _usage(api, tenant, bucket=bucket)
        assert len(report["buckets"]) == count, bucket
        assert report["buckets"][0] == report["since"]  # the first bucket is a whole one
        last = datetime.fromisoformat(report["buckets"][-1])
        assert last < datetime.fromisoformat(report["until"]) <= last + stride
    report = await _usage(api, tenant, until="2026-11-02T10:00:00Z")
    assert report["since"] == "2026-11-01T10:00:00+00:00" and len(report["buckets"]) == 24


@pytest.mark.parametrize(("query", "message"), [
    ({"bucket": "week"}, "invalid query for GET /api/v1/usage: /bucket: 'week' is not one of "
                         "['hour', 'day']"),
    ({"by": "user"}, "invalid query for GET /api/v1/usage: /by: 'user' is not one of "
                     "['tool', 'key']"),
    ({"since": "2026-11-02"}, "since must be an RFC 3339 time with an offset, such as "
                              "2026-12-07T06:00:00Z, not '2026-11-02'"),
    ({"until": "soon"}, "until must be an RFC 3339 time with an offset"),
    ({"since": "2026-11-02T10:00:00Z", "until": "2026-11-02T10:00:00Z"},
     "until (2026-11-02T10:00:00+00:00) must be after since (2026-11-02T10:00:00+00:00)"),
    ({"since": "2999-01-01T00:00:00Z"},
     "since (2999-01-01T00:00:00+00:00) must be before until"),
    ({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
     "the window from since to until holds 744 hour buckets, more than 400: narrow it or ask "
     "for bucket=day"),
    ({"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z", "bucket": "day"},
     "the window from since to until holds 2192 day buckets, more than 400: narrow it"),
    ({"key_id": "k1"}, "key_id must be a key's id (a UUID), not 'k1'"),
    ({"tool": ""}, "invalid query for GET /api/v1/usage: /tool: '' should be non-empty"),
])
async def test_refusals_say_what_is_wrong(api: ApiClient, tenant, query: dict[str, str],
                                          message: str) -> None:
    resp = await api.get("/usage?" + urlencode(query), tenant)
    assert resp.status == 400, resp.body
    assert resp.error["code"] == "VALIDATION_ERROR"
    assert message in resp.error["message"]


async def test_the_largest_window_is_served(api: ApiClient, tenant) -> None:
    report = await _usage(api, tenant, since="2026-01-01T00:00:00Z",
                          until="2026-01-17T16:00:00Z")  # 400 hours
    assert len(report["buckets"]) == 400


async def test_another_tenants_calls_are_never_counted(api: ApiClient, written, make_tenant,
                                                       admin_conn) -> None:
    tenant, rows = written
    other = await make_tenant(name="other")
    await write_rows(admin_conn, other.id, [
        Row(at=BASE + timedelta(minutes=m), key_id=other.key_id, tool="their_tool",
            duration_ms=1000.0) for m in range(30)])
    report = await _usage(api, tenant, **WINDOW)
    _assert_figures(report["totals"], _in(rows, BASE, BASE + 4 * HOUR))
    assert "their_tool" not in str(report)
    # Their key counts nothing here, by tool or by key.
    for by in ("tool", "key"):
        report = await _usage(api, tenant, key_id=str(other.key_id), by=by, **WINDOW)
        assert report["series"] == [] and report["totals"]["calls"] == 0
    report = await _usage(api, other, **WINDOW)
    assert [s["name"] for s in report["series"]] == ["their_tool"]
    assert report["totals"]["calls"] == 30


async def test_charts_of_usage_are_images_drawn_from_the_tenants_calls_only(
        api: ApiClient, written, make_tenant, admin_conn) -> None:
    tenant, _ = written
    path = "/usage/charts/{}.{}?" + urlencode(WINDOW)
    images = {}
    for chart in ("calls", "errors", "latency"):
        status, kind, cache, png = await _image(api, path.format(chart, "png"), tenant)
        assert (status, kind) == (200, "image/png") and cache.startswith("private")
        assert image.imread(io.BytesIO(png), format="png").shape[:2] == (720, 1280)
        status, kind, _, svg = await _image(api, path.format(chart, "svg"), tenant)
        assert (status, kind) == (200, "image/svg+xml") and b"<svg" in svg
        images[chart] = svg
    # Drawing is deterministic: another tenant's calls in the same window change nothing.
    other = await make_tenant(name="other")
    await write_rows(admin_conn, other.id, [
        Row(at=BASE + timedelta(minutes=m), key_id=other.key_id, tool="their_tool",
            outcome="error", duration_ms=5000.0) for m in range(0, 240, 3)])
    for chart, before in images.items():
        assert (await _image(api, path.format(chart, "svg"), tenant))[3] == before, chart


async def test_usage_chart_refusals(api: ApiClient, tenant) -> None:
    resp = await api.get("/usage/charts/pie.png", tenant)
    assert resp.status == 404
    assert resp.error["message"] == "no chart 'pie'; the charts are calls, errors, latency"
    resp = await api.get("/usage/charts/calls.gif", tenant)
    assert resp.status == 404 and resp.error["message"].startswith("no image format 'gif'")
    resp = await api.get("/usage/charts/calls.svg?bucket=week", tenant)
    assert resp.status == 400 and "/bucket: 'week' is not one of" in resp.error["message"]
    # An empty window still draws (a chart that says so).
    status, _, _, svg = await _image(api, "/usage/charts/latency.svg?since=2025-01-01T00:00:00Z&"
                                          "until=2025-01-02T00:00:00Z", tenant)
    assert status == 200 and b"<svg" in svg


def test_many_series_fold_into_one_within_what_a_chart_draws() -> None:
    buckets = [BASE + i * HOUR for i in range(400)]
    series = [{"name": f"key {n}", "calls": [n] * 400, "errors": [1] * 400,
               "p50_ms": [1.0] * 400, "p95_ms": [2.0] * 400} for n in range(80, 0, -1)]
    report = {"buckets": buckets, "series": series, "by": "key", "bucket": "hour",
              "since": buckets[0], "until": buckets[-1] + HOUR}
    data = usage_chart_data(report, "calls")
    assert len(data["rows"]) <= MAX_ROWS
    names = list(dict.fromkeys(row["name"] for row in data["rows"]))
    assert names[:3] == ["key 80", "key 79", "key 78"] and names[-1] == "other keys"
    assert len(names) == MAX_ROWS // 400
    other = [row for row in data["rows"] if row["name"] == "other keys"]
    assert other[0]["calls"] == sum(range(1, 80 - len(names) + 2))
    assert other[0]["p95_ms"] is None
    assert data["title"] == "Calls per hour, by key"
    assert data["since"] == "2026-11-02 10:00 UTC"


def test_every_metrics_chart_has_a_title() -> None:
    assert set(CHART_TITLES) == set(METRICS_CHARTS)
