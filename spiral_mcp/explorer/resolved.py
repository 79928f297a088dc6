"""The second wall: what PostgreSQL itself made of a query, checked before it runs.

The validator reads names the way it expects PostgreSQL to; twice a query has made PostgreSQL
read a name otherwise (``t.f`` calling ``f(t)``). This check does not depend on that reading.
When the query is prepared, the server analyses it (names resolved, views not yet expanded, no
planning, nothing run) and, with ``debug_print_parse`` on, sends this connection that analysed
tree. Every node in it must be of a known kind, and every function, aggregate, window function,
operator, type and relation it names by OID must be one the explorer allows; the OIDs are read
from the catalog at start-up, from the allowlist's names. A query failing this is refused before
its statement is ever executed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable

import asyncpg

from ..errors import ErrorCode, ServiceError
from ..queries import Queries
from .allowlist import FUNCTIONS, TYPES, WRAPPED
from .nodedump import Node, NodeDumpError, read_node_dump

__all__ = ["Resolution", "load_resolution"]

# Types a value may have besides the castable ones (TYPES): what allowed functions return or
# take and nobody casts to, and the types PostgreSQL gives literals and rows.
_MORE_TYPES = ("bytea", "record", "unknown")

# Node kinds an analysed SELECT may hold. A kind not here (XML, SQL/JSON, table functions,
# parameters, sequences, DML's nodes, a kind a later PostgreSQL adds) refuses the query.
_TAGS = frozenset({
    "QUERY", "RANGETBLENTRY", "RTEPERMISSIONINFO", "RANGETBLFUNCTION", "RANGETBLREF",
    "FROMEXPR", "JOINEXPR", "TARGETENTRY", "ALIAS", "SETOPERATIONSTMT", "SORTGROUPCLAUSE",
    "GROUPINGSET", "WINDOWCLAUSE", "COMMONTABLEEXPR", "CTESEARCHCLAUSE", "CTECYCLECLAUSE",
    "VAR", "CONST", "FUNCEXPR", "NAMEDARGEXPR", "AGGREF", "WINDOWFUNC", "GROUPINGFUNC",
    "OPEXPR", "DISTINCTEXPR", "NULLIFEXPR", "SCALARARRAYOPEXPR", "ROWCOMPAREEXPR", "BOOLEXPR",
    "SUBLINK", "FIELDSELECT", "RELABELTYPE", "COERCEVIAIO", "ARRAYCOERCEEXPR", "COLLATEEXPR",
    "CASEEXPR", "CASEWHEN", "CASETESTEXPR", "ARRAYEXPR", "ROWEXPR", "COALESCEEXPR",
    "MINMAXEXPR", "SQLVALUEFUNCTION", "NULLTEST", "BOOLEANTEST", "SUBSCRIPTINGREF", "PARAM",
})
# Fields naming a function, an operator (or its function), a type, by node kind.
_FUNCTIONS = {"FUNCEXPR": ("funcid",), "AGGREF": ("aggfnoid",), "WINDOWFUNC": ("winfnoid",)}
_OPERATORS = {
    "OPEXPR": ("opno",), "DISTINCTEXPR": ("opno",), "NULLIFEXPR": ("opno",),
    "SCALARARRAYOPEXPR": ("opno",), "SORTGROUPCLAUSE": ("eqop", "sortop"),
    "CTECYCLECLAUSE": ("cycle_mark_neop",), "ROWCOMPAREEXPR": ("opnos",),
}
_OPERATOR_FUNCTIONS = {
    "OPEXPR": ("opfuncid",), "DISTINCTEXPR": ("opfuncid",), "NULLIFEXPR": ("opfuncid",),
    "SCALARARRAYOPEXPR": ("opfuncid", "hashfuncid", "negfuncid"),
}
_IN_RANGE = {"WINDOWCLAUSE": ("startInRangeFunc", "endInRangeFunc")}
_TYPES = {
    "VAR": ("vartype",), "CONST": ("consttype",), "FUNCEXPR": ("funcresulttype",),
    "OPEXPR": ("opresulttype",), "DISTINCTEXPR": ("opresulttype",),
    "NULLIFEXPR": ("opresulttype",), "AGGREF": ("aggtype", "aggargtypes"),
    "WINDOWFUNC": ("wintype",), "COERCEVIAIO": ("resulttype",), "RELABELTYPE": ("resulttype",),
    "ARRAYCOERCEEXPR": ("resulttype",), "FIELDSELECT": ("resulttype",),
    "ARRAYEXPR": ("array_typeid", "element_typeid"), "ROWEXPR": ("row_typeid",),
    "CASEEXPR": ("casetype",), "CASETESTEXPR": ("typeId",), "COALESCEEXPR": ("coalescetype",),
    "MINMAXEXPR": ("minmaxtype",), "SQLVALUEFUNCTION": ("type",),
    "SUBSCRIPTINGREF": ("refcontainertype", "refelemtype", "refrestype"),
    "CTECYCLECLAUSE": ("cycle_mark_type",), "RANGETBLFUNCTION": ("funccoltypes",),
    "COMMONTABLEEXPR": ("ctecoltypes",), "SETOPERATIONSTMT": ("colTypes",),
    "PARAM": ("paramtype",),
}
# RTEKind: a relation, subquery, join, function, VALUES, CTE, empty FROM, GROUP BY (PG 18).
_RTE_KINDS = frozenset({"0", "1", "2", "3", "5", "6", "8", "9"})
# SQLValueFunctionOp: CURRENT_DATE ... LOCALTIMESTAMP(n); the user and schema ones follow.
_SQL_VALUE_OPS = frozenset(str(op) for op in range(9))
_ACL_SELECT = "2"
# ParamKind PARAM_SUBLINK: the row of an ANY/ALL subquery, as its test reads it. The others are
# a bind parameter (none: the explorer binds no values) and the planner's.
_PARAM_SUBLINK = "2"


@dataclasses.dataclass(frozen=True, slots=True)
class Resolution:
    """The OIDs the explorer allows, as this database numbers them."""

    functions: frozenset[int]
    operators: frozenset[int]
    operator_functions: frozenset[int]
    in_range: frozenset[int]
    types: frozenset[int]
    relations: frozenset[int]
    lockable: frozenset[int]

    async def check(self, conn: asyncpg.Connection, queries: Queries, statement: str, *,
                    time_limit: float, sql: str | None = None) -> None:
        """Check what PostgreSQL makes of ``statement`` (one statement, no trailing semicolon;
        ``sql``: the text it was taken from, for positions) before anything of it runs: its
        reading, and the relations it locks. The statement is prepared inside ``_READ`` (one
        plain column: nothing for asyncpg to look up, whose own queries the server would show
        too), in a savepoint rolled back after, which ends the settings that show the reading
        and lets go of what the statement locked. ``time_limit`` is for the whole check."""
        deadline = time.perf_counter() + time_limit

        def left() -> float:
            return max(deadline - time.perf_counter(), 0.001)

        dumps: list[str] = []

        def listen(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
            if message.message.startswith("parse tree"):
                dumps.append(message.detail or "")

        # One round trip: our own constant statements, never the caller's text.
        await conn.execute(f"{_SAVEPOINT}; {_INSPECT}", timeout=left())
        try:
            conn.add_log_listener(listen)
            try:
                await conn.prepare(_READ.format(statement), timeout=left())
                if not dumps:
                    await asyncio.sleep(0)  # listeners are called soon after, not inside
            finally:
                conn.remove_log_listener(listen)
            held = await queries.explorer_locks_held(conn, allowed=list(self.lockable))
        except asyncpg.QueryCanceledError:
            raise  # the time limit, not a mistake in the query: no second try
        except asyncpg.PostgresError:
            failed = True
        else:
            failed = False
        finally:
            await conn.execute(_ROLLBACK_TO, timeout=left())
        sql = statement if sql is None else sql
        if failed:
            # A mistake in the query: PostgreSQL says it again, in the query's own positions.
            await conn.prepare(statement, timeout=left())
            raise _refused("the query could not be read as a subquery", sql, None)
        if held:
            # Parse analysis locks every relation a query names, and rewriting a view the tables
            # below it, whatever the reading made of them.
            raise _refused(f"relation {held[0]['name']} is not allowed in explorer queries",
                           sql, None)
        # Positions in the reading count bytes from the start of _READ's text.
        offset = len(sql[:max(sql.find(statement), 0)].encode()) \
            - len(_READ.split("{}")[0].encode())
        if not dumps:
            raise _refused("the server did not show how it read the query", sql, None)
        try:
            nodes = read_node_dump(dumps[0])
        except NodeDumpError as exc:
            raise _refused(f"the server's reading of the query could not be checked ({exc}); "
                           "simplify unusual names", sql, None) from None
        found = self.unallowed(nodes)
        if found is not None:
            kind, oid, location = found
            name = await _describe(conn, kind, oid)
            raise _refused(f"{kind} {name} is not allowed in explorer queries", sql,
                           None if location is None or location < 0 else location + offset)

    def unallowed(self, nodes: list[Node]) -> tuple[str, int, int | None] | None:
        """The first thing among ``nodes`` (a tree's, its root last) that the explorer does not
        allow: (kind, OID, location); an OID of 0 when it is a construct, not a catalog object."""
        if nodes[-1].tag != "QUERY":
            return "construct", 0, None
        for node in nodes:
            location = _int(node.scalar("location"))
            if node.tag not in _TAGS:
                return "construct", 0, location
            if node.tag == "QUERY" and not _plain_select(node):
                return "construct", 0, location
            if node.tag == "RANGETBLENTRY" and not self._range_entry(node):
                return "relation", _int(node.scalar("relid")) or 0, location
            if node.tag == "RTEPERMISSIONINFO" and not (
                    _int(node.scalar("relid")) in self.relations
                    and node.scalar("requiredPerms") == _ACL_SELECT):
                return "relation", _int(node.scalar("relid")) or 0, location
            if (node.tag == "SQLVALUEFUNCTION" and node.scalar("op") not in _SQL_VALUE_OPS) \
                    or (node.tag == "PARAM" and node.scalar("paramkind") != _PARAM_SUBLINK):
                return "construct", 0, location
            for kind, fields, allowed in (
                ("function", _FUNCTIONS, self.functions),
                ("operator", _OPERATORS, self.operators),
                ("function", _OPERATOR_FUNCTIONS, self.operator_functions),
                ("function", _IN_RANGE, self.in_range),
                ("type", _TYPES, self.types),
            ):
                for oid in _oids(node, fields.get(node.tag, ())):
                    if oid and oid not in allowed:
                        return kind, oid, location
        return None

    def _range_entry(self, node: Node) -> bool:
        kind = node.scalar("rtekind")
        if kind not in _RTE_KINDS or node.fields.get("tablesample", ["<>"]) != ["<>"]:
            return False  # a TABLESAMPLE clause is refused by its node kind besides
        return kind != "0" or _int(node.scalar("relid")) in self.relations


# Our own statements, constants (the explorer's transaction is begun by hand, which asyncpg's
# transaction objects refuse to nest in).
_SAVEPOINT = "SAVEPOINT explorer_reading"
# The statement as a subquery; the newline ends a trailing -- comment.
_READ = "SELECT NULL FROM (\n{}\n) AS q"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT explorer_reading"
_INSPECT = ("SELECT pg_catalog.set_config('debug_print_parse', 'on', true), "
            "pg_catalog.set_config('debug_pretty_print', 'off', true), "
            "pg_catalog.set_config('client_min_messages', 'log', true)")


def _plain_select(node: Node) -> bool:
    # commandType 1 is CMD_SELECT; no utility statement, row locks or data-modifying WITH.
    return (node.scalar("commandType") == "1" and node.scalar("utilityStmt") == "<>"
            and node.scalar("resultRelation") == "0" and node.scalar("hasForUpdate") == "false"
            and node.scalar("hasModifyingCTE") == "false"
            and node.fields.get("rowMarks", ["<>"]) == ["<>"])


def _int(token: str | None) -> int | None:
    try:
        return int(token) if token is not None else None
    except ValueError:
        return None


def _oids(node: Node, fields: Iterable[str]) -> Iterable[int]:
    """The OIDs in ``fields``: one number, an OID list ``(o 1 2)``, or none (``<>``); anything
    else is -1, which no allowlist holds."""
    for field in fields:
        tokens = node.fields.get(field)
        if tokens is None or tokens == ["<>"]:
            continue
        if len(tokens) >= 3 and tokens[:2] == ["(", "o"] and tokens[-1] == ")":
            tokens = tokens[2:-1]
        for token in tokens:
            oid = _int(token)
            yield -1 if oid is None else oid


async def _describe(conn: asyncpg.Connection, kind: str, oid: int) -> str:
    """How PostgreSQL names the refused object, for the message."""
    cast = {"function": "regprocedure", "operator": "regoperator", "type": "regtype",
            "relation": "regclass"}.get(kind)
    if cast is None or oid <= 0:
        return "(a construct PostgreSQL read from the query)"
    try:
        return await conn.fetchval(f"SELECT $1::oid::{cast}::text", oid)  # cast is a constant
    except asyncpg.PostgresError:
        return f"#{oid}"


def _refused(message: str, sql: str, location: int | None) -> ServiceError:
    detail: dict[str, object] = {"construct": "resolved"}
    if location is not None and location >= 0:
        # PostgreSQL counts bytes from 0; the explorer's messages count characters from 1.
        position = len(sql.encode()[:location].decode(errors="ignore")) + 1
        detail["position"] = position
        message += f" (at character {position})"
    return ServiceError(ErrorCode.PERMISSION_DENIED, message, details=[detail])


async def load_resolution(conn: asyncpg.Connection, queries: Queries) -> Resolution:
    """Read the allowed OIDs from the catalog, through the explorer's own connection."""
    rows = await queries.explorer_allowed_oids(
        conn, functions=sorted(FUNCTIONS), types=sorted(TYPES | set(_MORE_TYPES)),
        wrapped=sorted(WRAPPED))
    found: dict[str, set[int]] = {}
    for row in rows:
        found.setdefault(row["kind"], set()).add(row["oid"])
    return Resolution(**{kind: frozenset(found.get(kind, ())) for kind in (
        "functions", "operators", "operator_functions", "in_range", "types", "relations",
        "lockable")})
