"""What an OAuth access token costs against an API key on the product's request path (issue #19).

``python -m bench.bench_oauth`` starts one product server (``spiral-mcp serve``, as bench/run.py
does) with OAUTH_ISSUERS and OAUTH_RESOURCE set, beside an authorization server the bench serves
itself over HTTP on loopback (tests/fake_issuer.py: metadata and a JWKS of an RSA key; tokens
RS256, signed with PyJWT) bound to the bench tenant. wrk then drives the same ``POST /execute``
tools/call jira_get_issue at it, interleaved round by round, with three credentials:

- ``api-key``: ``Authorization: Bearer spk_...`` (the reference);
- ``oauth``: one JWT for every request, the steady state of a client (the verified token and its
  tenant come from the server's caches after the first request);
- ``oauth-cold``: a different JWT each request (from a list made beforehand, longer than the
  server's caches hold), so every request pays the signature check and the tenant lookup a token's
  first use pays.

It prints calls/s, p50, p99 and CPU per call of each, and their ratios to the API key's (of the
medians, and paired by round). When a token path costs more than 10% at the highest concurrency
it profiles that path and the API key's with py-spy. Results go to
``bench/results/<timestamp>-oauth.json``. See bench/README.md, "OAuth".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bench.run import (
    PRODUCT_DB,
    PRODUCT_ENV,
    RESULTS,
    Server,
    Target,
    _paired,
    free_port,
    interleave,
    log,
    machine,
    profile,
    run_wrk,
    side_options,
    side_run,
    start_server,
    summarize,
)
from spiral_mcp.oauth import bindings
from spiral_mcp.queries import Queries
from spiral_mcp.roles import OWNER_ROLE, url_for_role
from tests.fake_issuer import FakeIssuer

REFERENCE = "api-key"
# A token path costing more than this share of the API key's calls/s is profiled.
PROFILE_BELOW = 0.9
# Longer than the server's caches of verified tokens and of tenant resolutions (10,000 entries
# each): a token comes round again only after more than that many others have pushed it out.
DEFAULT_TOKENS = 15_000


@contextlib.contextmanager
def serve_issuer(issuer: FakeIssuer) -> Iterator[None]:
    """``issuer`` served over HTTP on loopback from a thread of its own, while inside."""
    port = free_port()
    issuer.base = f"http://127.0.0.1:{port}"
    issuer.url = issuer.base + issuer.path
    with serve_in_thread(issuer.app(), port, name="issuer"):
        yield


@contextlib.contextmanager
def serve_in_thread(app: web.Application, port: int, *, name: str) -> Iterator[None]:
    """``app`` served over HTTP on loopback ``port`` from a thread of its own, while inside."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


async def bind_issuer(superuser_url: str, issuer: str) -> uuid.UUID:
    """Bind ``issuer`` whole to the tenant of the bench's API key (as ``spiral-mcp oauth bind``
    does, on the owner's connection); that tenant's id."""
    conn = await asyncpg.connect(url_for_role(superuser_url, OWNER_ROLE, database=PRODUCT_DB))
    try:
        tenant_id = await conn.fetchval("SELECT tenant_id FROM api_keys WHERE name = 'bench'")
        await bindings.bind(conn, Queries.load(), tenant_id=tenant_id, issuer=issuer)
    finally:
        await conn.close()
    return tenant_id


def make_tokens(issuer: FakeIssuer, resource: str, count: int, lifetime: float) -> list[str]:
    """``count`` access tokens of one user, each with its own ``jti`` (so its own signature and
    claims), read scope, valid for ``lifetime`` seconds."""
    exp = int(time.time() + lifetime)
    return [issuer.token(aud=resource, exp=exp, scope="spiral:read", jti=uuid.uuid4().hex)
            for _ in range(count)]


