"""Compiles a parsed JQL query to an SQL boolean expression over ``work_items``.

Only two things ever reach the SQL text: column names and expressions from the fixed tables in
this module, and ``$n`` placeholders. Every value from the query travels as a bind parameter, with
an explicit cast so its type never depends on inference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spiral_mcp.jql.dates import DateValue, day_of, resolve_date
from spiral_mcp.jql.errors import JqlError
from spiral_mcp.jql.names import DATE_FUNCTIONS
from spiral_mcp.jql.nodes import And, Clause, Empty, Func, Literal, Node, Not, Or, Query, Value
from spiral_mcp.priorities import PRIORITIES, PRIORITY_ALIASES

__all__ = ["CompiledQuery", "FieldReference", "compile_query", "field_reference"]


@dataclass(frozen=True)
class CompiledQuery:
    """A compiled query: ``where`` is an SQL boolean expression whose ``$n`` placeholders take
    ``params`` in order; ``order_by`` pairs an allowlisted SQL expression with 'ASC' or 'DESC',
    and ``order_kinds`` says what each expression's values are: 'text', 'integer' (int4) or
    'timestamp' (a keyset cursor checks the values it carries against them)."""

    where: str
    params: list[Any]
    order_by: list[tuple[str, str]]
    order_kinds: list[str]


_EQ = ("=", "!=", "IN", "NOT IN")
_CMP = (">", ">=", "<", "<=")
_IS = ("IS", "IS NOT")
_LIKE = ("~", "!~")
_OP_ORDER = ("=", "!=", "~", "!~", ">", ">=", "<", "<=", "IN", "NOT IN", "IS", "IS NOT")


@dataclass(frozen=True)
class _Field:
    kind: str  # key, project, status, enum, user, labels, text, date, day
    column: str  # a work_items column (the text field uses two)
    ops: tuple[str, ...]
    nullable: bool = False  # may be empty: NULL, or for labels no element


_FIELDS: dict[str, _Field] = {
    "project": _Field("project", "project_key", _EQ),
    "key": _Field("key", "key", _EQ + _CMP),
    "parent": _Field("key", "parent_key", _EQ + _IS, nullable=True),
    "status": _Field("status", "status", _EQ),
    "statusCategory": _Field("enum", "status_category", _EQ),
    "type": _Field("enum", "type", _EQ),
    "priority": _Field("enum", "priority", _EQ + _CMP),
    "source": _Field("enum", "source", _EQ),
    "assignee": _Field("user", "assignee", _EQ + _IS, nullable=True),
    "reporter": _Field("user", "reporter", _EQ + _IS, nullable=True),
    "labels": _Field("labels", "labels", _EQ + _IS, nullable=True),
    "summary": _Field("text", "title", _LIKE),
    "description": _Field("text", "description", _LIKE + _IS, nullable=True),
    "text": _Field("text", "title", _LIKE),
    "created": _Field("date", "created_at", _EQ + _CMP),
    "updated": _Field("date", "updated_at", _EQ + _CMP),
    "resolved": _Field("date", "resolved_at", _EQ + _CMP + _IS, nullable=True),
    # A date without a time, as Jira's due date: compared (and sorted) by its UTC day.
    "due": _Field("day", "due_at", _EQ + _CMP + _IS, nullable=True),
}
_DATES = ("date", "day")


@dataclass(frozen=True)
class FieldReference:
    """What the JQL reference (a resource) says of one field, read from the tables below."""

    name: str
    kind: str
    operators: tuple[str, ...]
    values: tuple[str, ...]   # an enumerated field's canonical values, in rank order
    sortable: bool


def field_reference() -> list[FieldReference]:
    """Every field as this compiler takes it: operators, values, whether ORDER BY takes it."""
    return [FieldReference(
        name=name, kind=spec.kind,
        operators=tuple(o for o in _OP_ORDER if o in spec.ops and o not in _IS)
        + (("IS EMPTY", "IS NOT EMPTY") if "IS" in spec.ops else ()),
        values=tuple(dict.fromkeys(_ENUMS[name].values())) if name in _ENUMS else (),
        sortable=name in _SORT) for name, spec in _FIELDS.items()]

# Enumerated fields: every accepted spelling (lower-cased, runs of spaces/hyphens as "_") to the
# stored value. The columns hold only the canonical lower-case values (CHECK constraints), so
# normalising here is the case-insensitive match and keeps the plain column indexable.
_ENUMS: dict[str, dict[str, str]] = {
    "statusCategory": {
        "todo": "todo", "to_do": "todo", "new": "todo",
        "in_progress": "in_progress", "inprogress": "in_progress", "indeterminate": "in_progress",
        "blocked": "blocked",
        "in_review": "in_review", "inreview": "in_review",
        "done": "done", "complete": "done",
        "cancelled": "cancelled", "canceled": "cancelled",
    },
    "type": {
        "epic": "epic", "story": "story", "task": "task", "bug": "bug", "subtask": "subtask",
        "sub_task": "subtask", "feature": "feature", "new_feature": "feature",
    },
    "priority": PRIORITY_ALIASES,  # the writers' own table: what they store, JQL finds
    "source": {"local": "local", "jira": "jira", "github": "github", "asana": "asana"},
}
_PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
_CATEGORY_RANK = ("todo", "in_progress", "blocked", "in_review", "done", "cancelled")

# ORDER BY allowlist: field -> (column, expression, kind of its values); "{c}" is replaced by
# the (alias-qualified) column.
_SORT: dict[str, tuple[tuple[str, str, str], ...]] = {
    "project": (("project_key", "{c}", "text"),),
    # By number, so PROJ-9 comes before PROJ-10.
    "key": (("project_key", "{c}", "text"), ("number", "{c}", "integer")),
    "parent": (("parent_key", "{c}", "text"),),
    "status": (("status", "{c}", "text"),),
    "statusCategory": (("status_category", "CASE {c} " + " ".join(
        f"WHEN '{name}' THEN {rank}" for rank, name in enumerate(_CATEGORY_RANK)) + " END",
        "integer"),),
    "type": (("type", "{c}", "text"),),
    # Rank, so DESC lists critical first, as Jira does.
    "priority": (("priority", "CASE {c} " + " ".join(
        f"WHEN '{name}' THEN {rank}" for name, rank in _PRIORITY_RANK.items()) + " END",
        "integer"),),
    "source": (("source", "{c}", "text"),),
    "assignee": (("assignee", "{c}", "text"),),
    "reporter": (("reporter", "{c}", "text"),),
    "summary": (("title", "{c}", "text"),),
    "created": (("created_at", "{c}", "timestamp"),),
    "updated": (("updated_at", "{c}", "timestamp"),),
    "resolved": (("resolved_at", "{c}", "timestamp"),),
    # By day, so a second sort key orders the items due the same day.
    "due": (("due_at", "date_trunc('day', {c}, 'UTC')", "timestamp"),),
}

_KEY = re.compile(r"([A-Z][A-Z0-9_]{0,19})-([1-9][0-9]{0,9})")
_PROJECT = re.compile(r"[A-Z][A-Z0-9_]{0,19}")
_ALIAS = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CURRENT_USER = "currentUser() needs an API key that acts for a user"
_INT_MAX = 2**31 - 1


def _negate(sql: str) -> str:
    return f"NOT ({sql})"


def _show(value: Value) -> str:
    if isinstance(value, Literal):
        return value.text
    if isinstance(value, Func):
        return f"{value.name}()"
    return "EMPTY"


def _like_pattern(text: str) -> str:
    # Contains-match; the value's own wildcards are literal (backslash is LIKE's default escape).
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class _Compiler:
    def __init__(self, *, user: str | None, now: datetime, first_param: int, alias: str) -> None:
        self.user = user
        self.now = now
        self.first_param = first_param
        self.alias = alias
        self.params: list[Any] = []

    # -- SQL pieces --------------------------------------------------------------------------
    def bind(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${self.first_param + len(self.params) - 1}::{cast}"

    def col(self, name: str) -> str:
        return f"{self.alias}.{name}" if self.alias else name

    # -- tree ----------------------------------------------------------------------------------
    def node(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.node(child) for child in node.children) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.node(child) for child in node.children) + ")"
        if isinstance(node, Not):
            return _negate(self.node(node.child))
        return self.clause(node)

    def clause(self, clause: Clause) -> str:
        spec = _FIELDS[clause.field]
        op = clause.op
        if op in ("=", "!=") and isinstance(clause.value, Empty) and "IS" in spec.ops:
            op = "IS" if op == "=" else "IS NOT"  # `x = EMPTY` is Jira's `x IS EMPTY`
        if op not in spec.ops:
            allowed = ", ".join(o for o in _OP_ORDER if o in spec.ops)
            raise JqlError(clause.op_pos, op, f"an operator for {clause.field}: {allowed}")
        if op in _IS:
            sql = self.empty(spec)
            return sql if op == "IS" else _negate(sql)
        if op in ("IN", "NOT IN"):
            assert isinstance(clause.value, tuple)
            sql = self.any_of(clause, spec, clause.value)
            return sql if op == "IN" else _negate(sql)
        value = clause.value
        assert not isinstance(value, tuple)
        if op in ("=", "!="):
            sql = self.any_of(clause, spec, (value,))
            return sql if op == "=" else _negate(sql)
        if isinstance(value, Empty):
            raise JqlError(value.pos, "EMPTY", f"a {clause.field} value (EMPTY takes IS or IS NOT)")
        if op in _LIKE:
            sql = self.contains(clause, spec, value)
            return sql if op == "~" else _negate(sql)
        return self.compare(clause, spec, op, value)

    def empty(self, spec: _Field) -> str:
        column = self.col(spec.column)
        if spec.kind == "labels":
            return f"cardinality({column}) = 0"
        if spec.kind == "text":
            return f"({column} IS NULL OR {column} = '')"
        return f"{column} IS NULL"

    def any_of(self, clause: Clause, spec: _Field, values: tuple[Value, ...]) -> str:
        """The predicate "the field equals one of ``values``" (EMPTY among them allowed)."""
        parts: list[str] = []
        if any(isinstance(v, Empty) for v in values):
            if not spec.nullable:
                pos = next(v.pos for v in values if isinstance(v, Empty))
                raise JqlError(pos, "EMPTY",
                               f"a {clause.field} value ({clause.field} is never empty)")
            parts.append(self.empty(spec))
        present = [v for v in values if not isinstance(v, Empty)]
        if present:
            parts.insert(0, self.equals(clause, spec, present))
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def equals(self, clause: Clause, spec: _Field, values: list[Literal | Func]) -> str:
        column = self.col(spec.column)
        if spec.kind in _DATES:
            ranges = []
            for value in values:
                date = self.date(clause, spec, value)
                if date.last is None:
                    ranges.append(f"{column} = {self.bind(date.start, 'timestamptz')}")
                else:  # a written day (or minute) means "within it"
                    ranges.append(f"({column} >= {self.bind(date.start, 'timestamptz')} AND "
                                  f"{column} <= {self.bind(date.last, 'timestamptz')})")
            return ranges[0] if len(ranges) == 1 else "(" + " OR ".join(ranges) + ")"
        if spec.kind == "status":
            # Workflow statuses are free text; match them as Jira does, ignoring case.
            texts = [self.text_value(clause, v) for v in values]
            binds = ", ".join(f"lower({self.bind(t, 'text')})" for t in texts)
            if len(texts) == 1:
                return f"lower({column}) = {binds}"
            return f"lower({column}) IN ({binds})"
        texts = [self.scalar(clause, spec, v) for v in values]
        if spec.kind == "labels":
            # No labels is an empty field, as a NULL is: unknown, so `!=` and `NOT IN` leave
            # such items out, as Jira does and as they do for every other field.
            column = f"NULLIF({column}, '{{}}')"
            if len(texts) == 1:
                return f"{column} @> ARRAY[{self.bind(texts[0], 'text')}]"
            return f"{column} && {self.bind(texts, 'text[]')}"
        if len(texts) == 1:
            return f"{column} = {self.bind(texts[0], 'text')}"
        return f"{column} = ANY({self.bind(texts, 'text[]')})"

    def contains(self, clause: Clause, spec: _Field, value: Literal | Func) -> str:
        text = self.text_value(clause, value)
        if not text.strip():
            raise JqlError(value.pos, _show(value), "some text to search for")
        pattern = self.bind(_like_pattern(text), "text")
        if clause.field == "text":
            # Jira's text field: summary, description, comments and text custom fields (this
            # store's custom fields whose value is a string). COALESCE, so `text !~ x` keeps an
            # item whose title lacks x and has no description. The planner reads the tenant's
            # comments once (comments_item leads with tenant_id) or probes them item by item
            # (tenant_id, work_item_id); an item without custom fields skips their function
            # scan. The subqueries' aliases derive from the item's, so they never hide it.
            item = self.alias or "work_items"
            comment, custom = f"{item}_comment", f"{item}_custom"
            return (f"({self.col('title')} ILIKE {pattern} OR "
                    f"COALESCE({self.col('description')}, '') ILIKE {pattern} OR "
                    f"EXISTS (SELECT 1 FROM comments {comment} "
                    f"WHERE {comment}.tenant_id = {item}.tenant_id "
                    f"AND {comment}.work_item_id = {item}.id "
                    f"AND {comment}.body ILIKE {pattern}) OR "
                    f"({item}.custom_fields <> '{{}}' AND "
                    f"EXISTS (SELECT 1 FROM jsonb_each({item}.custom_fields) {custom}(name, value) "
                    f"WHERE jsonb_typeof({custom}.value) = 'string' "
                    f"AND {custom}.value #>> '{{}}' ILIKE {pattern})))")
        return f"{self.col(spec.column)} ILIKE {pattern}"

    def compare(self, clause: Clause, spec: _Field, op: str, value: Literal | Func) -> str:
        column = self.col(spec.column)
        if spec.kind in _DATES:
            date = self.date(clause, spec, value)
            # A day field compares days: `<= D` takes all of D, `> D` none of it.
            bound = date.last if spec.kind == "day" and op in ("<=", ">") else date.start
            return f"{column} {op} {self.bind(bound, 'timestamptz')}"
        if spec.kind == "key":  # by number within the key's project
            project, number = self.parse_key(value)
            return (f"({self.col('project_key')} = {self.bind(project, 'text')} AND "
                    f"{self.col('number')} {op} {self.bind(number, 'integer')})")
        # priority: the set of values ranking on the right side of the given one
        rank = _PRIORITY_RANK[self.scalar(clause, spec, value)]
        test = {">": rank.__lt__, ">=": rank.__le__, "<": rank.__gt__, "<=": rank.__ge__}[op]
        chosen = [name for name, r in _PRIORITY_RANK.items() if test(r)]
        return f"{column} = ANY({self.bind(chosen, 'text[]')})"

    # -- values --------------------------------------------------------------------------------
    def literal(self, value: Literal | Func, what: str) -> Literal:
        if isinstance(value, Func):
            raise JqlError(value.pos, _show(value), what)
        return value

    def text_value(self, clause: Clause, value: Literal | Func) -> str:
        return self.literal(value, f"a {clause.field} value, not a function").text

    def date(self, clause: Clause, spec: _Field, value: Literal | Func) -> DateValue:
        if isinstance(value, Func) and value.name not in DATE_FUNCTIONS:
            raise JqlError(value.pos, _show(value), f"a date for {clause.field}")
        date = resolve_date(value, self.now)
        # A day field holds a date, as Jira's due date does: any value (2026-01-31, -1d, now())
        # stands for its whole UTC day, the day `due = 2026-01-31` has always meant.
        return day_of(date) if spec.kind == "day" else date

    def parse_key(self, value: Literal | Func) -> tuple[str, int]:
        literal = self.literal(value, "an issue key like PROJ-12")
        match = _KEY.fullmatch(literal.text.strip().upper())
        if match is None or int(match.group(2)) > _INT_MAX:
            raise JqlError(value.pos, literal.text, "an issue key like PROJ-12")
        return match.group(1), int(match.group(2))

    def scalar(self, clause: Clause, spec: _Field, value: Literal | Func) -> str:
        """The stored form of one value of a key, project, enum, user or labels field."""
        if spec.kind == "user":
            if isinstance(value, Func) and value.name == "currentUser":
                if self.user is None:
                    raise JqlError(value.pos, "currentUser()", "a user", detail=_CURRENT_USER)
                return self.user
            return self.literal(value, f"a user or currentUser() for {clause.field}").text
        if spec.kind == "key":
            project, number = self.parse_key(value)
            return f"{project}-{number}"
        text = self.text_value(clause, value)
        if spec.kind == "project":
            upper = text.strip().upper()
            if _PROJECT.fullmatch(upper) is None:
                raise JqlError(value.pos, text, "a project key like PROJ")
            return upper
        if spec.kind == "enum":
            names = _ENUMS[clause.field]
            found = names.get(re.sub(r"[\s\-_]+", "_", text.strip().lower()))
            if found is None:
                choices = ", ".join(dict.fromkeys(names.values()))
                raise JqlError(value.pos, text, f"a {clause.field} value: {choices}")
            return found
        return text  # labels


def compile_query(query: Query, *, user: str | None, now: datetime, first_param: int = 1,
                  alias: str = "w") -> CompiledQuery:
    """Compile a parsed query; see :func:`spiral_mcp.jql.compile_jql`."""
    if alias and _ALIAS.fullmatch(alias) is None:
        raise ValueError(f"not a plain SQL alias: {alias!r}")  # caller's bug, not the user's
    if first_param < 1:
        raise ValueError("first_param must be at least 1")
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    compiler = _Compiler(user=user, now=now, first_param=first_param, alias=alias)
    where = "TRUE" if query.where is None else compiler.node(query.where)
    order_by: list[tuple[str, str]] = []
    order_kinds: list[str] = []
    seen: set[str] = set()
    for key in query.order_by:
        if key.field not in _SORT:
            raise JqlError(key.pos, key.field, "a field to sort by: " + ", ".join(_SORT))
        if key.field in seen:
            raise JqlError(key.pos, key.field, "each field at most once in ORDER BY")
        seen.add(key.field)
        for column, template, kind in _SORT[key.field]:
            order_by.append((template.format(c=compiler.col(column)), key.direction))
            order_kinds.append(kind)
    return CompiledQuery(where, compiler.params, order_by, order_kinds)
