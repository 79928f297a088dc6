"""The explorer's query check: PostgreSQL's own parser, then a walk over every node of the tree.

A query passes only if it is exactly one SELECT in which every node is of an allowed kind, every
relation is an explorer view (or a CTE in scope), every function and type is on the allowlist,
and there is no SELECT INTO or locking clause. Anything else is refused with the construct named
and its position (1-based characters, as PostgreSQL counts).

This check is the first wall, not the only one: PostgreSQL's own reading of the query is checked
again before it runs (``resolved``), and it runs as the explorer role in a read-only transaction
bound to the tenant (``runner``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pglast import parser as pg_parser

from ..errors import ErrorCode, ServiceError
from .allowlist import (
    FUNCTIONS,
    MAX_VALUE_BYTES,
    NODES,
    OUT_COLUMNS,
    SQL_VALUE_FUNCTIONS,
    TYPES,
    WRAPPED,
)

__all__ = ["CheckedQuery", "QueryValidator"]

EXPLORER_SCHEMA = "explorer"
# Why EXPLAIN is not offered: a plan is made from statistics of every tenant's rows.
_NO_EXPLAIN = (
    "EXPLAIN is not offered: PostgreSQL plans from statistics over every tenant's rows, so a "
    "plan's estimates and choices would describe other tenants' data; the explorer's views keep "
    "those statistics out of every query's plan, which leaves EXPLAIN nothing true to show"
)
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
# The names PostgreSQL gives CURRENT_DATE and the like as output columns.
_SQL_VALUE_NAMES = {"DATE": "current_date", "TIME": "current_time",
                    "TIMESTAMP": "current_timestamp", "LOCALTIME": "localtime",
                    "LOCALTIMESTAMP": "localtimestamp"}

# Keys whose string value is a name the query gives or uses (besides String nodes in lists).
_NAME_KEYS = frozenset({"aliasname", "name", "refname", "ctename", "colname", "relname",
                        "schemaname", "catalogname", "cycle_mark_column", "cycle_path_column",
                        "search_seq_column"})
# The characters PostgreSQL escapes when it writes a name into a node tree; a name may hold a
# few (a name's longest written form must stay a token the server never has to cut in two when
# it folds the tree's text, see nodedump), and no control character.
_ESCAPED = re.compile(r"[(){}\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME_BYTES = 63
# Arguments that must be string literals, by function: (position, parameter name, what it is).
# Their text sets how large the result may grow (format's widths, to_char's patterns that each
# print several characters, a jsonpath's .** that copies every nested level again), so it must
# be known here.
_LITERAL_ARGUMENTS = {
    "format": (0, None, "format string"),
    "to_char": (1, None, "format"),
    "jsonb_path_query": (1, "path", "path"),
    "jsonb_path_query_array": (1, "path", "path"),
}
# A format() conversion: %%, or %[position$][-][width]type, the width digits or * (an argument).
_FORMAT_SPEC = re.compile(r"%%|%(?:\d+\$)?-*(\*(?:\d+\$)?|\d+)?")

# A FROM item's column names, in order; None when they are not known exactly here.
Columns = tuple[str, ...] | None


@dataclasses.dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A query that passed: its text (run exactly as given) and the statement alone (without a
    trailing semicolon or comment)."""

    sql: str
    statement: str


def _statement_name(kind: str, body: dict[str, Any]) -> str:
    if kind == "TransactionStmt":
        return body.get("kind", "TRANS_STMT").removeprefix("TRANS_STMT_").replace("_", " ")
    if kind in _STATEMENT_NAMES:
        return _STATEMENT_NAMES[kind]
    return _CAMEL.sub(" ", kind.removesuffix("Stmt")).upper()


def _too_deep() -> ServiceError:
    return ServiceError(ErrorCode.VALIDATION_ERROR, "the query is nested too deeply",
                        details=[{"construct": "nesting", "position": 1}])


def _names(items: list[Any]) -> list[str]:
    return [i["String"]["sval"] for i in items if isinstance(i, dict) and "String" in i]


