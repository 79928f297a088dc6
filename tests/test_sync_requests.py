"""The requests a sync spends (issue 17): each source's history read in bulk where its API allows
it, counted by the fakes as the real APIs charge; the request rate an instance keeps to, set per
instance and checked."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from spiral_mcp.config import SETTINGS
from spiral_mcp.sources import manage
from spiral_mcp.sources.asana import AsanaAdapter
from spiral_mcp.sources.base import Ref
from spiral_mcp.sources.jira import JiraAdapter
from spiral_mcp.sources.secrets import SecretBox
from tests.conftest import LOOPBACK_SETTING
from tests.fake_asana import FakeAsana
from tests.fake_github import FakeGitHub
from tests.fake_jira import FakeJira

BOX = SecretBox(b"x" * 43 + b"=")
FAST = {"backoff": 0.01, "max_backoff": 0.05, "rate": 1000.0, "timeout": 5.0}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# A third of what one token may spend an hour: 5,000 REST requests, and apart from them 5,000
# GraphQL points.
GITHUB_BUDGET = 5000 / 3


async def _add(admin_conn: asyncpg.Connection, queries, tenant_id: uuid.UUID, *, kind: str,
               base_url: str, projects: dict[str, str], token: str, email: str | None = None,
               rate: float | None = None) -> uuid.UUID:
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind=kind,
            name=f"{kind} {os.urandom(3).hex()}", base_url=base_url, projects=projects,
            token=token, email=email, rate=rate)


async def _scalar(conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str) -> Any:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetchval(sql)


# --- GitHub: issues and their timelines in bulk through GraphQL -------------------------------
def _github_repository(fake: FakeGitHub, count: int) -> tuple[int, int]:
    """``count`` issues a minute apart, every 20th with a long history (60 comments, closed and
    reopened 15 times), the rest a few of each, and a pull request per ten; (comments, moves)."""
    comments = moves = 0
    for n in range(1, count + 1):
        long = n % 20 == 0
        said, reopens, closed = (60, 15, False) if long else (n % 4, n % 3, n % 2 == 0)
        fake.add_issue("octo/web", title=f"Issue {n}", updated=T0 + timedelta(minutes=n),
                       comments=said, reopens=reopens, state="closed" if closed else "open",
                       state_reason="completed" if closed else None)
        comments, moves = comments + said, moves + 2 * reopens + closed
        if n % 10 == 0:
            fake.add_issue("octo/web", title=f"PR {n}", updated=T0 + timedelta(minutes=n),
                           pull_request=True, comments=2)
    return comments, moves


async def test_a_github_backfill_of_10000_issues_fits_a_third_of_a_tokens_hour(
        serve_fake, make_tenant, admin_conn, app_conn, queries) -> None:
    """600 issues, 5% with timelines longer than the page that comes with each: the sync
    spends no REST request, and GraphQL points at a rate that makes 10,000 issues cost less than
    a third of the 5,000 a token has an hour (before issue 17: 1,840 REST requests per 1,000
    issues, a list page per 100 and an events and a comments request per issue). A re-sync
    after 10% changed spends a tenth of that. Every comment and move arrives."""
    github = await serve_fake(FakeGitHub())
    comments, moves = _github_repository(github, 600)
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, kind="github",
                           base_url=github.base_url, projects={"octo/web": "WEB"},
                           token=github.token)
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert progress.items == 600
    assert await _scalar(app_conn, tenant.id, "SELECT count(*) FROM comments") == comments
    assert await _scalar(app_conn, tenant.id,
                         "SELECT count(*) FROM work_item_transitions") == moves
    spent = github.charges()
    assert spent["rest"] == 0
    per_issue = spent["graphql_points"] / 600
    assert per_issue * 10_000 <= GITHUB_BUDGET, spent
    # Pages of 100 issues at 3 points, and a follow-up of the long timelines of each page.
    assert spent["graphql_points"] == 7 * 3 + 7 * 1

    later = T0 + timedelta(days=2)
    for k, n in enumerate(range(1, 601, 10)):  # 60 changed: a title, a comment or a state
        number = n + (n - 1) // 10  # numbers count the pull requests too
        github.update_issue("octo/web", number, at=later + timedelta(minutes=k),
                            **({"title": "Edited"}, {"comment": "More"},
                               {"state": "closed", "state_reason": "completed"})[k % 3])
    before = github.charges()
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    assert (progress.items, progress.changed) == (61, 60)  # and the one at the old cursor
    resync = {key: github.charges()[key] - before[key] for key in before}
    # One page, and the rest of the timeline of Issue 600, read again at the old cursor.
    assert resync == {"requests": 2, "rest": 0, "graphql_points": 3 + 1}


# --- Jira: changelogs in bulk -----------------------------------------------------------------
@pytest.fixture
async def jira(serve_fake) -> FakeJira:
    return await serve_fake(FakeJira(inline_comments=20, inline_histories=40))


def _jira_issues(fake: FakeJira, count: int, *, long_every: int) -> dict[str, int]:
    """``count`` issues; every ``long_every``-th moved 45 times (more than the 40 histories a
    search answers) with a summary edit between moves, the others twice. Key -> moves."""
    made: dict[str, int] = {}
    for n in range(1, count + 1):
        key = f"ABC-{n}"
        hops = 45 if n % long_every == 0 else 2
        path = tuple(("In Progress", "To Do")[m % 2] for m in range(hops))
        issue = fake.add_issue(key, summary=f"Issue {n}", updated=T0 + timedelta(minutes=n),
                               status=path[-1], moves=path)
        if hops > 2:  # a change of another field: a history bulkfetch leaves out
            histories = fake.histories[issue["id"]]
            histories.insert(1, {
                "id": f"s{issue['id']}", "author": {"displayName": "Editor"},
                "created": histories[0]["created"],
                "items": [{"field": "summary", "fieldtype": "jira", "fieldId": "summary",
                           "fromString": "Old", "toString": f"Issue {n}"}]})
        made[key] = hops
    return made


async def test_jira_cloud_reads_histories_cut_short_in_one_bulk_request(
        jira: FakeJira) -> None:
    """A page of 100 issues, 25 of them with more history than the search answers: one
    ``changelog/bulkfetch`` of their 25 ids (status changes only) brings their whole status
    history, in two pages (1,125 histories, 1,000 a page), instead of 25 requests per issue
    (before issue 17: a ``GET issue/{id}/changelog`` each)."""
    made = _jira_issues(jira, 100, long_every=4)
    adapter = JiraAdapter(jira.base_url, email=jira.email, token=jira.token,
                          projects={"ABC": "ABC"}, **FAST)
    items = {i.key: i for page in [p async for p in adapter.pages(since=None)] for i in page.items}
    await adapter.close()
    assert {key: len(item.transitions) for key, item in items.items()} == made
    long = items["ABC-4"].transitions
    assert [t.to_status for t in long[:3]] == ["In Progress", "To Do", "In Progress"]
    assert [t.at for t in long] == sorted(t.at for t in long)
    bulk = jira.bulk_reads
    assert len(bulk) == 2 and bulk[0]["fieldIds"] == ["status"]
    assert sorted(bulk[0]["issueIdsOrKeys"], key=int) == sorted(
        (jira.find(key)["id"] for key, hops in made.items() if hops > 40), key=int)
    assert bulk[1]["nextPageToken"] and bulk[1]["issueIdsOrKeys"] == bulk[0]["issueIdsOrKeys"]
    assert not [path for _, path in jira.log if path.endswith("/changelog")]
    # myself, status, one search page, two bulk pages.
    assert jira.charges() == {"requests": 5}


async def test_jira_a_read_back_issue_cut_short_is_read_whole_too(jira: FakeJira) -> None:
    """A write reads its issue back with ``expand=changelog``; a history longer than that
    answer comes by the same bulk read."""
    _jira_issues(jira, 4, long_every=4)
    issue = jira.find("ABC-4")
    assert issue is not None
    adapter = JiraAdapter(jira.base_url, email=jira.email, token=jira.token,
                          projects={"ABC": "ABC"}, **FAST)
    item = await adapter.update(Ref(issue["id"], "ABC-4", "ABC"), {"title": "Renamed"})
    await adapter.close()
    assert item.title == "Renamed" and len(item.transitions) == 45
    assert jira.log.count(("POST", "/rest/api/3/changelog/bulkfetch")) == 1


async def test_jira_server_answers_whole_changelogs_and_is_asked_nothing_more(
        serve_fake) -> None:
    jira = await serve_fake(FakeJira(server=True, inline_comments=20))
    made = _jira_issues(jira, 100, long_every=4)
    adapter = JiraAdapter(jira.base_url, email=None, token=jira.token, projects={"ABC": "ABC"},
                          **FAST)
    items = [i async for page in adapter.pages(since=None) for i in page.items]
    await adapter.close()
    assert {i.key: len(i.transitions) for i in items} == made
    assert jira.charges() == {"requests": 3}  # myself, status, one search page


# --- Asana: stories per task, the listing with what it can carry ------------------------------
async def test_asana_reads_a_tasks_stories_with_one_request_a_task(serve_fake) -> None:
    """Asana has no bulk read of stories (its batch API charges each action as a request): a
    sync lists the tasks with every field it maps (``opt_fields``), 100 a page, then asks each
    task's stories once, and nothing else."""
    asana = FakeAsana()
    asana.add_project("1204567890123456", "Design")
    for n in range(1, 251):
        asana.add_task("1204567890123456", f"Task {n}", modified=T0 + timedelta(minutes=n),
                       comments=n % 5, moves=n % 3, completed=n % 3 == 1)
    await serve_fake(asana, path="/api/1.0")
    adapter = AsanaAdapter(asana.base_url, token=asana.token,
                           projects={"1204567890123456": "DES"}, **FAST)
    adapter.use_keys([], {"DES": 1})
    items = [i async for page in adapter.pages(since=None) for i in page.items]
    await adapter.close()
    assert len(items) == 250 and sum(len(i.comments) for i in items) == sum(
        n % 5 for n in range(1, 251))
    assert asana.charges() == {"requests": 3 + 250}
    listings = [q for (_, path), q in zip(asana.log, asana.queries, strict=True)
                if path == "/tasks"]
    assert len(listings) == 3 and all("custom_fields.enum_value.name" in q["opt_fields"]
                                      for q in listings)
    assert {path.rpartition("/")[2] for _, path in asana.log if path != "/tasks"} == {"stories"}


