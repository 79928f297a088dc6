"""SQL report templates: the file format's checks, and every built-in report run as the runtime
role against a small hand-built dataset whose figures are worked out by hand in each test.

Time: T0 is today's midnight (UTC) and ``at(k, h)`` is k days before T0 plus h hours; day k is
[at(k), at(k - 1)). No event is later than day 1, so none lies in the future whatever the hour of
the run. Figures that run until now() use ``x``, the days from T0 to the report transaction's
now(), read in that same transaction. Percentiles are PostgreSQL's percentile_cont: over sorted
values v0..v(n-1), percentile p sits at position (n - 1) * p, interpolated linearly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from jsonschema import Draft202012Validator

from spiral_mcp.templates import (
    Template,
    TemplateError,
    builtin_directory,
    load_templates,
    run_template,
)

CATEGORY = {"To Do": "todo", "In Progress": "in_progress", "Blocked": "blocked",
            "In Review": "in_review", "Done": "done", "Cancelled": "cancelled"}
DEV = "dev@example.com"
OPS = "ops@example.com"
REP = "rep@example.com"

Move = tuple[str | None, str, dt.datetime, str]  # from status, to status, when, actor


@dataclasses.dataclass(frozen=True)
class Item:
    key: str
    title: str
    status: str
    created: dt.datetime
    moves: tuple[Move, ...] = ()
    priority: str = "medium"
    assignee: str | None = None
    labels: tuple[str, ...] = ()
    description: str | None = None

    @property
    def updated(self) -> dt.datetime:
        return self.moves[-1][2] if self.moves else self.created

    @property
    def resolved(self) -> dt.datetime | None:
        # Done and Cancelled both carry resolved_at: the reports must tell them apart.
        return self.updated if CATEGORY[self.status] in ("done", "cancelled") else None


def today_midnight() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def tenant_a_items(t0: dt.datetime) -> dict[str, list[Item]]:
    """The main tenant. Lead (created -> resolved) and cycle (first move into a started status:
    In Progress, Blocked or In Review -> resolved) times in days are noted per resolved item."""

    def at(days: float, hours: float = 0) -> dt.datetime:
        return t0 - dt.timedelta(days=days) + dt.timedelta(hours=hours)

    def life(created: dt.datetime, *steps: tuple[str, dt.datetime, str]) -> tuple[Move, ...]:
        moves: list[Move] = [(None, "To Do", created, REP)]
        for to_status, when, actor in steps:
            moves.append((moves[-1][1], to_status, when, actor))
        return tuple(moves)

    alpha = [
        # lead 10-5 = 5, cycle 9-5 = 4; resolved day 5
        Item("ALPHA-1", "Dashboard loads slowly", "Done", at(10),
             life(at(10), ("In Progress", at(9), DEV), ("Done", at(5), DEV)),
             priority="high", assignee=DEV, labels=("team-a",),
             description="Charts take ten seconds."),
        # lead 8-3.5 = 4.5, cycle 7-3.5 = 3.5; resolved day 4 (at 12:00)
        Item("ALPHA-2", "Login fails on Safari", "Done", at(8),
             life(at(8), ("In Progress", at(7), DEV), ("In Review", at(4), DEV),
                  ("Done", at(4, 12), OPS)),
             assignee=OPS, labels=("team-b",)),
        # lead 5-2 = 3, cycle 4-2 = 2; resolved day 2
        Item("ALPHA-3", "Export report to CSV", "Done", at(5),
             life(at(5), ("In Progress", at(4), OPS), ("Done", at(2), OPS)),
             priority="low", assignee=OPS, labels=("team-a",)),
        # lead 3-1 = 2, cycle 2.5-1 = 1.5; resolved day 1
        Item("ALPHA-4", "Rotate API keys", "Done", at(3),
             life(at(3), ("In Progress", at(3, 12), OPS), ("Done", at(1), OPS)),
             assignee=OPS, labels=("team-b",)),
        # cancelled on day 2, with resolved_at set: never counted as resolved
        Item("ALPHA-5", "Old migration plan", "Cancelled", at(4),
             life(at(4), ("In Progress", at(3), DEV), ("Cancelled", at(2), DEV)),
             assignee=DEV, labels=("team-a",)),
        Item("ALPHA-6", "Flaky build", "Blocked", at(12),
             life(at(12), ("In Progress", at(11), DEV), ("Blocked", at(6, 6), DEV)),
             priority="critical", assignee=DEV,
             description="The dashboard widgets flicker during the build."),
        Item("ALPHA-7", "Write onboarding guide", "To Do", at(2), life(at(2)),
             priority="high", assignee=DEV),
        # previous period: lead 13-9 = 4, resolved day 9
        Item("ALPHA-8", "Upgrade runtime", "Done", at(13),
             life(at(13), ("In Progress", at(12), OPS), ("Done", at(9), OPS)), assignee=OPS),
        # no recorded transition at all: in progress since its creation
        Item("ALPHA-9", "Cache warmup", "In Progress", at(20), (), assignee=DEV),
        Item("ALPHA-10", "Tidy logs", "To Do", at(1, 3), life(at(1, 3)),
             priority="low", assignee=DEV),
    ]
    beta = [
        # history starts without a creation record; lead 4-3 = 1, never in progress
        Item("BETA-1", "Dashboard loads fast on mobile", "Done", at(4),
             (("To Do", "Done", at(3), OPS),), assignee=OPS),
        Item("BETA-2", "Payment retries", "In Progress", at(14),
             life(at(14), ("In Progress", at(13), DEV), ("To Do", at(12), DEV),
                  ("In Progress", at(10), DEV)),
             priority="high", assignee=DEV),
        Item("BETA-3", "Billing copy", "To Do", at(1), life(at(1)), priority="none",
             assignee=DEV),
    ]
    return {"ALPHA": alpha, "BETA": beta}


def tenant_b_items(t0: dt.datetime) -> dict[str, list[Item]]:
    """Another tenant with the same project keys, item keys, titles and people: any leak would
    change tenant A's figures."""

    def at(days: float) -> dt.datetime:
        return t0 - dt.timedelta(days=days)

    return {
        "ALPHA": [
            Item("ALPHA-1", "Dashboard loads slowly", "Done", at(3),
                 ((None, "To Do", at(3), REP), ("To Do", "In Progress", at(2), DEV),
                  ("In Progress", "Done", at(1), DEV)),
                 priority="critical", assignee=DEV, labels=("team-a",)),
            Item("ALPHA-2", "Login fails on Safari", "In Progress", at(30),
                 ((None, "To Do", at(30), REP), ("To Do", "In Progress", at(29), DEV)),
                 priority="critical", assignee=DEV, labels=("team-b",)),
            Item("ALPHA-3", "Flaky build", "Blocked", at(6),
                 ((None, "To Do", at(6), REP), ("To Do", "Blocked", at(5), DEV)),
                 priority="high", assignee=DEV),
        ],
        "BETA": [
            Item("BETA-1", "Dashboard loads everywhere", "Done", at(5),
                 ((None, "To Do", at(5), REP), ("To Do", "In Progress", at(4), DEV),
                  ("In Progress", "Done", at(2), DEV)),
                 assignee=DEV, labels=("team-a",)),
        ],
    }