def _string(node: Any) -> str | None:
    """The text of a string literal, also under a cast ('$.a'::jsonpath), else None."""
    if isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"].get("arg")
    if not isinstance(node, dict) or "A_Const" not in node:
        return None
    value = node["A_Const"].get("sval")
    return value.get("sval", "") if isinstance(value, dict) else None


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


# How large a query's tree may grow when PostgreSQL analyses it: BETWEEN writes its operand twice,
# BETWEEN SYMMETRIC four times, and IN with a list that is not all literals once per element, so
# nesting them grows the analysed tree (and the reading the server shows of it, see resolved)
# exponentially with the text.
_MAX_ANALYSED_NODES = 20_000
_COPIES = {"AEXPR_BETWEEN": 2, "AEXPR_NOT_BETWEEN": 2, "AEXPR_BETWEEN_SYM": 4,
           "AEXPR_NOT_BETWEEN_SYM": 4}


def _analysed_size(node: Any) -> int:
    """The number of nodes PostgreSQL's analysis of ``node`` holds, about."""
    if isinstance(node, list):
        return sum(_analysed_size(item) for item in node)
    if not isinstance(node, dict):
        return 0
    expr = node.get("A_Expr")
    if isinstance(expr, dict):
        kind = expr.get("kind")
        items = (expr.get("rexpr") or {}).get("List", {}).get("items")
        copies = _COPIES.get(kind, 1)
        if kind == "AEXPR_IN" and isinstance(items, list) \
                and not all(isinstance(i, dict) and "A_Const" in i for i in items):
            copies = len(items)
        return 1 + copies * _analysed_size(expr.get("lexpr")) + _analysed_size(expr.get("rexpr"))
    return 1 + sum(_analysed_size(value) for value in node.values())


def _check_size(tree: Any) -> None:
    size = _analysed_size(tree)
    if size > _MAX_ANALYSED_NODES:
        raise _Refused(ErrorCode.VALIDATION_ERROR, "size",
                       f"the query grows to about {size} expressions when PostgreSQL reads it "
                       f"(nested BETWEEN or IN lists repeat their operand); at most "
                       f"{_MAX_ANALYSED_NODES} are allowed", 0)


def _check_names(tree: Any) -> None:
    """Refuse a name with a control character, or one whose written form would be longer than
    any plain name PostgreSQL keeps (63 bytes) by more than its quotes."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            name = value.get("sval") if key == "String" and isinstance(value, dict) else \
                value if key in _NAME_KEYS else None
            if isinstance(name, str) and (
                    _CONTROL.search(name)
                    or len(name.encode()) + len(_ESCAPED.findall(name)) > _MAX_NAME_BYTES):
                raise _Refused(ErrorCode.VALIDATION_ERROR, "name",
                               f"the name {name!r} is not allowed: names may not hold control "
                               "characters, nor be longer than 63 bytes counting each of "
                               "( ) { } \\ twice", node.get("location", 0)
                               if isinstance(node.get("location"), int) else 0)
            if not isinstance(value, str):
                stack.append(value)


class _Refused(Exception):
    def __init__(self, code: ErrorCode, construct: str, message: str, location: int) -> None:
        super().__init__(message)
        self.code = code
        self.construct = construct
        self.message = message
        self.location = location


@dataclasses.dataclass(frozen=True, slots=True)
class _Scope:
    """What one point of the query sees: the CTEs in scope (name → columns) and the FROM items
    (reference name → columns) of its own query level and of every level around it, one tuple
    per level, the innermost last."""

    ctes: Mapping[str, Columns] = dataclasses.field(default_factory=dict)
    levels: tuple[tuple[tuple[str, Columns], ...], ...] = ()

    def with_ctes(self, ctes: Mapping[str, Columns]) -> _Scope:
        return _Scope({**self.ctes, **ctes}, self.levels)

    def with_items(self, items: Sequence[tuple[str, Columns]]) -> _Scope:
        return _Scope(self.ctes, (*self.levels, tuple(items)))

    def lookup(self, name: str) -> list[Columns]:
        """The columns of the items called ``name`` at the innermost level that has one, as
        PostgreSQL resolves a qualified name. More than one (PostgreSQL would refuse the query)
        is safe: a qualified column must be a column of each of them."""
        for level in reversed(self.levels):
            if found := [columns for ref, columns in level if ref == name]:
                return found
        return []


def _renamed(columns: Columns, alias: Any) -> Columns:
    """An item's columns under its alias: ``AS a(x, y)`` renames the first ones."""
    names = _names((alias or {}).get("colnames") or [])
    if not names:
        return columns
    return None if columns is None else (*names, *columns[len(names):])