# --- the request rate ---------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "kind", "expected"), [
    ("2.5", "asana", 2.5), ("150/min", "asana", 2.5), ("1500/min", "asana", 25.0),
    ("5000/h", "github", 5000 / 3600), ("15/s", "github", 15.0), (" 7 ", "jira", 7.0),
    ("1/min", "jira", 1 / 60), ("100", "jira", 100.0),
])
def test_a_rate_is_read_a_second_a_minute_or_an_hour(raw: str, kind: str,
                                                       expected: float) -> None:
    assert manage.parse_rate(raw, manage.adapter_class(kind)) == pytest.approx(expected)


@pytest.mark.parametrize(("raw", "says"), [
    ("fast", "--rate 'fast': expected requests a second (like 2.5), or a number a minute or an "
             "hour (like 150/min or 5000/h)"),
    ("-1", "expected requests a second"), ("2,5", "expected requests a second"),
    ("150 per minute", "expected requests a second"), ("10/day", "expected requests a second"),
    ("1500", "--rate '1500' is 1500 requests a second, more than the 100 any source allows (a "
             "rate a minute is written like 150/min); the default for asana is 2.5 a second: "
             "Asana allows 150 requests a minute on a free domain"),
    ("0", "--rate '0' is less than one request a minute"),
    ("30/h", "less than one request a minute, at which a sync would take hours"),
])
def test_a_bad_rate_is_one_clear_line(raw: str, says: str) -> None:
    with pytest.raises(manage.SourceAdminError) as info:
        manage.parse_rate(raw, manage.adapter_class("asana"))
    assert says in str(info.value) and "\n" not in str(info.value)