async def seed(conn: asyncpg.Connection, tenant_id: uuid.UUID, label: str,
               projects: dict[str, list[Item]]) -> None:
    """Insert as the owner, inside a transaction scoped to the tenant (RLS binds the owner too)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        for project_key, items in projects.items():
            await conn.execute(
                "INSERT INTO projects (tenant_id, project_key, name) VALUES ($1, $2, $3)",
                tenant_id, project_key, f"{label} {project_key}")
            for item in items:
                item_id = await conn.fetchval(
                    """INSERT INTO work_items (tenant_id, key, project_key, number, title,
                           description, status, status_category, priority, assignee, labels,
                           created_at, updated_at, resolved_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                       RETURNING id""",
                    tenant_id, item.key, project_key, int(item.key.split("-")[1]), item.title,
                    item.description, item.status, CATEGORY[item.status], item.priority,
                    item.assignee, list(item.labels), item.created, item.updated, item.resolved)
                for from_status, to_status, when, actor in item.moves:
                    await conn.execute(
                        """INSERT INTO work_item_transitions (tenant_id, work_item_id,
                               from_status, to_status, from_category, to_category, actor,
                               transitioned_at)
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                        tenant_id, item_id, from_status, to_status,
                        CATEGORY[from_status] if from_status else None, CATEGORY[to_status],
                        actor, when)


@dataclasses.dataclass(frozen=True)
class World:
    t0: dt.datetime
    a: uuid.UUID  # the dataset of the hand-worked figures
    b: uuid.UUID  # conflicting data under the same keys
    empty: uuid.UUID  # no data at all


@pytest.fixture
async def world(make_tenant, admin_conn: asyncpg.Connection) -> World:
    t0 = today_midnight()
    tenants = [await make_tenant(name=name) for name in ("A", "B", "empty")]
    await seed(admin_conn, tenants[0].id, "A", tenant_a_items(t0))
    await seed(admin_conn, tenants[1].id, "B", tenant_b_items(t0))
    return World(t0, tenants[0].id, tenants[1].id, tenants[2].id)


@pytest.fixture(scope="session")
def templates() -> dict[str, Template]:
    return {t.name: t for t in load_templates()}


@dataclasses.dataclass(frozen=True)
class Report:
    result: dict[str, Any]
    x: float  # days from T0 to the report's now()

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.result["rows"]

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows]


async def report(conn: asyncpg.Connection, world: World, tenant_id: uuid.UUID,
                 template: Template, **arguments: Any) -> Report:
    """Validate the arguments as the tool registry will, then run as the server does: the
    runtime role, a read-only transaction scoped to the tenant."""
    Draft202012Validator(template.input_schema).validate(arguments)
    async with conn.transaction(readonly=True):
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        now = await conn.fetchval("SELECT now()")
        result = await run_template(conn, template, arguments)
    orjson.dumps(result)  # JSON-ready, as promised
    return Report(result, (now - world.t0).total_seconds() / 86400)


def day(world: World, days_ago: int) -> str:
    return (world.t0.date() - dt.timedelta(days=days_ago)).isoformat()


# --- the built-in templates ----------------------------------------------------------------------

def test_builtin_templates_load(templates: dict[str, Template]) -> None:
    assert sorted(templates) == [
        "sql_get_issue_history", "sql_get_project_metrics", "sql_get_user_workload",
        "sql_lead_time_metrics", "sql_search_issues_by_project", "sql_search_issues_by_text",
    ]
    for template in templates.values():
        Draft202012Validator.check_schema(template.input_schema)
        assert template.input_schema["additionalProperties"] is False
        # Every property binds a placeholder but chart, which asks for a picture.
        assert tuple(p for p in template.input_schema["properties"]
                     if not (template.chart and p == "chart")) == template.params
        assert template.title and template.description and template.row_cap > 0
        assert Path(template.origin).parent == builtin_directory()
    assert templates["sql_search_issues_by_project"].input_schema["required"] == ["project_key"]
    assert "required" not in templates["sql_lead_time_metrics"].input_schema
    assert {name: t.chart for name, t in templates.items() if t.chart} == {
        "sql_get_project_metrics": "daily_flow", "sql_lead_time_metrics": "weekly_delivery"}
    assert templates["sql_lead_time_metrics"].input_schema["properties"]["chart"]["default"] \
        is False


