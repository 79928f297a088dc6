"""The explorer's query check: PostgreSQL's own parser, then a walk over every node of the tree.

A query passes only if it is exactly one SELECT (or an EXPLAIN of one, without ANALYZE) in which
every node is of an allowed kind, every relation is an explorer view (or a CTE in scope), every
function and type is on the allowlist, and there is no SELECT INTO or locking clause. Anything else
is refused with the construct named and its position (1-based characters, as PostgreSQL counts).

This check is the first wall, not the only one: the query then runs as the explorer role in a
read-only transaction bound to the tenant (see ``runner``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import orjson
from pglast import parser as pg_parser

from ..errors import ErrorCode, ServiceError
from .allowlist import FUNCTIONS, NODES, SQL_VALUE_FUNCTIONS, TYPES

__all__ = ["CheckedQuery", "QueryValidator"]

EXPLORER_SCHEMA = "explorer"
# EXPLAIN options that only describe the plan; ANALYZE (which runs the query) is not here.
_EXPLAIN_OPTIONS = frozenset({"costs", "verbose", "format", "summary", "generic_plan", "buffers",
                              "memory"})
_STATEMENT_NAMES = {
    "VariableSetStmt": "SET/RESET", "VariableShowStmt": "SHOW", "CopyStmt": "COPY",
    "DeclareCursorStmt": "DECLARE CURSOR", "ClosePortalStmt": "CLOSE", "DoStmt": "DO",
    "CreateTableAsStmt": "CREATE TABLE AS / SELECT INTO", "ExplainStmt": "EXPLAIN",
    "DeallocateStmt": "DEALLOCATE", "ListenStmt": "LISTEN", "NotifyStmt": "NOTIFY",
}
# Plain names for refused nodes that are not statements.
_NODE_NAMES = {
    "ParamRef": "a bind parameter ($n); write the value into the query",
    "RangeTableSample": "TABLESAMPLE", "RangeTableFunc": "XMLTABLE", "JsonTable": "JSON_TABLE",
    "XmlExpr": "an XML expression", "XmlSerialize": "XMLSERIALIZE", "SetToDefault": "DEFAULT",
    "CurrentOfExpr": "WHERE CURRENT OF", "MultiAssignRef": "a multiple assignment",
}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


@dataclasses.dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A query that passed: its text (run exactly as given) and what it is."""

    sql: str
    explain: bool


def _statement_name(kind: str, body: dict[str, Any]) -> str:
    if kind == "TransactionStmt":
        return body.get("kind", "TRANS_STMT").removeprefix("TRANS_STMT_").replace("_", " ")
    if kind in _STATEMENT_NAMES:
        return _STATEMENT_NAMES[kind]
    return _CAMEL.sub(" ", kind.removesuffix("Stmt")).upper()


def _names(items: list[Any]) -> list[str]:
    return [i["String"]["sval"] for i in items if isinstance(i, dict) and "String" in i]


def _literal(node: Any) -> float | None:
    """The numeric value of an integer or decimal literal, else None."""
    if not isinstance(node, dict) or "A_Const" not in node:
        return None
    const = node["A_Const"]
    if "ival" in const:
        return float(const["ival"].get("ival", 0))
    if "fval" in const:
        try:
            return float(const["fval"]["fval"])
        except (KeyError, ValueError):
            return None
    return None


class _Refused(Exception):
    def __init__(self, code: ErrorCode, construct: str, message: str, location: int) -> None:
        super().__init__(message)
        self.code = code
        self.construct = construct
        self.message = message
        self.location = location