async def test_an_instance_keeps_to_its_own_rate_or_its_kinds_default(
        serve_fake, make_tenant, admin_conn, queries) -> None:
    github = await serve_fake(FakeGitHub())
    github.repos["octo/web"] = True
    tenant = await make_tenant()
    own = await _add(admin_conn, queries, tenant.id, kind="github", base_url=github.base_url,
                     projects={"octo/web": "WEB"}, token=github.token, rate=20.0)
    kinds = {kind: await _add(admin_conn, queries, tenant.id, kind=kind,
                              base_url=github.base_url, projects={ref: "K" + kind.upper()},
                              token="t", email="e@x.io" if kind == "jira" else None)
             for kind, ref in (("github", "octo/api"), ("jira", "ABC"),
                               ("asana", "1204567890123456"))}
    async with admin_conn.transaction():
        rows = {key: await manage.find_source(admin_conn, queries, source_id)
                for key, source_id in [("own", own), *kinds.items()]}
    assert orjson.loads(rows["own"]["config"])["rate"] == 20.0
    assert "rate" not in orjson.loads(rows["jira"]["config"])
    rates = {}
    for key, row in rows.items():
        adapter = manage.make_adapter(row, BOX)
        rates[key] = adapter.rate
        await adapter.close()
    assert rates == {"own": 20.0, "github": 15.0, "jira": 5.0, "asana": 2.5}
    # The client keeps to it: a request starts 1/20 s after the one before at the earliest.
    adapter = manage.make_adapter(rows["own"], BOX)
    started = time.monotonic()
    for _ in range(3):
        await adapter.check()  # GET /user, GET /repos/octo/web
    elapsed = time.monotonic() - started
    await adapter.close()
    assert len(github.log) == 6 and elapsed >= 5 / 20
    # A client option (the tests' own, say) goes first.
    fast = manage.make_adapter(rows["own"], BOX, rate=1000.0)
    assert fast.rate == 1000.0
    await fast.close()