def test_descriptions_say_what_is_rounded_and_how_percentiles_are_computed(
    templates: dict[str, Template],
) -> None:
    """The definitions (the report catalogue, which each description points to) say what a
    rounded figure is rounded to, and how a percentile is found (percentile_cont interpolates
    between values; percentile_disc would not)."""
    for template in templates.values():
        assert "resource spiral://reports" in template.description, template.name
        text = " ".join(template.definitions.split())
        if "round(" in template.sql:
            assert re.search(r"rounded to 0\.0*1\b", text), template.name
            assert "half away from zero" in text, template.name
        if "percentile_cont" in template.sql:
            assert "interpolated linearly" in text and "(n - 1) * p" in text, template.name
        assert "percentile_disc" not in template.sql, template.name


async def test_search_issues_by_project(app_conn, world: World, templates) -> None:
    t = templates["sql_search_issues_by_project"]
    # Newest update first: ALPHA-10 (T0-21h), 4 (day 1 start), 7/5/3 (all at(2): newest
    # created first), 2 (at(3.5)), 1 (at(5)), 6 (at(5.75)), 8 (at(9)), 9 (at(20)).
    everything = await report(app_conn, world, world.a, t, project_key="ALPHA")
    assert everything.column("key") == [f"ALPHA-{n}" for n in (10, 4, 7, 5, 3, 2, 1, 6, 8, 9)]
    assert everything.result["truncated"] is False and everything.result["row_count"] == 10
    first = everything.rows[6]
    assert first["labels"] == ["team-a"] and first["status_category"] == "done"
    assert first["created_at"] == (world.t0 - dt.timedelta(days=10)).isoformat()
    assert first["resolved_at"] == (world.t0 - dt.timedelta(days=5)).isoformat()
    types = {c["name"]: c["type"] for c in everything.result["columns"]}
    assert types["labels"] == "text[]" and types["created_at"] == "timestamptz"

    # One status (bound as a one-item list) by name, case-insensitive.
    done = await report(app_conn, world, world.a, t, project_key="ALPHA", status="done")
    assert done.column("key") == ["ALPHA-4", "ALPHA-3", "ALPHA-2", "ALPHA-1", "ALPHA-8"]
    # A list mixing a category (blocked) and a status name (To Do).
    mixed = await report(app_conn, world, world.a, t, project_key="ALPHA",
                         status=["blocked", "to do"])
    assert mixed.column("key") == ["ALPHA-10", "ALPHA-7", "ALPHA-6"]
    mine = await report(app_conn, world, world.a, t, project_key="ALPHA",
                        assignee="DEV@example.com")
    assert mine.column("key") == [f"ALPHA-{n}" for n in (10, 7, 5, 1, 6, 9)]
    high = await report(app_conn, world, world.a, t, project_key="ALPHA", priority="high")
    assert high.column("key") == ["ALPHA-7", "ALPHA-1"]
    three = await report(app_conn, world, world.a, t, project_key="ALPHA", limit=3)
    assert three.column("key") == ["ALPHA-10", "ALPHA-4", "ALPHA-7"]


async def test_search_issues_by_project_breaks_ties_by_creation(
    app_conn, admin_conn, make_tenant, world: World, templates
) -> None:
    """Items updated at one moment come newest (created) first, then by key number; never in
    the order they were stored (TIE-1, stored first, is the newest)."""
    t0 = world.t0
    touched = t0 - dt.timedelta(hours=12)

    def item(number: int, created_days_ago: float) -> Item:
        created = t0 - dt.timedelta(days=created_days_ago)
        return Item(f"TIE-{number}", f"Tie {number}", "To Do", created,
                    ((None, "To Do", touched, REP),))

    tenant = await make_tenant(name="ties")
    await seed(admin_conn, tenant.id, "ties",
               {"TIE": [item(1, 1), item(2, 3), item(3, 2), item(4, 2)]})
    r = await report(app_conn, world, tenant.id, templates["sql_search_issues_by_project"],
                     project_key="TIE")
    assert r.column("key") == ["TIE-1", "TIE-4", "TIE-3", "TIE-2"]
    assert set(r.column("updated_at")) == {touched.isoformat()}


async def test_get_project_metrics(app_conn, world: World, templates) -> None:
    r = await report(app_conn, world, world.a, templates["sql_get_project_metrics"],
                     project_key="ALPHA", days=7)
    # Period: days 6..0. Previous period: days 13..7.
    # created: ALPHA-3 d5, 5 d4, 4 d3, 7 d2, 10 d1 = 5; previous: 8 d13, 6 d12, 1 d10, 2 d8 = 4.
    # resolved (done only; ALPHA-5 is cancelled): 1 d5 (lead 5), 2 d4 (4.5), 3 d2 (3), 4 d1 (2).
    #   leads sorted [2, 3, 4.5, 5]: p50 at 1.5 -> 3 + .5 * 1.5 = 3.75; p90 at 2.7 ->
    #   4.5 + .7 * .5 = 4.85; avg 14.5 / 4 = 3.625. Previous: ALPHA-8 d9, lead 4.
    # WIP at the end of a day (in progress, blocked or in review at the next midnight; a move at
    # exactly midnight belongs to the new day):
    #   d6: 1 (moves to Done at that midnight), 2, 6 (blocked), 9 (no history: in progress) = 4
    #   d5: 2 (to review at that midnight), 6, 9 = 3;  d4: 3, 6, 9 = 3
    #   d3: 3 and 5 (both leave at that midnight), 4, 6, 9 = 5;  d2: 4, 6, 9 = 3
    #   d1: 6, 9 = 2;  d0 (now): 6, 9 = 2;  end of the previous period (d7): 1, 2, 6, 9 = 4
    columns = ("kind", "day", "first_day", "last_day", "created", "resolved", "wip_end_of_day",
               "lead_time_p50_days", "lead_time_p90_days", "lead_time_avg_days")
    got = [tuple(row[c] for c in columns) for row in r.rows]
    assert got == [
        ("period", None, day(world, 6), day(world, 0), 5, 4, 2, 3.75, 4.85, 3.625),
        ("previous_period", None, day(world, 13), day(world, 7), 4, 1, 4, 4.0, 4.0, 4.0),
        ("change", None, None, None, 1, 3, -2, -0.25, 0.85, -0.375),
        ("day", day(world, 6), day(world, 6), day(world, 6), 0, 0, 4, None, None, None),
        ("day", day(world, 5), day(world, 5), day(world, 5), 1, 1, 3, 5.0, 5.0, 5.0),
        ("day", day(world, 4), day(world, 4), day(world, 4), 1, 1, 3, 4.5, 4.5, 4.5),
        ("day", day(world, 3), day(world, 3), day(world, 3), 1, 0, 5, None, None, None),
        ("day", day(world, 2), day(world, 2), day(world, 2), 1, 1, 3, 3.0, 3.0, 3.0),
        ("day", day(world, 1), day(world, 1), day(world, 1), 1, 1, 2, 2.0, 2.0, 2.0),
        ("day", day(world, 0), day(world, 0), day(world, 0), 0, 0, 2, None, None, None),
    ]
    # The default period is 30 days: 30 day rows after the three summary rows.
    default = await report(app_conn, world, world.a, templates["sql_get_project_metrics"],
                           project_key="ALPHA")
    assert len(default.rows) == 33 and default.rows[0]["first_day"] == day(world, 29)