class QueryValidator:
    """Checks explorer queries against the explorer's relations and the allowlists."""

    def __init__(self, relations: Iterable[str], *, max_series_rows: int = 1_000_000) -> None:
        self.relations = frozenset(relations)
        self.max_series_rows = max_series_rows

    def check(self, sql: str) -> CheckedQuery:
        """Return the query if it may run; else raise ServiceError (VALIDATION_ERROR, or
        PERMISSION_DENIED for a relation or function outside the explorer's reach)."""
        try:
            tree = orjson.loads(pg_parser.parse_sql_json(sql))
        except pg_parser.ParseError as exc:
            raise ServiceError(
                ErrorCode.VALIDATION_ERROR, f"the query does not parse: {exc.args[0]}",
                details=[{"construct": "syntax", "position": exc.location + 1}]
                if isinstance(getattr(exc, "location", None), int) else [],
            ) from None
        try:
            return self._check_tree(sql, tree)
        except _Refused as refused:
            position = len(sql.encode()[: max(refused.location, 0)].decode(errors="ignore")) + 1
            raise ServiceError(
                refused.code, f"{refused.message} (at character {position})",
                details=[{"construct": refused.construct, "position": position}],
            ) from None
        except RecursionError:
            raise ServiceError(ErrorCode.VALIDATION_ERROR, "the query is nested too deeply",
                               details=[{"construct": "nesting", "position": 1}]) from None

    # -- the statement ---------------------------------------------------------------------

    def _check_tree(self, sql: str, tree: dict[str, Any]) -> CheckedQuery:
        stmts = tree.get("stmts") or []
        if not stmts or not stmts[0].get("stmt"):
            raise _Refused(ErrorCode.VALIDATION_ERROR, "empty", "the query is empty", 0)
        if len(stmts) > 1:
            # Stacked statements: "SELECT 1; DROP ..." is two statements, never run.
            raise _Refused(ErrorCode.VALIDATION_ERROR, "multiple statements",
                           f"only one statement may run; found {len(stmts)}",
                           stmts[1].get("stmt_location", 0))
        ((kind, body),) = stmts[0]["stmt"].items()
        explain = kind == "ExplainStmt"
        if explain:
            for option in body.get("options") or []:
                elem = option.get("DefElem", {})
                name = elem.get("defname", "")
                if name not in _EXPLAIN_OPTIONS:
                    raise _Refused(ErrorCode.VALIDATION_ERROR, f"EXPLAIN {name.upper()}",
                                   f"EXPLAIN option {name.upper()} is not allowed "
                                   "(it would run the query)" if name == "analyze" else
                                   f"EXPLAIN option {name.upper()} is not allowed",
                                   elem.get("location", 0))
            ((kind, body),) = body["query"].items()
        if kind != "SelectStmt":
            name = _statement_name(kind, body)
            raise _Refused(ErrorCode.VALIDATION_ERROR, name,
                           f"{name} is not allowed: only one SELECT (or EXPLAIN SELECT) may run",
                           body.get("location", 0))
        self._node("SelectStmt", body, frozenset(), 0)
        return CheckedQuery(sql=sql, explain=explain)

    # -- the walk ---------------------------------------------------------------------------

    def _visit(self, value: Any, scope: frozenset[str], loc: int) -> None:
        if isinstance(value, list):
            for item in value:
                self._visit(item, scope, loc)
        elif isinstance(value, dict) and value:
            if len(value) == 1:
                ((key, body),) = value.items()
                if key[:1].isupper():
                    self._node(key, body, scope, loc)
                    return
            # A struct inlined in its parent's field (alias, type name, window, ...).
            self._fields(value, scope, loc)

    def _fields(self, body: dict[str, Any], scope: frozenset[str], loc: int,
                skip: tuple[str, ...] = ()) -> None:
        loc = body["location"] if isinstance(body.get("location"), int) and body["location"] >= 0 \
            else loc
        for key, value in body.items():
            if key in skip:
                continue
            if key == "intoClause":
                raise _Refused(ErrorCode.VALIDATION_ERROR, "SELECT INTO",
                               "SELECT INTO is not allowed: it creates a table", loc)
            if key == "lockingClause":
                raise _Refused(ErrorCode.VALIDATION_ERROR, "locking clause",
                               "FOR UPDATE/SHARE is not allowed: queries take no row locks", loc)
            if key == "typeName" and isinstance(value, dict):
                self._type(value, loc)
            self._visit(value, scope, loc)

    def _node(self, kind: str, body: Any, scope: frozenset[str], loc: int) -> None:
        if isinstance(body, dict) and isinstance(body.get("location"), int) \
                and body["location"] >= 0:
            loc = body["location"]
        if kind not in NODES:
            if kind.endswith("Stmt"):
                name = _statement_name(kind, body if isinstance(body, dict) else {})
                raise _Refused(ErrorCode.VALIDATION_ERROR, name,
                               f"{name} is not allowed anywhere in the query, "
                               "including inside a WITH", loc)
            name = _NODE_NAMES.get(kind, kind)
            raise _Refused(ErrorCode.VALIDATION_ERROR, kind, f"{name} is not allowed", loc)
        match kind:
            case "SelectStmt":
                self._select(body, scope, loc)
            case "RangeVar":
                self._relation(body, scope, loc)
            case "FuncCall":
                self._function(body, loc)
                self._fields(body, scope, loc, skip=("funcname",))
            case "A_Expr":
                operator = _names(body.get("name") or [])
                if len(operator) > 1 and operator[0] != "pg_catalog":
                    raise _Refused(ErrorCode.PERMISSION_DENIED, f"operator {'.'.join(operator)}",
                                   f"operator {'.'.join(operator)} is not allowed", loc)
                self._fields(body, scope, loc, skip=("name",))
            case "SQLValueFunction":
                if body.get("op") not in SQL_VALUE_FUNCTIONS:
                    name = str(body.get("op", "")).removeprefix("SVFOP_")
                    raise _Refused(ErrorCode.PERMISSION_DENIED, name,
                                   f"{name} is not allowed: it describes the server, not the data",
                                   loc)
            case "TypeName":
                self._type(body, loc)
            case "ParamRef" | "A_Const" | "String" | "Integer" | "Float" | "Boolean" \
                    | "BitString" | "A_Star":
                return
            case "ColumnRef":
                return  # names of columns; relations and functions are checked elsewhere
            case _:
                self._fields(body, scope, loc) if isinstance(body, dict) \
                    else self._visit(body, scope, loc)

    def _select(self, body: dict[str, Any], scope: frozenset[str], loc: int) -> None:
        with_clause = body.get("withClause")
        if with_clause:
            ctes = [c.get("CommonTableExpr", {}) for c in with_clause.get("ctes") or []]
            names = [c.get("ctename", "") for c in ctes]
            recursive = bool(with_clause.get("recursive"))
            for i, cte in enumerate(ctes):
                # A CTE sees the ones before it, or all of them under RECURSIVE; a name it
                # cannot see would resolve to a real relation, so scoping must be exact.
                visible = scope | frozenset(names if recursive else names[:i])
                self._node("CommonTableExpr", cte, visible, loc)
            scope = scope | frozenset(names)
        self._fields(body, scope, loc, skip=("withClause",))

    def _relation(self, body: dict[str, Any], scope: frozenset[str], loc: int) -> None:
        schema = body.get("schemaname")
        name = body.get("relname", "")
        qualified = ".".join(p for p in (body.get("catalogname"), schema, name) if p)
        if body.get("catalogname") is None and (
            (schema is None and (name in scope or name in self.relations))
            or (schema == EXPLORER_SCHEMA and name in self.relations)
        ):
            self._fields(body, scope, loc, skip=("relname", "schemaname"))
            return
        raise _Refused(ErrorCode.PERMISSION_DENIED, f"relation {qualified}",
                       f"relation {qualified} is not one of the explorer tables "
                       f"({', '.join(sorted(self.relations))})", loc)

    def _function(self, body: dict[str, Any], loc: int) -> None:
        parts = _names(body.get("funcname") or [])
        name = parts[-1] if parts else ""
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog") \
                or name not in FUNCTIONS:
            shown = ".".join(parts)
            raise _Refused(ErrorCode.PERMISSION_DENIED, f"function {shown}",
                           f"function {shown} is not allowed in explorer queries", loc)
        if name == "generate_series":
            self._series(body, loc)

    def _series(self, body: dict[str, Any], loc: int) -> None:
        args = body.get("args") or []
        values = [_literal(a) for a in args]
        if len(values) < 2 or values[0] is None or values[1] is None:
            return  # not literal numbers (dates, columns): the statement timeout bounds it
        step = values[2] if len(values) > 2 and values[2] is not None else 1.0
        if step == 0:
            return
        rows = (values[1] - values[0]) / step + 1
        if rows > self.max_series_rows:
            raise _Refused(ErrorCode.VALIDATION_ERROR, "generate_series",
                           f"generate_series would make {rows:.0f} rows; at most "
                           f"{self.max_series_rows} are allowed", loc)

    def _type(self, body: dict[str, Any], loc: int) -> None:
        parts = _names(body.get("names") or [])
        name = parts[-1] if parts else ""
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog") or name not in TYPES:
            shown = ".".join(parts)
            raise _Refused(ErrorCode.PERMISSION_DENIED, f"type {shown}",
                           f"type {shown} is not allowed in explorer queries", loc)