def _concat(parts: Sequence[Columns]) -> Columns:
    return None if any(p is None for p in parts) else tuple(c for p in parts for c in p or ())


def _joined(left: Columns, right: Columns, body: dict[str, Any]) -> Columns:
    """A join's columns as PostgreSQL orders them: merged USING columns first."""
    if left is None or right is None:
        return None
    if body.get("isNatural"):
        using = [c for c in left if c in right]
    else:
        using = _names(body.get("usingClause") or [])
    return (*using, *(c for c in left if c not in using), *(c for c in right if c not in using))


def _figure(node: Any) -> tuple[str | None, int]:
    """PostgreSQL's FigureColname: the output name of an unnamed select-list expression and how
    sure it is. Unsure cases give None (PostgreSQL's ``?column?``, which names no function)."""
    if not isinstance(node, dict) or len(node) != 1:
        return None, 0
    ((kind, body),) = node.items()
    match kind:
        case "ColumnRef":
            last = body["fields"][-1]
            return (last["String"]["sval"], 2) if "String" in last else (None, 0)
        case "A_Indirection":
            fields = _names(body.get("indirection") or [])
            return (fields[-1], 2) if fields else _figure(body.get("arg"))
        case "FuncCall":
            return _names(body["funcname"])[-1], 2
        case "A_Expr":
            return ("nullif", 2) if body.get("kind") == "AEXPR_NULLIF" else (None, 0)
        case "TypeCast":
            name, strength = _figure(body.get("arg"))
            types = _names(body.get("typeName", {}).get("names") or [])
            return (types[-1], 1) if strength <= 1 and types else (name, strength)
        case "CollateClause":
            return _figure(body.get("arg"))
        case "GroupingFunc":
            return "grouping", 2
        case "SubLink":
            return {"EXISTS_SUBLINK": ("exists", 2), "ARRAY_SUBLINK": ("array", 2)}.get(
                body.get("subLinkType"), (None, 0))
        case "CaseExpr" | "A_ArrayExpr" | "RowExpr":
            return {"CaseExpr": "case", "A_ArrayExpr": "array", "RowExpr": "row"}[kind], 1
        case "CoalesceExpr":
            return "coalesce", 2
        case "MinMaxExpr":
            return ("greatest" if body.get("op") == "IS_GREATEST" else "least"), 2
        case "SQLValueFunction":
            op = str(body.get("op", "")).removeprefix("SVFOP_").removeprefix("CURRENT_")
            return _SQL_VALUE_NAMES.get(op.removesuffix("_N")), 2
    return None, 0