async def test_project_metrics_compare_like_with_like(
    app_conn, admin_conn, make_tenant, world: World, templates
) -> None:
    """Today so far is compared with yesterday until the same time of day, not with all of
    yesterday: what happened yesterday later than now's time of day is not in the previous
    period yet."""
    seeded = dt.datetime.now(dt.UTC)
    yesterday, before = world.t0 - dt.timedelta(days=1), world.t0 - dt.timedelta(days=2)
    # Yesterday, after now's time of day; the last event, at later + step / 2, still before
    # midnight (half the time left at most).
    step = min(dt.timedelta(minutes=10), (world.t0 + dt.timedelta(days=1) - seeded) / 2)
    later = seeded - dt.timedelta(days=1) + step

    def life(*steps: tuple[str | None, str, dt.datetime]) -> tuple[Move, ...]:
        return tuple((status, to, when, DEV) for status, to, when in steps)

    tenant = await make_tenant(name="like")
    await seed(admin_conn, tenant.id, "like", {"LIKE": [
        # created at yesterday's midnight: in the previous period
        Item("LIKE-1", "Early", "To Do", yesterday, life((None, "To Do", yesterday))),
        # created and started yesterday, later than now's time of day: not yet
        Item("LIKE-2", "Late", "In Progress", later, life(
            (None, "To Do", later), ("To Do", "In Progress", later + step / 2))),
        # in progress since the day before, resolved yesterday later than now's time of day:
        # still work in progress at the previous period's end, not resolved in it
        Item("LIKE-3", "Resolved late", "Done", before, life(
            (None, "To Do", before), ("To Do", "In Progress", before),
            ("In Progress", "Done", later))),
    ]})
    r = await report(app_conn, world, tenant.id, templates["sql_get_project_metrics"],
                     project_key="LIKE", days=1)
    columns = ("kind", "first_day", "last_day", "created", "resolved", "wip_end_of_day",
               "lead_time_p50_days")
    assert [tuple(row[c] for c in columns) for row in r.rows] == [
        ("period", day(world, 0), day(world, 0), 0, 0, 1, None),
        ("previous_period", day(world, 1), day(world, 1), 1, 0, 1, None),
        ("change", None, None, -1, 0, 0, None),
        ("day", day(world, 0), day(world, 0), 0, 0, 1, None),
    ]
    ends = [dt.datetime.fromisoformat(row["ends_at"]) for row in r.rows[:2]]
    assert ends[0] >= seeded and ends[0] - ends[1] == dt.timedelta(days=1)
    assert [row["ends_at"] for row in r.rows[2:]] == [None, None]


async def test_search_issues_by_text(app_conn, world: World, templates) -> None:
    t = templates["sql_search_issues_by_text"]
    # word_similarity = the trigram similarity (shared / distinct in either) of the query and the
    # best stretch of the text. "dashboard loads" has 16 trigrams ("  d", " da", "das", "ash",
    # "shb", "hbo", "boa", "oar", "ard", "rd ", "  l", " lo", "loa", "oad", "ads", "ds ").
    # Both titles containing "Dashboard loads" hold all 16: score 1 (ties: latest update first,
    # BETA-1 at(3) before ALPHA-1 at(5)). ALPHA-6's description holds "dashboard" (10 trigrams,
    # no "loads"): 10 / 16 = 0.625, above the 0.6 threshold.
    r = await report(app_conn, world, world.a, t, query="dashboard loads")
    assert [(k, s) for k, s in zip(r.column("key"), r.column("similarity"), strict=True)] == [
        ("BETA-1", 1.0), ("ALPHA-1", 1.0), ("ALPHA-6", 0.625)]
    assert r.rows[2]["title_similarity"] < 0.6 and r.rows[2]["description_similarity"] == 0.625
    assert r.rows[2]["description_excerpt"].startswith("The dashboard widgets")

    # A typo: "dashbord loads" has 15 trigrams ("bor", "ord" instead of "boa", "oar", "ard").
    # Against "Dashboard loads" (16 trigrams) 13 are shared: 13 / (15 + 16 - 13) = 13 / 18.
    # ALPHA-6's best stretch, "  d" .. "hbo", shares 6: 6 / 15 = 0.4, below the threshold.
    typo = await report(app_conn, world, world.a, t, query="dashbord loads",
                        project_keys=["ALPHA"])
    assert typo.column("key") == ["ALPHA-1"]
    assert typo.rows[0]["similarity"] == round(13 / 18, 4)

    limited = await report(app_conn, world, world.a, t, query="dashboard loads", limit=1)
    assert limited.column("key") == ["BETA-1"]


