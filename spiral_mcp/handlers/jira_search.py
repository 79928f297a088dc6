"""jira_search: JQL in, work items out, keyset-paginated.

The JQL compiler (``spiral_mcp.jql``) gives a WHERE expression with bind placeholders and ORDER BY
expressions, all from its allowlists; this module adds the selected columns (from an allowlist
too), the keyset condition of the cursor and the page size. No value is ever part of SQL text.
The projects and statuses a query names are checked against the tenant's own, read in the
search's transaction (``spiral_mcp.jql.vocabulary``): an unknown one is an error, as in Jira.

Keyset pagination: the cursor carries the sort values of the last row of a page (and its id, the
tiebreaker). The next page starts strictly after that row in the query's own order, with
PostgreSQL's default NULL placement (last when ascending, first when descending), so pages never
skip or repeat a row however the query sorts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from ..errors import ErrorCode, ServiceError
from ..jql import (
    JqlError,
    KnownValues,
    check_known,
    compile_query,
    named_values,
    parse_jql,
)
from ..jql.nodes import Query
from ..tracing import traced_sql
from .context import ToolContext
from .registry import Tool
from .rows import jsonable

__all__ = ["TOOLS"]

# field name -> SQL expression over work_items w (the only columns a caller can ask for)
FIELD_COLUMNS = {
    "key": "w.key",
    "project_key": "w.project_key",
    "summary": "w.title",
    "description": "w.description",
    "type": "w.type",
    "status": "w.status",
    "status_category": "w.status_category",
    "priority": "w.priority",
    "assignee": "w.assignee",
    "reporter": "w.reporter",
    "labels": "w.labels",
    "parent_key": "w.parent_key",
    "created_at": "w.created_at",
    "updated_at": "w.updated_at",
    "resolved_at": "w.resolved_at",
    "due_at": "w.due_at",
    "custom_fields": "w.custom_fields",
    "source": "w.source",
    "source_id": "w.source_id",
    "version": "w.version",
}
DEFAULT_FIELDS = ("key", "summary", "type", "status", "status_category", "priority", "assignee",
                  "labels", "parent_key", "updated_at")
DEFAULT_ORDER = [("w.updated_at", "DESC")]
DEFAULT_ORDER_KINDS = ["timestamp"]
TOTAL_CAP = 5000
# The bounds of the integers a cursor may carry: int4 sort values, the bigint row id.
_INT4 = range(-2**31, 2**31)
_INT8 = range(-2**63, 2**63)


def _fingerprint(jql: str) -> str:
    return hashlib.sha256(jql.encode()).hexdigest()[:16]


def _encode_value(value: Any) -> list[Any]:
    if isinstance(value, datetime):
        return ["ts", value.isoformat()]
    return ["v", value]


def _decode_value(item: Any, kind: str) -> Any:
    """One sort value of a cursor, checked against the kind of its ORDER BY expression: a
    tampered cursor is refused here, not by the driver binding it."""
    tag, value = item
    if value is None:
        return None
    if tag == "ts" and kind == "timestamp" and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is not None:  # as every timestamptz is written
            return moment.astimezone(UTC)
    if tag == "v" and kind == "integer" and type(value) is int and value in _INT4:
        return value
    if tag == "v" and kind == "text" and isinstance(value, str) and "\x00" not in value:
        return value
    raise ValueError("bad cursor value")


def _encode_cursor(jql: str, values: list[Any], last_id: int) -> str:
    payload = {"q": _fingerprint(jql), "v": [_encode_value(v) for v in values], "id": last_id}
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _invalid_cursor() -> ServiceError:
    return ServiceError(ErrorCode.VALIDATION_ERROR, "cursor is not valid",
                        details=[{"path": "/cursor", "message": "not a cursor of this tool"}])


def _decode_cursor(cursor: str, jql: str, kinds: list[str]) -> tuple[list[Any], int]:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        fingerprint, encoded, last_id = payload["q"], payload["v"], payload["id"]
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise _invalid_cursor() from None
    if fingerprint != _fingerprint(jql) or not isinstance(encoded, list) \
            or len(encoded) != len(kinds):
        raise ServiceError(ErrorCode.VALIDATION_ERROR, "cursor belongs to another query",
                           details=[{"path": "/cursor",
                                     "message": "pass the same jql as the call that gave it"}])
    try:
        values = [_decode_value(v, k) for v, k in zip(encoded, kinds, strict=True)]
    except (ValueError, TypeError, OverflowError):
        raise _invalid_cursor() from None
    if type(last_id) is not int or last_id not in _INT8:
        raise _invalid_cursor()
    return values, last_id


def _after(order: list[tuple[str, str]], values: list[Any], last_id: int,
           params: list[Any]) -> str:
    """SQL for "strictly after the row with these sort values", appending the binds to params."""

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    alternatives = []
    equal_so_far: list[str] = []
    for (expression, direction), value in zip(order, values, strict=True):
        if value is None:
            # NULLs come last ascending (nothing non-null is after), first descending.
            after = "FALSE" if direction == "ASC" else f"({expression}) IS NOT NULL"
            same = f"({expression}) IS NULL"
        else:
            placeholder = bind(value)
            after = (f"(({expression}) > {placeholder} OR ({expression}) IS NULL)"
                     if direction == "ASC" else f"({expression}) < {placeholder}")
            same = f"({expression}) = {placeholder}"
        alternatives.append(" AND ".join([*equal_so_far, after]))
        equal_so_far.append(same)
    alternatives.append(" AND ".join([*equal_so_far, f"w.id > {bind(last_id)}"]))
    return "(" + " OR ".join(f"({a})" for a in alternatives) + ")"


def _invalid_jql(exc: JqlError) -> ServiceError:
    return ServiceError(ErrorCode.VALIDATION_ERROR, f"invalid JQL: {exc}",
                        details=[{"path": "/jql", "message": str(exc)}])


async def _check_known(ctx: ToolContext, conn: asyncpg.Connection, query: Query) -> None:
    """Refuse a project or status the tenant does not have, as Jira does (one small read, and
    only when the query names one)."""
    named = named_values(query)
    if not named:
        return
    row = await ctx.database.queries.jql_known_values(
        conn, statuses=[value.text for field, value in named if field == "status"])
    known = KnownValues(tuple(row["projects"]), (*row["statuses"], *row["item_statuses"]))
    try:
        check_known(query, known)
    except JqlError as exc:
        raise _invalid_jql(exc) from None


async def search(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    jql = args.get("jql", "")
    limit = args.get("limit", 50)
    fields = list(dict.fromkeys(["key", *args.get("fields", DEFAULT_FIELDS)]))
    try:
        query = parse_jql(jql)
        compiled = compile_query(query, user=ctx.principal.user, now=datetime.now(UTC))
    except JqlError as exc:
        raise _invalid_jql(exc) from None
    order = compiled.order_by or DEFAULT_ORDER
    kinds = compiled.order_kinds or DEFAULT_ORDER_KINDS
    params = list(compiled.params)
    where = compiled.where
    if cursor := args.get("cursor"):
        values, last_id = _decode_cursor(cursor, jql, kinds)
        where = f"({where}) AND {_after(order, values, last_id, params)}"
    sort_columns = ", ".join(f"{expr} AS _s{i}" for i, (expr, _) in enumerate(order))
    order_sql = ", ".join(f"{expr} {direction}" for expr, direction in order)
    select = ", ".join(f"{FIELD_COLUMNS[f]} AS {f}" for f in fields)
    page_sql = (f"SELECT w.id AS _id, {sort_columns}, {select} FROM work_items w "
                f"WHERE {where} ORDER BY {order_sql}, w.id LIMIT {int(limit) + 1}")
    count_sql = (f"SELECT count(*) FROM (SELECT 1 FROM work_items w WHERE {compiled.where} "
                 f"LIMIT {TOTAL_CAP + 1}) matched")
    tracer = ctx.database.queries.tracer
    async with ctx.transaction(readonly=True) as conn:
        await _check_known(ctx, conn, query)
        with traced_sql(tracer, "jql_search_page"):
            rows = await conn.fetch(page_sql, *params)
        if cursor is None and len(rows) <= limit:
            total = len(rows)  # the first page holds every match: nothing left to count
        else:
            with traced_sql(tracer, "jql_search_count"):
                total = await conn.fetchval(count_sql, *compiled.params)
    page = rows[:limit]
    result: dict[str, Any] = {
        "issues": [{f: jsonable(r[f]) for f in fields} for r in page],
        "total": min(total, TOTAL_CAP),
        "total_is_exact": total <= TOTAL_CAP,
        "next_cursor": None,
    }
    if len(rows) > limit:
        last = page[-1]
        result["next_cursor"] = _encode_cursor(
            jql, [last[f"_s{i}"] for i in range(len(order))], last["_id"])
    return result


TOOLS = (
    Tool(
        name="jira_search",
        title="Search work items with JQL",
        description=(
            "Find work items with JQL, e.g. `project = WEB AND statusCategory != done AND "
            "assignee = currentUser() ORDER BY updated DESC`, `text ~ \"login\" AND due < 7d`. "
            "Fields, operators, functions and values: resource spiral://reference/jql. Returns "
            "issues, total (exact up to 5000: total_is_exact) and next_cursor for the next page; "
            "default order: newest update first."
        ),
        handler=search,
        scope="read",
        call_class="read",
        aliases=("jira.search",),
    ),
)