def ratios(runs: list[dict[str, Any]], rows: list[dict[str, Any]],
           levels: list[int]) -> list[dict[str, Any]]:
    """Each token path against the API key at each concurrency: calls/s (of the medians, and
    paired by round) and CPU per call (of the medians)."""
    out = []
    for c in levels:
        mine = {r["target"]: r for r in rows if r["concurrency"] == c}
        ref = mine.get(REFERENCE)
        for name in ("oauth", "oauth-cold"):
            row = mine.get(name)
            if row is None or ref is None:
                continue
            out.append({
                "concurrency": c, "target": name,
                "rps_ratio": round(row["rps"] / ref["rps"], 3),
                "rps_ratio_paired": _paired(runs, name, REFERENCE, c),
                "cpu_ratio": round(row["cpu_us_per_call"] / ref["cpu_us_per_call"], 3)
                if ref["cpu_us_per_call"] else None,
                "cpu_us_extra": round(row["cpu_us_per_call"] - ref["cpu_us_per_call"]),
            })
    return out


def print_table(rows: list[dict[str, Any]], compared: list[dict[str, Any]]) -> None:
    by = {(r["concurrency"], r["target"]): r for r in compared}
    head = (f"{'conc':>4}  {'target':<11} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'CPU us':>7} {'/key':>6} {'paired':>6} {'CPU/key':>7} {'bad':>4}   runs (calls/s)")
    print(head)
    print("-" * len(head))
    last = None
    for row in rows:
        if last is not None and row["concurrency"] != last:
            print()
        last = row["concurrency"]
        vs = by.get((row["concurrency"], row["target"]), {})

        def cell(field: str, width: int, vs: dict[str, Any] = vs) -> str:
            value = vs.get(field)
            return f"{value:>{width}.2f}" if value is not None else " " * width

        print(f"{row['concurrency']:>4}  {row['target']:<11} {row['rps']:>8,.0f} "
              f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['cpu_us_per_call']:>7,.0f} "
              f"{cell('rps_ratio', 6)} {cell('rps_ratio_paired', 6)} {cell('cpu_ratio', 7)} "
              f"{row['bad_answers']:>4}   " + ", ".join(f"{r:,.0f}" for r in row["runs"]))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_oauth",
                                description=__doc__.split("\n")[0])
    side_options(p, concurrency="1,16,64")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS,
                   help="distinct tokens the cold path turns through (default 15,000: more "
                        "than the server's caches hold; ~1 ms each to sign)")
    p.add_argument("--profile", type=int, default=int(os.environ.get("BENCH_PROFILE", 10)),
                   help="seconds of py-spy (c=16) on a token path costing more than 10%% at "
                        "the highest concurrency, and on the API key's; 0: none")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    run = side_run(args, "oauth")
    anchors, levels, stamp, workdir = run.anchors, run.levels, run.stamp, run.workdir
    superuser_url, runtime_url, api_key, keys = (run.superuser_url, run.runtime_url,
                                                 run.api_key, run.keys)

    issuer = FakeIssuer(path="/bench")
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    rounds = len(levels) * args.repeats * 3
    # Valid through the whole run, with room: an expired token would be refused, not measured.
    lifetime = 3600 + rounds * (args.duration + 5)
    server: Server | None = None
    with serve_issuer(issuer):
        tenant_id = asyncio.run(bind_issuer(superuser_url, issuer.url))
        log(f"issuer {issuer.url} bound to tenant {tenant_id}; signing {args.tokens:,} tokens")
        t0 = time.monotonic()
        warm = make_tokens(issuer, resource, 1, lifetime)[0]
        cold = make_tokens(issuer, resource, args.tokens, lifetime)
        log(f"  signed in {time.monotonic() - t0:.1f} s")
        tokens_file = workdir / "tokens.txt"
        tokens_file.write_text("\n".join(cold) + "\n")
        try:
            env = {**PRODUCT_ENV, "DATABASE_URL": runtime_url, "LOG_LEVEL": args.log_level,
                   "OAUTH_ISSUERS": issuer.url, "OAUTH_RESOURCE": resource}
            server = start_server("product", [sys.executable, "-m", "spiral_mcp", "serve"], env,
                                  port, workdir)
            url = f"http://127.0.0.1:{port}/execute"
            common = {"BODY_KIND": "mcp", "ARG": "issue_key"}
            targets = [
                Target(REFERENCE, "product", url, {**common, "AUTH": api_key}, server),
                Target("oauth", "product", url, {**common, "AUTH": warm}, server),
                # AUTH is the first token, for prime(); wrk's requests take the others in turn.
                Target("oauth-cold", "product", url,
                       {**common, "AUTH": cold[0], "TOKENS_FILE": str(tokens_file),
                        "TOKENS_START": "1"}, server),
            ]
            runs, prof, busy = measure(args, targets, levels, anchors, keys, stamp)
        finally:
            if server is not None:
                server.stop()
            tokens_file.unlink()

    rows = summarize(runs, targets, levels)
    compared = ratios(runs, rows, levels)
    print()
    print(f"spiral-mcp OAuth benchmark, {stamp}: POST /execute tools/call jira_get_issue, one "
          f"server, wrk -t1, {args.duration:g} s x {args.repeats} interleaved rounds, medians; "
          "machine " + (f"{busy:.0%}" if busy is not None else "?") + " busy before the load")
    print()
    print_table(rows, compared)
    for p in prof:
        print(f"\nprofile of {p['target']}, {p['mode']} samples ({p['samples']}, "
              f"{p['rps_while_profiling']:,.0f} calls/s while sampled; stacks in "
              f"{p['collapsed']}), by part of the request path:")
        for g, pct in p["groups"]:
            print(f"  {pct:5.1f}%  {g}")
        print("by innermost product function:")
        for f, pct in p["by_product_function"][:15]:
            print(f"  {pct:5.1f}%  {f}")
        print("own time:")
        for f, pct in p["own"][:12]:
            print(f"  {pct:5.1f}%  {f}")
    result = {
        "timestamp": stamp,
        "machine": machine(),
        "config": {"nice": args.nice, "duration_s": args.duration, "repeats": args.repeats,
                   "concurrency": levels, "tenants": args.tenants, "items": args.items,
                   "tokens": args.tokens, "log_level": args.log_level,
                   "product_env": PRODUCT_ENV, "algorithm": issuer.keys[0].alg},
        "cpu_busy_before": busy, "summary": rows, "vs_api_key": compared, "runs": runs,
        "profile": prof,
    }
    out = RESULTS / f"{stamp}-oauth.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {out}  (server log: {workdir})")