async def test_get_issue_history(app_conn, world: World, templates) -> None:
    t = templates["sql_get_issue_history"]
    r = await report(app_conn, world, world.a, t, issue_key="ALPHA-2")
    columns = ("seq", "from_status", "to_status", "actor", "hours_in_from_status",
               "hours_in_to_status", "is_current", "total_hours_in_to_status")
    now_in_done = round(84 + 24 * r.x, 2)  # since at(4, 12) = T0 - 84 h
    # To Do at(8) for 24 h, In Progress at(7) for 72 h, In Review at(4) for 12 h, then Done.
    assert [tuple(row[c] for c in columns) for row in r.rows] == [
        (1, None, "To Do", REP, None, 24.0, False, 24.0),
        (2, "To Do", "In Progress", DEV, 24.0, 72.0, False, 72.0),
        (3, "In Progress", "In Review", DEV, 72.0, 12.0, False, 12.0),
        (4, "In Review", "Done", OPS, 12.0, pytest.approx(now_in_done, abs=0.011), True,
         pytest.approx(now_in_done, abs=0.011)),
    ]
    assert r.rows[0]["transitioned_at"] == (world.t0 - dt.timedelta(days=8)).isoformat()
    assert set(r.column("issue_key")) == {"ALPHA-2"}

    # The most recent `limit` transitions, still oldest first.
    last_two = await report(app_conn, world, world.a, t, issue_key="ALPHA-2", limit=2)
    assert last_two.column("seq") == [3, 4]

    # A status visited twice: To Do 24 h (at(14) -> at(13)) + 48 h (at(12) -> at(10)) = 72 h;
    # In Progress 24 h + since at(10) until now.
    revisit = await report(app_conn, world, world.a, t, issue_key="BETA-2")
    assert revisit.column("to_status") == ["To Do", "In Progress", "To Do", "In Progress"]
    assert revisit.column("hours_in_to_status")[:3] == [24.0, 24.0, 48.0]
    assert revisit.column("total_hours_in_to_status")[0] == 72.0
    assert revisit.column("total_hours_in_to_status")[2] == 72.0
    assert revisit.rows[3]["total_hours_in_to_status"] == pytest.approx(
        24 + 240 + 24 * revisit.x, abs=0.011)

    # No creation record: the first row's from-stay runs from the creation, at(4) -> at(3).
    no_start = await report(app_conn, world, world.a, t, issue_key="BETA-1")
    assert [(row["from_status"], row["hours_in_from_status"]) for row in no_start.rows] == [
        ("To Do", 24.0)]

    # No recorded transitions, or no such item: no rows.
    for key in ("ALPHA-9", "ALPHA-99"):
        assert (await report(app_conn, world, world.a, t, issue_key=key)).rows == []


async def test_get_user_workload(app_conn, world: World, templates) -> None:
    t = templates["sql_get_user_workload"]
    r = await report(app_conn, world, world.a, t, assignee="DEV@Example.com")
    x = r.x
    # Open items of dev (ALPHA-1 done and ALPHA-5 cancelled are not open), days in status:
    #   ALPHA: 6 critical, blocked since at(6, 6): 5.75 + x; 7 high, since at(2): 2 + x;
    #          9 no history, since creation at(20): 20 + x; 10 low, since at(1, 3): 0.875 + x.
    #          avg (5.75 + 2 + 20 + 0.875) / 4 + x = 7.15625 + x; stale (>= 7 days): 9 only.
    #   BETA:  2 high, in progress since at(10): 10 + x; 3 none, since at(1): 1 + x.
    #          avg 5.5 + x; stale: BETA-2.
    columns = ("project_key", "project_name", "open_items", "critical_or_high_items",
               "stale_items", "avg_days_in_current_status", "max_days_in_current_status",
               "stale_days")
    assert [tuple(row[c] for c in columns) for row in r.rows] == [
        ("ALPHA", "A ALPHA", 4, 2, 1, pytest.approx(7.15625 + x, abs=0.006),
         pytest.approx(20 + x, abs=0.006), 7),
        ("BETA", "A BETA", 2, 1, 1, pytest.approx(5.5 + x, abs=0.006),
         pytest.approx(10 + x, abs=0.006), 7),
    ]
    # Two days: ALPHA-6 (5.75 + x), ALPHA-7 (exactly 2 + x >= 2), ALPHA-9; BETA-2.
    two = await report(app_conn, world, world.a, t, assignee=DEV, stale_days=2)
    assert two.column("stale_items") == [3, 1]
    # Chosen statuses: "blocked" (a category) and "To Do" (a name): ALPHA-6, 7, 10; BETA-3.
    chosen = await report(app_conn, world, world.a, t, assignee=DEV, statuses=["blocked", "To Do"])
    assert [(row["project_key"], row["open_items"], row["critical_or_high_items"])
            for row in chosen.rows] == [("ALPHA", 3, 2), ("BETA", 1, 0)]
    finished = await report(app_conn, world, world.a, t, assignee=DEV, statuses=["done"])
    assert [(row["project_key"], row["open_items"]) for row in finished.rows] == [("ALPHA", 1)]


def week_counts(world: World, days: int, resolved_days_ago: list[int]) -> list[tuple[str, int]]:
    """(Monday, items resolved that week) for every ISO week touching the period."""
    today = world.t0.date()
    monday = today - dt.timedelta(days=days - 1)
    monday -= dt.timedelta(days=monday.weekday())
    weeks: list[tuple[str, int]] = []
    while monday <= today:
        count = sum(1 for k in resolved_days_ago
                    if monday <= today - dt.timedelta(days=k) < monday + dt.timedelta(days=7))
        weeks.append((monday.isoformat(), count))
        monday += dt.timedelta(days=7)
    return weeks


