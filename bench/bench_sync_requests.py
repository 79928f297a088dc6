"""The requests a sync spends (issue 17): per 1,000 items, for each source, on a backfill and on a
re-sync after 10% of the items changed, counted by the fakes of ``tests/`` as the real APIs charge.

    .venv/bin/python -m bench.bench_sync_requests                       # 1,000 items per source
    .venv/bin/python -m bench.bench_sync_requests --items 10000 --sources github

Each source's fake (``tests/fake_github.py``, ``fake_jira.py`` Cloud and Server, ``fake_asana.py``)
is served over HTTP in this process with ``--items`` items, the same mix for every source (most
items with a few comments and status moves, some with dozens: see :func:`history`). The adapter
makes the calls ``sync_instance`` makes: ``workflow`` of each mirrored project, then ``pages``
(from nothing for the backfill; from the cursor the backfill leaves, CURSOR_LAG included, for the
re-sync, after ``--changed`` of the items changed: a title, a comment or a status each). The fake
counts what each request costs against the source's own budget: GitHub's REST requests and its
GraphQL points (computed as GitHub does), Jira's and Asana's requests. The store is not written:
what a sync asks its source does not depend on it (tests/test_sync_requests.py runs whole syncs).

Time is not measured: the fakes answer at once. The floor a source's pace puts under a sync is
given instead: its requests at the adapter's request rate. Results: a table on stdout, everything
in ``bench/results/<ts>-sync-requests.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestServer

from bench.run import RESULTS, log
from spiral_mcp.sources.asana import AsanaAdapter
from spiral_mcp.sources.base import Adapter, Item
from spiral_mcp.sources.github import GitHubAdapter
from spiral_mcp.sources.jira import JiraAdapter
from spiral_mcp.sources.sync import CURSOR_LAG
from tests.fake_asana import FakeAsana, asana_time
from tests.fake_github import FakeGitHub
from tests.fake_jira import FakeJira, jira_time

SOURCES = ("github", "jira-cloud", "jira-server", "asana")
REPO, JIRA_PROJECT, ASANA_PROJECT = "octo/web", "ABC", "1204567890123456"
# Fast enough never to wait: the pace is reported, not spent.
NO_WAIT = {"rate": 1_000_000.0, "timeout": 30.0}


def history(rng: random.Random) -> tuple[int, int]:
    """(comments, status moves) of one item: 70% have up to 3 comments, 25% 4-15, 5% 30-80;
    80% up to 3 moves, 15% 4-10, 5% 20-60 (a long-lived item bounced between states)."""
    r = rng.random()
    comments = rng.randint(0, 3) if r < 0.70 else rng.randint(4, 15) if r < 0.95 \
        else rng.randint(30, 80)
    r = rng.random()
    moves = rng.randint(0, 3) if r < 0.80 else rng.randint(4, 10) if r < 0.95 \
        else rng.randint(20, 60)
    return comments, moves


class Bench:
    """One source: its fake, filled; the adapter for one sync; what a change looks like."""

    kind: str
    fake: Any
    path = ""

    def adapter(self) -> Adapter:
        raise NotImplementedError

    def change(self, n: int, at: datetime, rng: random.Random) -> None:
        raise NotImplementedError


class GitHubBench(Bench):
    kind = "github"

    def __init__(self, items: int, t0: datetime, rng: random.Random) -> None:
        self.fake = FakeGitHub()
        for n in range(1, items + 1):
            comments, moves = history(rng)
            at = t0 + timedelta(minutes=n)
            self.fake.add_issue(REPO, title=f"Issue {n}", updated=at, comments=comments,
                                reopens=moves // 2, state="closed" if moves % 2 else "open",
                                state_reason="completed" if moves % 2 else None,
                                labels=("bug",) if n % 3 else ("enhancement", "P2"))
            if n % 10 == 0:  # a repository has pull requests too, in the same list
                self.fake.add_issue(REPO, title=f"PR {n}", updated=at, pull_request=True)
        self.numbers = [i["number"] for i in self.fake.issues[REPO].values()
                        if "pull_request" not in i]

    def adapter(self) -> Adapter:
        return GitHubAdapter(self.fake.base_url, token=self.fake.token,
                             projects={REPO: "WEB"}, **NO_WAIT)

    def change(self, n: int, at: datetime, rng: random.Random) -> None:
        number = self.numbers[n]
        issue = self.fake.issue(REPO, number)
        match n % 3:
            case 0:
                self.fake.update_issue(REPO, number, at=at, title=f"{issue['title']} (edited)")
            case 1:
                self.fake.update_issue(REPO, number, at=at, comment="One more thing")
            case _:
                closed = issue["state"] == "closed"
                self.fake.update_issue(REPO, number, at=at, state="open" if closed else "closed",
                                       state_reason="reopened" if closed else "completed")


class JiraBench(Bench):
    def __init__(self, items: int, t0: datetime, rng: random.Random, *, server: bool) -> None:
        self.kind = "jira-server" if server else "jira-cloud"
        # Jira Cloud's enhanced search answers at most 40 histories inline; 20 comments here.
        self.fake = FakeJira(server=server, inline_comments=20, inline_histories=40,
                             projects={JIRA_PROJECT})
        self.keys = []
        for n in range(1, items + 1):
            comments, moves = history(rng)
            path = tuple(("In Progress", "To Do")[m % 2] for m in range(moves))
            key = f"{JIRA_PROJECT}-{n}"
            self.fake.add_issue(key, summary=f"Issue {n}", updated=t0 + timedelta(minutes=n),
                                status=path[-1] if path else "To Do", comments=comments,
                                moves=path)
            self.keys.append(key)

    def adapter(self) -> Adapter:
        email = None if self.fake.server else self.fake.email
        return JiraAdapter(self.fake.base_url, email=email, token=self.fake.token,
                           projects={JIRA_PROJECT: JIRA_PROJECT}, **NO_WAIT)

    def change(self, n: int, at: datetime, rng: random.Random) -> None:
        key = self.keys[n]
        issue = self.fake.find(key)
        match n % 3:
            case 0:
                self.fake.update_issue(key, at=at, summary=f"Issue {n + 1} (edited)")
            case 1:
                self.fake.comments[issue["id"]].append({
                    "id": f"{issue['id']}c{at.timestamp():.0f}", "author": {"displayName": "Carl"},
                    "body": self.fake.body("One more thing"), "created": jira_time(at),
                    "updated": jira_time(at)})
                self.fake.update_issue(key, at=at)
            case _:
                now = issue["fields"]["status"]["name"]
                self.fake.update_issue(key, at=at,
                                       status="To Do" if now == "In Progress" else "In Progress")


class AsanaBench(Bench):
    kind = "asana"
    path = "/api/1.0"

    def __init__(self, items: int, t0: datetime, rng: random.Random) -> None:
        self.fake = FakeAsana()
        self.fake.add_project(ASANA_PROJECT, "Design")
        self.gids = []
        for n in range(1, items + 1):
            comments, moves = history(rng)
            self.gids.append(self.fake.add_task(
                ASANA_PROJECT, f"Task {n}", modified=t0 + timedelta(minutes=n),
                completed=bool(moves % 2), comments=comments, moves=moves))
        self.stored: list[tuple[str, str, int]] = []

    def adapter(self) -> Adapter:
        adapter = AsanaAdapter(self.fake.base_url, token=self.fake.token,
                               projects={ASANA_PROJECT: "DES"}, **NO_WAIT)
        # The keys the store gave the tasks, as sync_instance teaches them (none at first).
        adapter.use_keys(self.stored, {"DES": len(self.stored) + 1})
        return adapter

    def change(self, n: int, at: datetime, rng: random.Random) -> None:
        gid = self.gids[n]
        match n % 3:
            case 0:
                self.fake.touch(gid, at=at, name=f"Task {n + 1} (edited)")
            case 1:
                self.fake.touch(gid, at=at, comment="One more thing")
            case _:
                self.fake.touch(gid, at=at, completed=not self.fake.tasks[gid]["completed"])
        assert self.fake.tasks[gid]["modified_at"] == asana_time(at)


def make_bench(source: str, items: int, t0: datetime, seed: int) -> Bench:
    rng = random.Random(seed)
    factories: dict[str, Callable[[], Bench]] = {
        "github": lambda: GitHubBench(items, t0, rng),
        "jira-cloud": lambda: JiraBench(items, t0, rng, server=False),
        "jira-server": lambda: JiraBench(items, t0, rng, server=True),
        "asana": lambda: AsanaBench(items, t0, rng),
    }
    return factories[source]()


async def one_sync(bench: Bench, since: datetime | None) -> tuple[list[Item], dict[str, Any]]:
    """The calls of one sync, and what they cost: ``workflow`` per project, then ``pages``."""
    before = bench.fake.charges()
    adapter = bench.adapter()
    try:
        for ref in adapter.projects:  # type: ignore[attr-defined]
            await adapter.workflow(ref)
        items = [item async for page in adapter.pages(since=since) for item in page.items]
        client_requests = adapter.requests
        # The pace the adapter keeps to by default (this run does not wait); 10/s before issue 17.
        rate = getattr(type(adapter), "default_rate", 10.0)
    finally:
        await adapter.close()
    after = bench.fake.charges()
    spent = {key: after[key] - before.get(key, 0) for key in after}
    return items, {**spent, "client_requests": client_requests, "items_read": len(items),
                   "rate": rate}


async def run_source(source: str, items: int, changed: float, seed: int) -> dict[str, Any]:
    t0 = (datetime.now(UTC) - timedelta(days=30)).replace(second=0, microsecond=0)
    bench = make_bench(source, items, t0, seed)
    server = TestServer(bench.fake.app())
    await server.start_server()
    bench.fake.base_url = str(server.make_url(bench.path)).rstrip("/")
    try:
        read, backfill = await one_sync(bench, None)
        assert len({i.source_id for i in read}) == items, f"{source}: backfill read {len(read)}"
        if isinstance(bench, AsanaBench):
            bench.stored = [(i.source_id, i.project_key, i.number) for i in read]
        # The cursor sync_instance saves: the newest update read, never later than CURSOR_LAG
        # before the sync began.
        cursor = min(max(i.updated for i in read), datetime.now(UTC) - CURSOR_LAG)
        rng = random.Random(seed + 1)
        picked = sorted(rng.sample(range(items), round(items * changed)))
        for k, n in enumerate(picked):
            bench.change(n, cursor + timedelta(minutes=k + 1), rng)
        _, resync = await one_sync(bench, cursor)
    finally:
        await server.close()
    runs = {"backfill": backfill, f"re-sync, {changed:.0%} changed": resync}
    for run in runs.values():
        for key in ("requests", "rest", "graphql_points"):
            if key in run:
                run[f"{key}_per_1000"] = round(run[key] * 1000 / items, 1)
        run["seconds_at_rate"] = round(run["requests"] / run["rate"], 1)
    return {"items": items, "changed": len(picked), "runs": runs}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_sync_requests",
                                description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1000, help="items per source (default 1000)")
    p.add_argument("--sources", default=",".join(SOURCES),
                   help=f"comma-separated, of {', '.join(SOURCES)}")
    p.add_argument("--changed", type=float, default=0.1,
                   help="share of the items changed before the re-sync (default 0.1)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--label", default="", help="a name for this run in the results file")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if unknown := set(sources) - set(SOURCES):
        sys.exit(f"unknown sources: {', '.join(sorted(unknown))} (known: {', '.join(SOURCES)})")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {}
    for source in sources:
        log(f"{source}: {args.items:,} items")
        results[source] = asyncio.run(run_source(source, args.items, args.changed, args.seed))
    head = (f"{'source':<12} {'run':<22} {'items read':>10} {'requests':>9} {'/1,000':>7} "
            f"{'REST /1,000':>11} {'GraphQL points /1,000':>21} {'rate /s':>7} "
            f"{'s at rate':>9}")
    print(f"\nrequests a sync spends, {args.items:,} items per source ({stamp})")
    print(head)
    print("-" * len(head))
    for source, result in results.items():
        for name, run in result["runs"].items():
            rest = f"{run['rest_per_1000']:,}" if "rest_per_1000" in run else ""
            points = (f"{run['graphql_points_per_1000']:,}" if "graphql_points_per_1000" in run
                      else "")
            print(f"{source:<12} {name:<22} {run['items_read']:>10,} {run['requests']:>9,} "
                  f"{run['requests_per_1000']:>7,} {rest:>11} {points:>21} {run['rate']:>7g} "
                  f"{run['seconds_at_rate']:>9,}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}-sync-requests.json"
    out.write_text(json.dumps({
        "timestamp": stamp, "label": args.label,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
        "config": vars(args), "sources": results}, indent=2, default=str))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