class QueryValidator:
    """Checks explorer queries against the explorer's relations and the allowlists."""

    def __init__(self, relations: Mapping[str, Sequence[str]], *,
                 max_series_rows: int = 1_000_000) -> None:
        self.relations = {name: tuple(columns) for name, columns in relations.items()}
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
        except orjson.JSONDecodeError:
            # orjson refuses JSON nested deeper than 1024 levels: "1+1+...", NOT NOT ..., CASE.
            raise _too_deep() from None
        try:
            _check_names(tree)
            _check_size(tree)
            return self._check_tree(sql, tree)
        except _Refused as refused:
            position = len(sql.encode()[: max(refused.location, 0)].decode(errors="ignore")) + 1
            raise ServiceError(
                refused.code, f"{refused.message} (at character {position})",
                details=[{"construct": refused.construct, "position": position}],
            ) from None
        except RecursionError:
            raise _too_deep() from None

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
        if kind == "ExplainStmt":
            raise _Refused(ErrorCode.VALIDATION_ERROR, "EXPLAIN", _NO_EXPLAIN, 0)
        if kind != "SelectStmt":
            name = _statement_name(kind, body)
            raise _Refused(ErrorCode.VALIDATION_ERROR, name,
                           f"{name} is not allowed: only one SELECT may run",
                           body.get("location", 0))
        self._select(body, _Scope(), 0)
        start, length = stmts[0].get("stmt_location", 0), stmts[0].get("stmt_len", 0)
        statement = sql.encode()[start:start + length if length else None].decode()
        return CheckedQuery(sql=sql, statement=statement)

    # -- the walk ---------------------------------------------------------------------------

    def _visit(self, value: Any, scope: _Scope, loc: int) -> None:
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

    def _fields(self, body: dict[str, Any], scope: _Scope, loc: int,
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

    def _node(self, kind: str, body: Any, scope: _Scope, loc: int) -> None:
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
                self._operator(body.get("name") or [], loc)
                self._fields(body, scope, loc, skip=("name",))
            case "SortBy":
                # ORDER BY x USING op names an operator as A_Expr does.
                self._operator(body.get("useOp") or [], loc)
                self._fields(body, scope, loc, skip=("useOp",))
            case "SubLink":
                # x OPERATOR(s.op) ANY (SELECT ...) names its operator here.
                self._operator(body.get("operName") or [], loc)
                self._fields(body, scope, loc, skip=("operName",))
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
                self._column(body, scope, loc)
            case "A_Indirection":
                self._indirection(body, scope, loc)
                self._fields(body, scope, loc)
            case _:
                self._fields(body, scope, loc) if isinstance(body, dict) \
                    else self._visit(body, scope, loc)

    # -- queries and their FROM items -------------------------------------------------------

    def _query(self, node: dict[str, Any], scope: _Scope, loc: int) -> Columns:
        """A subquery's output columns (after checking it)."""
        ((kind, body),) = node.items()
        if kind != "SelectStmt":
            self._node(kind, body, scope, loc)  # refuses it by name
            return None
        return self._select(body, scope, loc)

    def _select(self, body: dict[str, Any], scope: _Scope, loc: int) -> Columns:
        scope = self._with(body.get("withClause"), scope, loc)
        if body.get("op", "SETOP_NONE") != "SETOP_NONE":
            # UNION and the like: the left query names the columns.
            columns = self._select(body["larg"], scope, loc)
            self._select(body["rarg"], scope, loc)
            self._fields(body, scope, loc, skip=("withClause", "larg", "rarg"))
            return columns
        items: list[tuple[str, Columns]] = []
        expansion: list[Columns] = []
        for entry in body.get("fromClause") or []:
            columns, brought = self._from_item(entry, scope, items, loc)
            expansion.append(columns)
            items += brought
        inner = scope.with_items(items)
        self._fields(body, inner, loc, skip=("withClause", "fromClause"))
        return self._output(body, inner, _concat(expansion))

    def _with(self, with_clause: Any, scope: _Scope, loc: int) -> _Scope:
        if not with_clause:
            return scope
        ctes = [c.get("CommonTableExpr", {}) for c in with_clause.get("ctes") or []]
        names = [c.get("ctename", "") for c in ctes]
        recursive = bool(with_clause.get("recursive"))
        # A CTE sees the ones before it, or all of them under RECURSIVE; a name it cannot see
        # would resolve to a real relation, so scoping must be exact. A CTE not yet read has
        # columns not known yet.
        known: dict[str, Columns] = dict.fromkeys(names if recursive else [], None)
        for cte, name in zip(ctes, names, strict=True):
            known[name] = self._cte(cte, scope.with_ctes(known), recursive, loc)
        return scope.with_ctes(known)

    def _cte(self, cte: dict[str, Any], scope: _Scope, recursive: bool, loc: int) -> Columns:
        loc = cte.get("location", loc)
        query = cte.get("ctequery") or {}
        body = query.get("SelectStmt")
        self._fields(cte, scope, loc, skip=("ctequery", "ctename", "aliascolnames"))
        if recursive and body and body.get("op", "SETOP_NONE") != "SETOP_NONE":
            # The recursive term sees the CTE with the columns its first term names.
            left = self._select(body["larg"], scope, loc)
            own = _renamed(left, {"colnames": cte.get("aliascolnames")})
            inner = scope.with_ctes({cte.get("ctename", ""): own})
            self._select(body["rarg"], inner, loc)
            self._fields(body, inner, loc, skip=("larg", "rarg"))
            return own
        return _renamed(self._query(query, scope, loc), {"colnames": cte.get("aliascolnames")})

    def _from_item(self, entry: dict[str, Any], scope: _Scope,
                   preceding: Sequence[tuple[str, Columns]], loc: int
                   ) -> tuple[Columns, list[tuple[str, Columns]]]:
        """Check one FROM entry: its columns (what ``*`` expands to) and the names it brings
        into its query level. ``preceding`` are the names brought before it at this level,
        which only LATERAL sees (a function in FROM is LATERAL without saying so); elsewhere
        PostgreSQL passes over them and looks a name up in the levels around, as this does."""
        ((kind, body),) = entry.items()
        loc = body.get("location", loc) if isinstance(body, dict) else loc
        alias = body.get("alias") if isinstance(body, dict) else None
        match kind:
            case "RangeVar":
                self._node(kind, body, scope, loc)
                name = body.get("relname", "")
                columns = scope.ctes[name] if body.get("schemaname") is None \
                    and name in scope.ctes else self.relations[name]
                default: str | None = name
            case "RangeSubselect":
                inside = scope.with_items(preceding) if body.get("lateral") else scope
                columns = self._query(body["subquery"], inside, loc)
                self._fields(body, scope, loc, skip=("subquery",))
                default = None
            case "RangeFunction":
                self._fields(body, scope.with_items(preceding), loc)
                columns, default = self._function_columns(body)
            case "JoinExpr":
                return self._join(body, scope, preceding, loc)
            case _:
                self._node(kind, body, scope, loc)  # refused (TABLESAMPLE, XMLTABLE, ...)
                return None, []
        columns = _renamed(columns, alias)
        name = alias["aliasname"] if alias else default
        return columns, [] if name is None else [(name, columns)]

    def _join(self, body: dict[str, Any], scope: _Scope,
              preceding: Sequence[tuple[str, Columns]], loc: int
              ) -> tuple[Columns, list[tuple[str, Columns]]]:
        """A join: its ON clause sees only the join's own items; an alias hides them."""
        left, left_items = self._from_item(body["larg"], scope, preceding, loc)
        right, right_items = self._from_item(body["rarg"], scope,
                                             [*preceding, *left_items], loc)
        own = [*left_items, *right_items]
        self._fields(body, scope.with_items(own), loc, skip=("larg", "rarg"))
        columns = _joined(left, right, body)
        if body.get("alias"):
            columns = _renamed(columns, body["alias"])
            return columns, [(body["alias"]["aliasname"], columns)]
        if body.get("join_using_alias"):
            own.append((body["join_using_alias"]["aliasname"],
                        tuple(_names(body.get("usingClause") or []))))
        return columns, own

    def _function_columns(self, body: dict[str, Any]) -> tuple[Columns, str]:
        """A function in FROM: its columns and the name PostgreSQL gives it without an alias
        (what it would name the first function as an output column, even for ROWS FROM or an
        expression such as CAST). Columns come from a column definition list, OUT parameters,
        or, for a function known to return one plain value, its alias or name; they are not
        known for an expression or unnest, which may return a whole row."""
        functions = [f["List"]["items"] for f in body.get("functions") or []]
        alias = body.get("alias")
        columns: list[str] = []
        known = True
        for call, definitions in functions:
            definitions = (definitions or {}).get("List", {}).get("items") \
                or body.get("coldeflist") or []
            name = _figure(call)[0] or "?column?"
            if definitions:
                columns += [d["ColumnDef"]["colname"] for d in definitions]
            elif "FuncCall" in call and name in OUT_COLUMNS:
                columns += OUT_COLUMNS[name]
            elif "FuncCall" in call and name != "unnest":
                columns.append(alias["aliasname"] if alias and len(functions) == 1 else name)
            else:
                known = False
        if body.get("ordinality"):
            columns.append("ordinality")
        return (tuple(columns) if known else None), _figure(functions[0][0])[0] or "?column?"

    def _output(self, body: dict[str, Any], scope: _Scope, star: Columns) -> Columns:
        """A query's output column names, as a subquery or CTE shows them."""
        if body.get("valuesLists"):
            first = body["valuesLists"][0].get("List", {}).get("items") or []
            return tuple(f"column{i}" for i in range(1, len(first) + 1))
        names: list[str] = []
        for target in body.get("targetList") or []:
            res = target.get("ResTarget", {})
            value = res.get("val") or {}
            fields = value.get("ColumnRef", {}).get("fields") or []
            if res.get("name"):
                names.append(res["name"])
            elif fields and "A_Star" in fields[-1]:
                found = scope.lookup(_names(fields)[-1]) if len(fields) > 1 else [star]
                if len(found) != 1 or found[0] is None:
                    return None
                names += found[0]
            else:
                names.append(_figure(value)[0] or "?column?")
        return tuple(names)

    # -- names that could call a function ---------------------------------------------------

    def _column(self, body: dict[str, Any], scope: _Scope, loc: int) -> None:
        """A qualified column ``q.name`` must be a column of the FROM item ``q``: otherwise
        PostgreSQL reads it as the call ``name(q)`` (attribute notation), of any function."""
        fields = body.get("fields") or []
        if len(fields) < 2:
            return  # a bare name is a column or a FROM item's whole row, never a call
        qualifier = _names(fields[:-1])
        if len(qualifier) == 2 and qualifier[0] == EXPLORER_SCHEMA:
            qualifier = qualifier[1:]  # explorer.table.column
        shown = ".".join(_names(fields) + ["*"] * ("A_Star" in fields[-1]))
        if len(qualifier) != 1:
            raise _Refused(ErrorCode.PERMISSION_DENIED, f"column {shown}",
                           f"{shown} is not allowed: name a column as column or item.column",
                           loc)
        found = scope.lookup(qualifier[0])
        if not found:
            raise _Refused(ErrorCode.VALIDATION_ERROR, f"column {shown}",
                           f"{shown}: no FROM item named {qualifier[0]} is in scope here", loc)
        if "A_Star" in fields[-1]:
            return  # the item's whole row
        self._member(qualifier[0], _names(fields[-1:])[0], found, loc)

    def _indirection(self, body: dict[str, Any], scope: _Scope, loc: int) -> None:
        """``(value).name`` selects a field of a composite value, or calls ``name(value)``: it
        is allowed only on a FROM item's whole row (``(item.*).name``) or a known record
        (``(jsonb_each(x)).key``)."""
        indirection = body.get("indirection") or []
        fields = _names(indirection)
        if not fields:
            return  # subscripts and .*
        shown = f"(...).{fields[0]}"
        if len(fields) > 1 or "String" not in indirection[0]:
            raise _Refused(ErrorCode.PERMISSION_DENIED, f"field {shown}",
                           f"field selection {shown} is allowed only on a FROM item's row", loc)
        arg = body.get("arg") or {}
        ref = arg.get("ColumnRef", {}).get("fields") or []
        if len(ref) == 1 and "String" in ref[0]:
            # PostgreSQL reads a bare name as a column before a FROM item, whatever this check
            # makes of the items' columns, and (column).name calls name(column).
            bare = f"({ref[0]['String']['sval']}).{fields[0]}"
            raise _Refused(ErrorCode.PERMISSION_DENIED, f"field {bare}",
                           f"{bare} is not allowed: write {bare[1:].replace(')', '', 1)} for a "
                           "column of a FROM item", loc)
        owner = _figure(arg)[0] or "(...)"
        self._member(owner, fields[0], self._row_columns(arg, scope) or [None], loc)

    def _row_columns(self, arg: dict[str, Any], scope: _Scope) -> list[Columns]:
        """The fields of the composite value ``arg``, when it is one known here."""
        if "FuncCall" in arg:
            record = OUT_COLUMNS.get(_names(arg["FuncCall"]["funcname"])[-1], ())
            return [record if len(record) > 1 else None]  # one OUT column: a plain value
        ref = arg.get("ColumnRef", {}).get("fields") or []
        names = _names(ref)
        if len(ref) == 2 and "A_Star" in ref[1]:
            return scope.lookup(names[0])  # (item.*).name
        return [None]

    def _member(self, owner: str, name: str, found: list[Columns], loc: int) -> None:
        if all(columns is not None and name in columns for columns in found):
            return
        known = found[0] if len(found) == 1 and found[0] is not None else None
        hint = f"; its columns: {', '.join(known)}" if known else ""
        raise _Refused(ErrorCode.PERMISSION_DENIED, f"column {owner}.{name}",
                       f"{owner}.{name} is not a known column of {owner}: PostgreSQL would call "
                       f"a function {name}({owner}), which explorer queries may not do{hint}",
                       loc)

    # -- relations, functions, operators, types ---------------------------------------------

    def _relation(self, body: dict[str, Any], scope: _Scope, loc: int) -> None:
        schema = body.get("schemaname")
        name = body.get("relname", "")
        qualified = ".".join(p for p in (body.get("catalogname"), schema, name) if p)
        if body.get("catalogname") is None and (
            (schema is None and (name in scope.ctes or name in self.relations))
            or (schema == EXPLORER_SCHEMA and name in self.relations)
        ):
            self._fields(body, scope, loc, skip=("relname", "schemaname"))
            return
        raise _Refused(ErrorCode.PERMISSION_DENIED, f"relation {qualified}",
                       f"relation {qualified} is not one of the explorer tables "
                       f"({', '.join(sorted(self.relations))})", loc)

    def _operator(self, names: list[Any], loc: int) -> None:
        operator = _names(names)
        if len(operator) > 1 and operator[0] != "pg_catalog":
            raise _Refused(ErrorCode.PERMISSION_DENIED, f"operator {'.'.join(operator)}",
                           f"operator {'.'.join(operator)} is not allowed", loc)

    def _function(self, body: dict[str, Any], loc: int) -> None:
        parts = _names(body.get("funcname") or [])
        name = parts[-1] if parts else ""
        schema = parts[0] if len(parts) == 2 else None
        shown = ".".join(parts)
        if len(parts) > 2 or name not in FUNCTIONS \
                or schema not in (None, EXPLORER_SCHEMA if name in WRAPPED else "pg_catalog"):
            why = f"; call {name}, which checks the size of what it makes" \
                if name in WRAPPED and schema == "pg_catalog" else ""
            raise _Refused(ErrorCode.PERMISSION_DENIED, f"function {shown}",
                           f"function {shown} is not allowed in explorer queries{why}", loc)
        if name == "generate_series":
            self._series(body, loc)
        if name in _LITERAL_ARGUMENTS:
            self._literal_argument(name, body, loc)

    def _literal_argument(self, name: str, body: dict[str, Any], loc: int) -> None:
        """The argument of ``name`` that sets its result's size must be a literal, and a small
        one: format's widths add up to at most MAX_VALUE_BYTES (none given by an argument,
        ``%*s``); a jsonpath has no ``.**``, whose result copies each nesting level again."""
        position, keyword, what = _LITERAL_ARGUMENTS[name]
        args = body.get("args") or []
        named = [a["NamedArgExpr"] for a in args if isinstance(a, dict) and "NamedArgExpr" in a]
        arg = next((a.get("arg") for a in named if a.get("name") == keyword), None) \
            if keyword else None
        if arg is None and position < len(args) - len(named):
            arg = args[position]
        if arg is None:
            return  # missing: PostgreSQL refuses the call
        text = _string(arg)
        if text is None:
            raise _Refused(ErrorCode.VALIDATION_ERROR, f"{name} {what}",
                           f"the {what} of {name} must be a string literal in explorer queries",
                           loc)
        if name == "format":
            widths = [m.group(1) for m in _FORMAT_SPEC.finditer(text) if m.group(1)]
            if any(w.startswith("*") for w in widths) \
                    or sum(int(w) for w in widths) > MAX_VALUE_BYTES:
                raise _Refused(ErrorCode.VALIDATION_ERROR, "format width",
                               "format widths must be written as numbers adding up to at most "
                               f"{MAX_VALUE_BYTES} in explorer queries", loc)
        elif name.startswith("jsonb_path") and "**" in text:
            raise _Refused(ErrorCode.VALIDATION_ERROR, f"{name} .**",
                           f"{name} with .** is not allowed in explorer queries: it copies every "
                           "nesting level of the value again; use jsonb_path_exists or name the "
                           "levels", loc)

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