async def test_lead_time_metrics(app_conn, world: World, templates) -> None:
    t = templates["sql_lead_time_metrics"]
    lead = ("resolved", "throughput_per_week", "lead_time_p50_days", "lead_time_p75_days",
            "lead_time_p90_days", "lead_time_p95_days", "lead_time_avg_days")
    cycle = ("cycle_time_items", "cycle_time_p50_days", "cycle_time_p75_days",
             "cycle_time_p90_days", "cycle_time_p95_days", "cycle_time_avg_days")

    # ALPHA, 7 days: leads [2, 3, 4.5, 5] (n - 1 = 3): p50 at 1.5 -> 3.75; p75 at 2.25 ->
    # 4.5 + .25 * .5 = 4.625; p90 at 2.7 -> 4.85; p95 at 2.85 -> 4.925; avg 3.625.
    # Cycles [1.5, 2, 3.5, 4]: p50 2 + .5 * 1.5 = 2.75; p75 3.5 + .25 * .5 = 3.625;
    # p90 3.5 + .7 * .5 = 3.85; p95 3.5 + .85 * .5 = 3.925; avg 11 / 4 = 2.75.
    # Throughput per week: 4 * 7 / 7 = 4.
    r = await report(app_conn, world, world.a, t, project_key="ALPHA", days=7)
    period = r.rows[0]
    assert (period["kind"], period["week_start"], period["first_day"], period["last_day"]) == (
        "period", None, day(world, 6), day(world, 0))
    assert tuple(period[c] for c in lead) == (4, 4.0, 3.75, 4.625, 4.85, 4.925, 3.625)
    assert tuple(period[c] for c in cycle) == (4, 2.75, 3.625, 3.85, 3.925, 2.75)
    weeks = r.rows[1:]
    assert {row["kind"] for row in weeks} == {"week"}
    assert [(row["week_start"], row["resolved"]) for row in weeks] == week_counts(
        world, 7, [5, 4, 2, 1])
    assert weeks[0]["first_day"] == day(world, 6) and weeks[-1]["last_day"] == day(world, 0)

    # Every project: BETA-1 joins (lead 1, never in progress). Leads [1, 2, 3, 4.5, 5]
    # (n - 1 = 4): p50 at 2 -> 3; p75 at 3 -> 4.5; p90 at 3.6 -> 4.8; p95 at 3.8 -> 4.9;
    # avg 15.5 / 5 = 3.1. Cycle figures still over the same four items.
    everywhere = await report(app_conn, world, world.a, t, days=7)
    assert tuple(everywhere.rows[0][c] for c in lead) == (5, 5.0, 3.0, 4.5, 4.8, 4.9, 3.1)
    assert tuple(everywhere.rows[0][c] for c in cycle) == (4, 2.75, 3.625, 3.85, 3.925, 2.75)

    # Label team-a: ALPHA-1 (lead 5, cycle 4) and ALPHA-3 (3, 2); ALPHA-5 is cancelled.
    # Two values a < b: p at a + p * (b - a).
    team = await report(app_conn, world, world.a, t, label="team-a", days=7)
    assert tuple(team.rows[0][c] for c in lead) == (2, 2.0, 4.0, 4.5, 4.8, 4.9, 4.0)
    assert tuple(team.rows[0][c] for c in cycle) == (2, 3.0, 3.5, 3.8, 3.9, 3.0)

    # 14 days brings in ALPHA-8 (day 9, lead 4, cycle 3): leads [2, 3, 4, 4.5, 5], p50 4.
    wider = await report(app_conn, world, world.a, t, project_key="ALPHA", days=14)
    assert (wider.rows[0]["resolved"], wider.rows[0]["lead_time_p50_days"]) == (5, 4.0)
    assert wider.rows[0]["throughput_per_week"] == 2.5  # 5 * 7 / 14


async def test_cycle_time_starts_with_any_started_status(
    app_conn, admin_conn, make_tenant, world: World, templates
) -> None:
    """Work in progress counts Blocked and In Review too: an item that went there first (never
    In Progress) has a cycle time, from its first started move."""
    t0 = world.t0

    def at(days: float) -> dt.datetime:
        return t0 - dt.timedelta(days=days)

    def moves(*steps: tuple[str | None, str, float]) -> tuple[Move, ...]:
        return tuple((before, after, at(when), DEV) for before, after, when in steps)

    tenant = await make_tenant(name="cycle")
    await seed(admin_conn, tenant.id, "cycle", {"CYC": [
        # cycle 5 - 2 = 3: blocked first
        Item("CYC-1", "Blocked first", "Done", at(6), moves(
            (None, "To Do", 6), ("To Do", "Blocked", 5), ("Blocked", "In Review", 4),
            ("In Review", "Done", 2))),
        # cycle 4 - 1 = 3: straight to review, then back to work
        Item("CYC-2", "Review first", "Done", at(5), moves(
            (None, "To Do", 5), ("To Do", "In Review", 4), ("In Review", "In Progress", 3),
            ("In Progress", "Done", 1))),
        # never started: no cycle time
        Item("CYC-3", "Done at once", "Done", at(3), moves(
            (None, "To Do", 3), ("To Do", "Done", 2))),
    ]})
    r = await report(app_conn, world, tenant.id, templates["sql_lead_time_metrics"], days=7)
    period = r.rows[0]
    assert (period["resolved"], period["cycle_time_items"], period["cycle_time_p50_days"],
            period["cycle_time_avg_days"]) == (3, 2, 3.0, 3.0)


