"""Differential test of the explorer's two walls against PostgreSQL itself.

A seeded generator writes queries that mix what has let a name mean something else before:
aliases used again, shadowed names, joins with and without aliases, LATERAL and plain subqueries,
set-returning functions in FROM, CTEs, field selection, and columns named after functions. For
each query PostgreSQL can read, an oracle independent of both walls asks PostgreSQL what it made
of it: it stores the query as a temporary view (as the owner, in a transaction rolled back) and
reads the view's definition back as PostgreSQL renders it (``t.f`` that is a call reads
``f(t.t)``), parsed with pglast. Every function, operator and relation there must be on the
allowlist whenever the validator accepts the query, and whenever the check of PostgreSQL's own
reading (explorer.resolved) accepts it. DIFFERENTIAL_SEED repeats a run;
DIFFERENTIAL_QUERIES sets how many queries are tried.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
from pglast import parser as pg_parser

from spiral_mcp.errors import ServiceError
from spiral_mcp.explorer.allowlist import FUNCTIONS, SQL_VALUE_FUNCTIONS, WRAPPED

SEED = int(os.environ.get("DIFFERENTIAL_SEED") or random.SystemRandom().randrange(2**32))
COUNT = int(os.environ.get("DIFFERENTIAL_QUERIES") or 6000)

VIEWS = {
    "work_items": ("id", "key", "title", "assignee", "labels", "custom_fields", "created_at"),
    "comments": ("id", "work_item_id", "body", "author"),
    "projects": ("project_key", "name", "lead"),
}
# One-argument functions PostgreSQL would call for x.name, by the kind of x: none allowed.
FORBIDDEN = {
    "text": ("current_setting", "to_regclass", "to_regtype", "pg_get_viewdef"),
    "int": ("pg_stat_get_live_tuples", "pg_try_advisory_lock", "pg_backend_pid"),
    "row": ("pg_typeof", "pg_column_size"),
}
ALLOWED = {"text": ("upper", "md5", "length"), "int": ("abs",), "row": ("row_to_json",)}
ALIASES = ("t", "u", "s", "j", "w")
COLUMN_NAMES = ("current_setting", "to_regclass", "pg_stat_get_live_tuples", "pg_typeof",
                "upper", "key", "n")
SCALARS = {"text": ("unnest(ARRAY['server_version', 'public.api_keys'])",
                    "unnest(ARRAY['app.tenant_id'])"),
           "int": ("generate_series(1, 2)", "unnest(ARRAY[1, 2])")}


@dataclass
class Gen:
    """One query's worth of choices. ``kinds`` remembers what each alias last named (text or
    int for a scalar FROM item, else the row's columns), which is what the query is likely to
    mean by it; reuse of the few aliases makes it mean something else often enough."""

    rng: random.Random
    kinds: dict[str, object] = field(default_factory=dict)

    def pick(self, options):
        return self.rng.choice(list(options))

    def alias(self, kind: object) -> str:
        name = self.pick(ALIASES)
        self.kinds[name] = kind
        return name

    def value(self) -> str:
        return self.pick(["'server_version'", "1", "'x'", "2::int8", "now()::text"])

    def name_ref(self) -> str:
        """A qualified name or a field selection: the places a name became a call."""
        if not self.kinds:
            return self.value()
        owner = self.pick(self.kinds)
        kind = self.kinds[owner]
        if isinstance(kind, tuple):
            member = self.pick(kind) if self.rng.random() < 0.6 else self.pick(
                FORBIDDEN["row"] + ALLOWED["row"] + FORBIDDEN["text"][:1])
        else:
            member = self.pick(FORBIDDEN[kind] + ALLOWED[kind] + FORBIDDEN["row"])
        return self.pick([f"{owner}.{member}", f"({owner}.*).{member}", f"({owner}).{member}",
                          f"{owner}.{member}"])

    def expr(self, depth: int) -> str:
        roll = self.rng.random()
        if depth <= 0 or roll < 0.4:
            return self.name_ref() if self.rng.random() < 0.85 else self.value()
        if roll < 0.75:
            inner = self.from_list(depth - 1)  # first, so that the names may be its own
            return f"(SELECT {self.expr(depth - 1)} FROM {inner} LIMIT 1)"
        if roll < 0.85:
            return f"{self.pick(ALLOWED['text'])}({self.expr(depth - 1)}::text)"
        return f"coalesce({self.expr(depth - 1)}::text, 'x')"

    def subquery(self, depth: int) -> tuple[str, tuple[str, ...]]:
        names = tuple(dict.fromkeys(self.pick(COLUMN_NAMES) for _ in range(2)))
        tail = f" FROM {self.from_list(depth - 1)}" if depth > 0 and self.rng.random() < 0.5 else ""
        values = ", ".join(f"{self.expr(0) if tail else self.value()} AS {n}" for n in names)
        return f"SELECT {values}{tail}", names

    def trap(self) -> str:
        """An item that reuses a name in scope, with a column named after a function that the
        outer item could be the argument of, where PostgreSQL does not let the item be seen."""
        owner = self.pick(self.kinds)
        kind = self.kinds[owner]
        name = self.pick(FORBIDDEN[kind] if isinstance(kind, str) else FORBIDDEN["row"])
        inner = f"(SELECT 'x' AS {name}) {owner}"
        self.kinds[owner] = (name,)  # what a reader of the query would take it for
        return self.pick([
            f"({inner} CROSS JOIN (SELECT 1) q) AS {self.pick(ALIASES)}",
            f"{inner}, (SELECT {owner}.{name} AS n) q",
            f"{inner}, (SELECT 1) p JOIN (SELECT 1) q ON {owner}.{name} IS NOT NULL",
            f"{inner}, LATERAL (SELECT {owner}.{name} AS n) q",
        ])

    def from_item(self, depth: int) -> str:
        roll = self.rng.random()
        if roll < 0.12 and self.kinds:
            return self.trap()
        if roll < 0.2:
            view = self.pick(VIEWS)
            return f"{view} {self.alias(VIEWS[view])}"
        if roll < 0.45:
            lateral = "LATERAL " if self.rng.random() < 0.3 else ""
            sql, names = self.subquery(depth)
            return f"{lateral}({sql}) {self.alias(names)}"
        if roll < 0.65:
            kind = self.pick(SCALARS)
            return f"{self.pick(SCALARS[kind])} {self.alias(kind)}"
        if roll < 0.7:
            return ("jsonb_to_record('{\"current_setting\": \"server_version\"}'::jsonb) "
                    f"AS {self.alias(('current_setting', 'n'))}(current_setting text, n int)")
        if depth <= 0:
            kind = self.pick(SCALARS)
            return f"{self.pick(SCALARS[kind])} {self.alias(kind)}"
        left, right = self.from_item(depth - 1), self.from_item(depth - 1)
        join = self.pick(["CROSS JOIN", "JOIN", "LEFT JOIN"])
        on = "" if join == "CROSS JOIN" else f" ON {self.expr(0)} IS NOT NULL"
        joined = f"{left} {join} {right}{on}"
        if self.rng.random() < 0.4:
            return f"({joined}) AS {self.pick(ALIASES)}"
        return joined

    def from_list(self, depth: int) -> str:
        return ", ".join(self.from_item(depth) for _ in range(self.rng.randint(1, 2)))

    def query(self) -> str:
        with_clause = ""
        if self.rng.random() < 0.25:
            sql, names = self.subquery(1)
            name = self.pick(ALIASES)
            with_clause = f"WITH {name} AS ({sql}) "
            self.kinds[name] = names  # read as a view of these columns
        from_list = self.from_list(2)
        targets = ", ".join(self.expr(2) for _ in range(self.rng.randint(1, 2)))
        where = f" WHERE {self.expr(1)} IS NOT NULL" if self.rng.random() < 0.3 else ""
        return f"{with_clause}SELECT {targets} FROM {from_list}{where}"


async def deparsed(owner: asyncpg.Connection, sql: str) -> str | None:
    """PostgreSQL's own rendering of what it made of ``sql`` (a temporary view's definition,
    where ``t.f`` that is a call reads ``f(t.t)``); None when it cannot read the query."""
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("SET LOCAL search_path = explorer, pg_catalog")
        await owner.execute(f"CREATE TEMP VIEW spiral_oracle AS SELECT FROM ({sql}) AS q")
        return await owner.fetchval("SELECT pg_get_viewdef('pg_temp.spiral_oracle'::regclass)")
    except asyncpg.PostgresError:
        return None
    finally:
        await transaction.rollback()


def disallowed(definition: str) -> list[str]:
    """The functions, operators and relations in PostgreSQL's rendering of a query that the
    explorer does not allow (read with pglast, not with either wall's code)."""
    found: list[str] = []
    stack: list[Any] = [orjson.loads(pg_parser.parse_sql_json(definition))]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        if "FuncCall" in node:
            names = [n["String"]["sval"] for n in node["FuncCall"]["funcname"]]
            schemas = ([], ["explorer"]) if names[-1] in WRAPPED else ([], ["pg_catalog"])
            if names[-1] not in FUNCTIONS or names[:-1] not in schemas:
                found.append(".".join(names))
        if "A_Expr" in node or "SubLink" in node:
            body = node.get("A_Expr") or node["SubLink"]
            names = [n["String"]["sval"] for n in body.get("name") or body.get("operName") or []]
            if names[:-1] not in ([], ["pg_catalog"]):
                found.append("operator " + ".".join(names))
        if "SQLValueFunction" in node and node["SQLValueFunction"]["op"] not in \
                SQL_VALUE_FUNCTIONS:
            found.append(node["SQLValueFunction"]["op"])
        if "RangeVar" in node and node["RangeVar"].get("schemaname") not in (None, "explorer"):
            found.append(node["RangeVar"]["relname"])
    return found


@pytest.mark.slow
async def test_what_the_explorer_accepts_uses_only_what_it_allows(explorer, admin_conn,
                                                                  make_tenant) -> None:
    tenant = await make_tenant()
    rng = random.Random(SEED)
    allowed = explorer.resolution
    readable = accepted = checked = forbidden = 0
    for _ in range(COUNT):
        sql = Gen(rng).query()
        definition = await deparsed(admin_conn, sql)
        if definition is None:
            continue  # PostgreSQL cannot read it: nothing to run
        readable += 1
        bad = disallowed(definition)
        forbidden += bool(bad)
        try:
            explorer.validator.check(sql)
            accepted += 1
            assert not bad, f"DIFFERENTIAL_SEED={SEED}: the validator let through {bad}: {sql}"
        except ServiceError:
            pass
        async with explorer.bound(tenant.id) as conn:
            try:
                await allowed.check(conn, explorer.queries, sql, time_limit=5)
                checked += 1
                assert not bad, f"DIFFERENTIAL_SEED={SEED}: the second check let through " \
                                f"{bad}: {sql}"
            except ServiceError:
                pass
            except asyncpg.PostgresError:
                pass  # as the explorer role it may not read (a column it has no grant on)
    print(f"DIFFERENTIAL_SEED={SEED}: {COUNT} queries, {readable} readable, {forbidden} reaching "
          f"a function or operator not allowed, {accepted} accepted by the validator, {checked} "
          "by the check of PostgreSQL's reading")
    # The run must have had teeth: queries that would call what is not allowed, and enough
    # accepted ones for a wrong acceptance to have shown.
    assert forbidden >= COUNT // 50, f"DIFFERENTIAL_SEED={SEED}: too few dangerous queries"
    assert accepted >= COUNT // 20 and checked >= COUNT // 20, \
        f"DIFFERENTIAL_SEED={SEED}: too few accepted queries ({accepted}, {checked})"