@pytest.fixture
def source_cli(database_urls, tmp_path: Path):
    """``await source_cli("set", ...)``: ``spiral-mcp source ...`` as the operator runs it."""
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env |= {"ADMIN_DATABASE_URL": database_urls.admin, "SPIRAL_DATA_DIR": str(tmp_path),
            "SPIRAL_SECRET_KEY": "x" * 43 + "=", "ASANA_TOKEN": "1/2:pat",
            "SOURCE_PRIVATE_NETWORKS": LOOPBACK_SETTING}  # the fakes are on loopback

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spiral_mcp", "source", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    return run


async def test_cli_sets_an_instances_rate_on_add_and_set(make_tenant, admin_conn, queries,
                                                         source_cli) -> None:
    tenant = await make_tenant()
    code, out, err = await source_cli(
        "add", "--tenant", str(tenant.id), "--kind", "asana", "--name", "design",
        "--project", "1204567890123456=DES", "--token-env", "ASANA_TOKEN", "--rate", "1500/min")
    assert code == 0, err
    source_id = out.strip()

    async def rate() -> Any:
        async with admin_conn.transaction():
            row = await manage.find_source(admin_conn, queries, uuid.UUID(source_id))
        return orjson.loads(row["config"]).get("rate")

    assert await rate() == 25.0
    code, out, err = await source_cli("set", source_id, "--rate", "5000/h")
    assert (code, orjson.loads(out)) == (0, {"rate": 5000 / 3600}), err
    assert await rate() == 5000 / 3600 and "sync" not in err
    code, out, err = await source_cli("set", source_id, "--rate", "default")
    assert (code, orjson.loads(out)) == (0, {"rate": 2.5}), err
    assert await rate() is None
    code, out, err = await source_cli("set", source_id, "--rate", "1500")
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert "--rate '1500' is 1500 requests a second, more than the 100" in err
    assert await rate() is None
    code, out, err = await source_cli(
        "add", "--tenant", str(tenant.id), "--kind", "github", "--name", "octo",
        "--project", "octo/web=WEB", "--token-env", "ASANA_TOKEN", "--rate", "soon")
    assert (code, out) == (1, "") and "--rate 'soon': expected requests a second" in err