async def test_empty_results_are_zeros_and_nulls(app_conn, world: World, templates) -> None:
    metrics = await report(app_conn, world, world.empty, templates["sql_get_project_metrics"],
                           project_key="NOPE", days=3)
    assert [row["kind"] for row in metrics.rows] == ["period", "previous_period", "change",
                                                     "day", "day", "day"]
    for row in metrics.rows:
        assert (row["created"], row["resolved"], row["wip_end_of_day"]) == (0, 0, 0)
        assert row["lead_time_p50_days"] is None and row["lead_time_avg_days"] is None

    lead = await report(app_conn, world, world.a, templates["sql_lead_time_metrics"],
                        label="nobody", days=10)
    assert lead.rows[0]["resolved"] == 0 and lead.rows[0]["throughput_per_week"] == 0
    assert lead.rows[0]["cycle_time_items"] == 0
    assert lead.rows[0]["lead_time_p95_days"] is None
    assert lead.rows[0]["cycle_time_avg_days"] is None
    assert all(row["resolved"] == 0 for row in lead.rows)

    for name, arguments in [
        ("sql_search_issues_by_project", {"project_key": "NOPE"}),
        ("sql_search_issues_by_text", {"query": "zebra quantum"}),
        ("sql_get_issue_history", {"issue_key": "NOPE-1"}),
        ("sql_get_user_workload", {"assignee": "nobody@example.com"}),
    ]:
        r = await report(app_conn, world, world.a, templates[name], **arguments)
        assert r.result["rows"] == [] and r.result["row_count"] == 0
        assert r.result["truncated"] is False and r.result["columns"]


async def test_other_tenants_never_appear(app_conn, world: World, templates) -> None:
    """Tenant A's figures above are exact with tenant B present; here B and an empty tenant see
    only their own (B's figures worked out the same way)."""
    metrics = await report(app_conn, world, world.b, templates["sql_get_project_metrics"],
                           project_key="ALPHA", days=7)
    # B's ALPHA: created 1 (d3) and 3 (d6); resolved 1 (d1, lead 2); WIP now: 2 and 3.
    assert tuple(metrics.rows[0][c] for c in (
        "created", "resolved", "wip_end_of_day", "lead_time_p50_days")) == (2, 1, 2, 2.0)

    text = await report(app_conn, world, world.b, templates["sql_search_issues_by_text"],
                        query="dashboard loads")
    assert sorted(text.column("key")) == ["ALPHA-1", "BETA-1"]
    assert text.column("title") == ["Dashboard loads slowly", "Dashboard loads everywhere"]

    history = await report(app_conn, world, world.b, templates["sql_get_issue_history"],
                           issue_key="ALPHA-2")
    assert history.column("to_status") == ["To Do", "In Progress"]

    workload = await report(app_conn, world, world.b, templates["sql_get_user_workload"],
                            assignee=DEV)
    assert [(row["project_key"], row["project_name"], row["open_items"]) for row in workload.rows
            ] == [("ALPHA", "B ALPHA", 2)]

    lead = await report(app_conn, world, world.b, templates["sql_lead_time_metrics"], days=7)
    # B: ALPHA-1 (lead 2, cycle 1) and BETA-1 (lead 3, cycle 2).
    assert (lead.rows[0]["resolved"], lead.rows[0]["lead_time_avg_days"],
            lead.rows[0]["cycle_time_avg_days"]) == (2, 2.5, 1.5)

    search = await report(app_conn, world, world.b, templates["sql_search_issues_by_project"],
                          project_key="ALPHA")
    assert search.column("key") == ["ALPHA-1", "ALPHA-3", "ALPHA-2"]

    for name, arguments in [
        ("sql_search_issues_by_project", {"project_key": "ALPHA"}),
        ("sql_search_issues_by_text", {"query": "dashboard loads"}),
        ("sql_get_issue_history", {"issue_key": "ALPHA-2"}),
        ("sql_get_user_workload", {"assignee": DEV}),
    ]:
        assert (await report(app_conn, world, world.empty, templates[name], **arguments)).rows == []
    lead_empty = await report(app_conn, world, world.empty, templates["sql_lead_time_metrics"])
    assert all(row["resolved"] == 0 for row in lead_empty.rows)


# --- the runner ----------------------------------------------------------------------------------

HEADER = "-- name: sql_probe\n-- title: Probe\n-- description: A probe.\n"


def write(directory: Path, text: str, name: str = "probe.sql") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


async def test_truncation_defaults_and_json_values(app_conn, world: World, tmp_path: Path) -> None:
    write(tmp_path, HEADER + """-- row_cap: 3
-- param count: {"type": "integer", "minimum": 0, "default": 2}
-- param echo: {"type": "string"}
SELECT g AS n, 1.5::numeric AS ratio, interval '90 minutes' AS span,
       timestamptz '2024-01-02 03:04:05+00' AS at, date '2024-01-02' AS day,
       ARRAY['a', 'b'] AS tags, $2::text AS echo
FROM generate_series(1, $1::int) AS g ORDER BY g
""")
    (probe,) = load_templates(tmp_path)
    five = await report(app_conn, world, world.a, probe, count=5)
    assert five.column("n") == [1, 2, 3]
    assert five.result["row_count"] == 3 and five.result["truncated"] is True
    three = await report(app_conn, world, world.a, probe, count=3, echo="hi")
    assert three.result["truncated"] is False and three.column("echo") == ["hi"] * 3
    defaulted = await report(app_conn, world, world.a, probe)  # count 2, echo NULL
    assert defaulted.result["truncated"] is False
    assert defaulted.rows[0] == {"n": 1, "ratio": 1.5, "span": 5400.0,
                                 "at": "2024-01-02T03:04:05+00:00", "day": "2024-01-02",
                                 "tags": ["a", "b"], "echo": None}
    assert defaulted.result["columns"] == [
        {"name": "n", "type": "int4"}, {"name": "ratio", "type": "numeric"},
        {"name": "span", "type": "interval"}, {"name": "at", "type": "timestamptz"},
        {"name": "day", "type": "date"}, {"name": "tags", "type": "text[]"},
        {"name": "echo", "type": "text"}]
    # JSON Schema counts 2.0 as an integer; it binds as 2.
    assert (await report(app_conn, world, world.a, probe, count=2.0)).column("n") == [1, 2]