def measure(args: argparse.Namespace, targets: list[Target], levels: list[int], anchors: Path,
            keys: str, stamp: str
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float | None]:
    """The interleaved runs, then the profiles a costly token path calls for."""
    cold = next(t for t in targets if t.name == "oauth-cold")

    def drive(target: Target, c: int, duration: float) -> dict[str, Any]:
        run = run_wrk(target, c, duration, anchors, keys)
        if target is cold:
            # The next run starts past every token this one may have sent (wrk's own duration
            # runs a little over; connections still in flight), so no token is sent twice
            # within the list's length.
            start = int(cold.env["TOKENS_START"])
            cold.env["TOKENS_START"] = str(start + math.ceil(run["rps"] * (duration + 1)) + 2 * c)
        return run

    runs, busy = interleave(targets, levels, args.repeats, args.duration, drive)

    top = max(levels)
    costly = [t for t in targets if t.name != REFERENCE
              and (_paired(runs, t.name, REFERENCE, top) or 1) < PROFILE_BELOW]
    prof: list[dict[str, Any]] = []
    if args.profile and costly:
        reference = next(t for t in targets if t.name == REFERENCE)
        for t in [reference, *costly]:
            log(f"profiling {t.name} with py-spy for {args.profile} s (c=16)")
            for gil in (False, True):
                kind = "gil" if gil else "wall"
                p = profile(t, anchors, keys, args.profile,
                            RESULTS / f"{stamp}-oauth-profile-{t.name}-{kind}", gil=gil)
                if p is None:
                    continue
                prof.append(p)
                if t is cold:
                    start = int(cold.env["TOKENS_START"])
                    cold.env["TOKENS_START"] = str(
                        start + math.ceil(p["rps_while_profiling"] * (args.profile + 1)) + 32)
    elif args.profile:
        log(f"no token path below {PROFILE_BELOW:.0%} of the API key's calls/s at c={top}: "
            "no profile")
    return runs, prof, busy


if __name__ == "__main__":
    main()