async def test_run_needs_a_transaction_and_known_arguments(app_conn, templates) -> None:
    t = templates["sql_search_issues_by_project"]
    with pytest.raises(RuntimeError, match="transaction"):
        await run_template(app_conn, t, {"project_key": "ALPHA"})
    with pytest.raises(TypeError, match="missing required argument 'project_key'"):
        t.bind({})
    with pytest.raises(TypeError, match="unexpected arguments"):
        t.bind({"project_key": "ALPHA", "tenant_id": "x"})
    assert t.bind({"project_key": "ALPHA", "status": "Done"}) == ["ALPHA", ["Done"], None, None, 50]


# --- bad templates -------------------------------------------------------------------------------

ONE = '-- row_cap: 5\n-- param n: {"type": "integer"}\n'
BAD = {
    "two statements": (HEADER + ONE + "SELECT $1::int; SELECT 2", "holds 2 statements"),
    "an insert": (HEADER + ONE + "INSERT INTO projects (next_number) VALUES ($1)",
                  "must be one SELECT, not InsertStmt"),
    "a writing CTE": (HEADER + ONE + "WITH d AS (DELETE FROM projects RETURNING 1) "
                      "SELECT * FROM d WHERE $1 > 0", "contains a DeleteStmt"),
    "select into": (HEADER + ONE + "SELECT $1::int AS n INTO copied", "SELECT INTO"),
    "for update": (HEADER + ONE + "SELECT * FROM projects WHERE next_number = $1 FOR UPDATE",
                   "FOR UPDATE/SHARE"),
    "unused param": (HEADER + ONE + '-- param m: {"type": "string"}\nSELECT $1::int',
                     "never used in the SQL: ['m ($2)']"),
    "undeclared $3": (HEADER + ONE + '-- param m: {"type": "string"}\n'
                      "SELECT $1::int, $2::text, $3::text", "uses $3 but declares 2 parameters"),
    "invalid schema": (HEADER + '-- row_cap: 5\n-- param n: {"type": "strin"}\nSELECT $1::text',
                       "parameter 'n': invalid JSON Schema"),
    "type array": (HEADER + '-- row_cap: 5\n-- param n: {"type": ["string", "null"]}\n'
                   "SELECT $1::text", "parameter 'n': not a form every client accepts: /: type "
                                      "must be one of"),
    "array without items": (HEADER + '-- row_cap: 5\n-- param n: {"type": "array"}\n'
                            "SELECT $1::text[]", "an array needs items"),
    "default against its schema": (
        HEADER + '-- row_cap: 5\n-- param n: {"type": "integer", "minimum": 1, "default": 0}\n'
        "SELECT $1::int", "default fails its schema"),
    "schema not JSON": (HEADER + "-- row_cap: 5\n-- param n: {type: integer}\nSELECT $1::int",
                        "schema is not JSON"),
    "missing name": ("-- title: Probe\n-- description: A probe.\n" + ONE + "SELECT $1::int",
                     "missing '-- name:'"),
    "missing row cap": (HEADER + "SELECT 1", "missing '-- row_cap:'"),
    "bad name": (HEADER.replace("sql_probe", "report_probe") + ONE + "SELECT $1::int",
                 "name 'report_probe'"),
    "unknown field": (HEADER + ONE + "-- owner: me\nSELECT $1::int", "unknown header field"),
    "undeclared required": (HEADER + ONE + "-- required: n, m\nSELECT $1::int",
                            "undeclared parameters ['m']"),
    "syntax error": (HEADER + ONE + "SELEC $1", "does not parse"),
    "no SQL": (HEADER + ONE, "no SQL under the header"),
    "row cap zero": (HEADER + "-- row_cap: 0\nSELECT 1", "row_cap must be between"),
    "unknown chart": (HEADER + ONE + "-- chart: pie\nSELECT $1::int",
                      "chart 'pie' is not one of daily_flow, weekly_delivery"),
    "chart beside a chart parameter": (
        HEADER + "-- row_cap: 5\n-- chart: daily_flow\n-- param chart: {\"type\": \"string\"}\n"
        "SELECT $1::text", "cannot declare a parameter 'chart'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_template_is_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    text, problem = BAD[case]
    path = write(tmp_path, text, name=f"{case.replace(' ', '_').replace('$', '')}.sql")
    with pytest.raises(TemplateError) as caught:
        load_templates(tmp_path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert problem in message, message


def test_duplicate_names_across_directories(tmp_path: Path) -> None:
    first, second = tmp_path / "builtin", tmp_path / "operator"
    first.mkdir()
    second.mkdir()
    write(first, HEADER + "-- row_cap: 5\nSELECT 1")
    clash = write(second, HEADER + "-- row_cap: 5\nSELECT 2", name="other.sql")
    with pytest.raises(TemplateError,
                       match=f"^{re.escape(str(clash))}: template 'sql_probe' is already defined"):
        load_templates(first, second)
    with pytest.raises(TemplateError, match="not a directory"):
        load_templates(tmp_path / "missing")


def test_operator_directory_adds_templates(tmp_path: Path) -> None:
    write(tmp_path, HEADER + "--   It reflows.\n--\n--   More words.\n--   - one\n"
          "-- row_cap: 5\n"
          "-- param q: {\"type\": \"string\",\n--   \"maxLength\": 9}\n-- required: q\n"
          "\n-- After a blank line, comments are SQL.\nSELECT $1::text AS q;\n")
    loaded = {t.name: t for t in load_templates(builtin_directory(), tmp_path)}
    assert len(loaded) == 7
    probe = loaded["sql_probe"]
    assert probe.input_schema["properties"]["q"] == {"type": "string", "maxLength": 9}
    assert probe.input_schema["required"] == ["q"]
    assert probe.row_cap == 5 and probe.params == ("q",)
    assert probe.sql.endswith("SELECT $1::text AS q")
    assert probe.description == "A probe. It reflows.\n\nMore words.\n- one"
