"""The part of GitHub's GraphQL API (v4, ``POST /graphql``) the GitHub source reads, for the fake
GitHub: the query language itself (operations, variables, aliases, arguments, inline fragments and
named fragments), checked against the subset of GitHub's schema below and answered from the fake's
data in GitHub's response shape, with what GitHub charges for it.

The charge is GitHub's documented one ("Rate limits and query limits for the GraphQL API"): every
connection costs as many requests as its parent connections can hold (the product of the
``first``/``last`` of the connections around it, 1 at the top), the sum is divided by 100 and
rounded to the nearest whole number, and a query costs at least 1 point. The node limit is
checked too: every connection needs ``first`` or ``last`` of 1 to 100, and a query may ask for
at most 500,000 nodes. Errors are GitHub's: a query that does not parse or does not fit the
schema is answered 200 with ``errors`` and no ``data`` (``undefinedField`` and its kin in
``extensions.code``); an object that does not exist is null in ``data`` with a ``NOT_FOUND``
error naming its path.

Cursors: GitHub documents none of their semantics, so a cursor here is a place in a list
computed afresh for every request (as the REST list's page numbers are): an issue changed between
two requests leaves its place in a list ordered by update, and the issues after it move up one.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

__all__ = ["GraphQLError", "Obj", "Query", "cost_of", "parse"]

MAX_NODES = 500_000


class GraphQLError(Exception):
    """A query GitHub refuses as a whole: 200 with ``errors`` and no ``data``."""

    def __init__(self, message: str, *, line: int = 0, column: int = 0,
                 **extra: Any) -> None:
        super().__init__(message)
        self.entry: dict[str, Any] = {"message": message, **extra}
        if line:
            self.entry["locations"] = [{"line": line, "column": column}]


# --- the language -----------------------------------------------------------------------------
_TOKEN = re.compile(r'''
    (?P<skip>[\s,\ufeff]+|\#[^\n]*)
  | (?P<punct>\.\.\.|[!$()\:=@\[\]{}|])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<number>-?(?:0|[1-9][0-9]*)(?P<frac>\.[0-9]+)?(?P<exp>[eE][+-]?[0-9]+)?)
  | (?P<string>"(?:[^"\\\n]|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*")
''', re.VERBOSE)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}


@dataclasses.dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclasses.dataclass(slots=True)
class Field:
    alias: str | None
    name: str
    args: dict[str, Any]
    selections: list[Any] | None
    line: int
    column: int

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclasses.dataclass(slots=True)
class Fragment:
    """An inline fragment (``name`` None) or a spread of the named fragment ``name``."""

    on: str | None
    selections: list[Any] | None
    name: str | None = None
    line: int = 0
    column: int = 0


@dataclasses.dataclass(slots=True)
class Query:
    """A parsed document's one query: its variables (name -> (type, default)), selections and
    named fragments."""

    variables: dict[str, tuple[str, Any]]
    selections: list[Any]
    fragments: dict[str, Fragment]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int, int]] = []
        line, start = 1, 0
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                raise GraphQLError(f"Parse error on \"{text[position]}\" at [{line}, "
                                   f"{position - start + 1}]", line=line,
                                   column=position - start + 1)
            kind = match.lastgroup if match.lastgroup not in ("frac", "exp") else "number"
            if kind != "skip":
                self.tokens.append((kind, match.group(kind), line, position - start + 1))
            for newline in re.finditer("\n", match.group(0)):
                line, start = line + 1, position + newline.end()
            position = match.end()
        self.at = 0

    def peek(self, value: str | None = None) -> bool:
        if self.at >= len(self.tokens):
            return False
        return value is None or self.tokens[self.at][1] == value

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int, int]:
        if self.at >= len(self.tokens):
            raise GraphQLError("Parse error on end of input (expected "
                               f"{value or kind or 'more'})")
        token = self.tokens[self.at]
        if (value is not None and token[1] != value) or (kind is not None and token[0] != kind):
            raise GraphQLError(f"Parse error on \"{token[1]}\" ({token[0].upper()}) at "
                               f"[{token[2]}, {token[3]}]", line=token[2], column=token[3])
        self.at += 1
        return token

    def document(self) -> Query:
        operations: list[tuple[dict[str, tuple[str, Any]], list[Any]]] = []
        fragments: dict[str, Fragment] = {}
        while self.peek():
            if self.peek("fragment"):
                _, _, line, column = self.take("fragment")
                name = self.take(kind="name")[1]
                self.take("on")
                fragments[name] = Fragment(self.take(kind="name")[1], self.selection_set(),
                                           name, line, column)
            elif self.peek("{"):
                operations.append(({}, self.selection_set()))
            else:
                _, word, line, column = self.take(kind="name")
                if word != "query":
                    raise GraphQLError(f"the fake answers queries only, not {word}",
                                       line=line, column=column)
                if self.peek() and self.tokens[self.at][0] == "name":
                    self.take()
                variables = self.variable_definitions() if self.peek("(") else {}
                operations.append((variables, self.selection_set()))
        if len(operations) != 1:
            raise GraphQLError("the fake answers documents of exactly one operation")
        return Query(operations[0][0], operations[0][1], fragments)

    def variable_definitions(self) -> dict[str, tuple[str, Any]]:
        self.take("(")
        found: dict[str, tuple[str, Any]] = {}
        while not self.peek(")"):
            self.take("$")
            name = self.take(kind="name")[1]
            self.take(":")
            type_ref = self.type_ref()
            default = None
            if self.peek("="):
                self.take("=")
                default = self.value()
            found[name] = (type_ref, default)
        self.take(")")
        return found

    def type_ref(self) -> str:
        if self.peek("["):
            self.take("[")
            inner = f"[{self.type_ref()}]"
            self.take("]")
        else:
            inner = self.take(kind="name")[1]
        return inner + ("!" if self.peek("!") and self.take("!") else "")

    def selection_set(self) -> list[Any]:
        self.take("{")
        selections: list[Any] = []
        while not self.peek("}"):
            selections.append(self.selection())
        self.take("}")
        return selections

    def selection(self) -> Any:
        if self.peek("..."):
            _, _, line, column = self.take("...")
            if self.peek("on"):
                self.take("on")
                return Fragment(self.take(kind="name")[1], self.selection_set(),
                                line=line, column=column)
            if self.peek("{"):
                return Fragment(None, self.selection_set(), line=line, column=column)
            return Fragment(None, None, self.take(kind="name")[1], line, column)
        _, name, line, column = self.take(kind="name")
        alias = None
        if self.peek(":"):
            self.take(":")
            alias, name = name, self.take(kind="name")[1]
        args: dict[str, Any] = {}
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                key = self.take(kind="name")[1]
                self.take(":")
                args[key] = self.value()
            self.take(")")
        if self.peek("@"):
            token = self.tokens[self.at]
            raise GraphQLError("the fake takes no directives", line=token[2], column=token[3])
        return Field(alias, name, args, self.selection_set() if self.peek("{") else None,
                     line, column)

    def value(self) -> Any:
        kind, text, _, _ = self.tokens[self.at] if self.peek() else ("", "", 0, 0)
        if text == "$":
            self.take("$")
            return Var(self.take(kind="name")[1])
        if text == "[":
            self.take("[")
            items = []
            while not self.peek("]"):
                items.append(self.value())
            self.take("]")
            return items
        if text == "{":
            self.take("{")
            fields = {}
            while not self.peek("}"):
                key = self.take(kind="name")[1]
                self.take(":")
                fields[key] = self.value()
            self.take("}")
            return fields
        self.take()
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "string":
            return re.sub(r"\\(u[0-9A-Fa-f]{4}|.)", lambda m: chr(int(m[1][1:], 16))
                          if m[1][0] == "u" else _ESCAPES[m[1]], text[1:-1])
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(text, _Enum(text))
        raise GraphQLError(f"Parse error on \"{text}\" ({kind.upper()})")


class _Enum(str):
    """An enum value written bare in a query."""


def parse(text: str) -> Query:
    return _Parser(text).document()


# --- the schema (what of GitHub's the source reads) -------------------------------------------
_PAGING = {"first", "last", "after", "before"}
# type -> field -> (type of the value, the arguments it takes)
SCHEMA: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
# abstract type -> the object types that may stand for it
ABSTRACT: dict[str, set[str]] = {
    "Node": {"Issue", "IssueComment", "Repository", "User", "ClosedEvent", "ReopenedEvent"},
    "Actor": {"User", "Bot"},
    "IssueTimelineItems": {"ClosedEvent", "ReopenedEvent", "IssueComment"},
}
TIMELINE_TYPES = {"CLOSED_EVENT": "ClosedEvent", "REOPENED_EVENT": "ReopenedEvent",
                  "ISSUE_COMMENT": "IssueComment"}
# The other IssueTimelineItemsItemType values GitHub has, which the fake never holds.
OTHER_TIMELINE_TYPES = {
    "ADDED_TO_PROJECT_EVENT", "ASSIGNED_EVENT", "COMMENT_DELETED_EVENT", "CONNECTED_EVENT",
    "CROSS_REFERENCED_EVENT", "DEMILESTONED_EVENT", "DISCONNECTED_EVENT", "LABELED_EVENT",
    "LOCKED_EVENT", "MARKED_AS_DUPLICATE_EVENT", "MENTIONED_EVENT", "MILESTONED_EVENT",
    "PINNED_EVENT", "REFERENCED_EVENT", "RENAMED_TITLE_EVENT", "SUBSCRIBED_EVENT",
    "TRANSFERRED_EVENT", "UNASSIGNED_EVENT", "UNLABELED_EVENT", "UNLOCKED_EVENT",
    "UNPINNED_EVENT", "UNSUBSCRIBED_EVENT"}


def _type(type_name: str, /, **fields: str | tuple[str, set[str]]) -> None:
    SCHEMA[type_name] = {key: (spec, frozenset()) if isinstance(spec, str)
                    else (spec[0], frozenset(spec[1])) for key, spec in fields.items()}


def _connection(node: str) -> str:
    name = f"{node}Connection"
    _type(f"{node}Edge", node=node, cursor="String!")
    _type(name, nodes=f"[{node}]", edges=f"[{node}Edge]", pageInfo="PageInfo!",
          totalCount="Int!")
    return name


_type("Query", repository=("Repository", {"owner", "name", "followRenames"}),
      node=("Node", {"id"}), rateLimit=("RateLimit", {"dryRun"}), viewer="User!")
_type("Repository", id="ID!", name="String!", nameWithOwner="String!",
      hasIssuesEnabled="Boolean!", issue=("Issue", {"number"}),
      issues=(_connection("Issue"), _PAGING | {"orderBy", "filterBy", "states", "labels"}))
_type("Issue", id="ID!", databaseId="Int", fullDatabaseId="BigInt", number="Int!",
      title="String!", body="String!", state="IssueState!", stateReason="IssueStateReason",
      createdAt="DateTime!", updatedAt="DateTime!", closedAt="DateTime", url="URI!",
      author="Actor", milestone="Milestone", issueType="IssueType",
      labels=(_connection("Label"), _PAGING | {"orderBy"}),
      assignees=(_connection("User"), _PAGING),
      comments=(_connection("IssueComment"), _PAGING | {"orderBy"}),
      timelineItems=(_connection("IssueTimelineItems"), _PAGING | {"itemTypes", "since", "skip"}))
_type("IssueComment", id="ID!", databaseId="Int", fullDatabaseId="BigInt", body="String!",
      createdAt="DateTime!", updatedAt="DateTime!", author="Actor", url="URI!")
_type("ClosedEvent", id="ID!", createdAt="DateTime!", stateReason="IssueStateReason",
      actor="Actor")
_type("ReopenedEvent", id="ID!", createdAt="DateTime!", stateReason="IssueStateReason",
      actor="Actor")
_type("User", id="ID!", login="String!",
      repositories=(_connection("Repository"), _PAGING | {"orderBy", "ownerAffiliations"}))
_type("Bot", id="ID!", login="String!")
_type("Label", id="ID!", name="String!", color="String!")
_type("Milestone", id="ID!", number="Int!", title="String!", dueOn="DateTime")
_type("IssueType", id="ID!", name="String!")
_type("PageInfo", hasNextPage="Boolean!", hasPreviousPage="Boolean!", startCursor="String",
      endCursor="String")
_type("RateLimit", cost="Int!", limit="Int!", remaining="Int!", resetAt="DateTime!",
      used="Int!", nodeCount="Int!")
_type("Node", id="ID!")
_type("Actor", login="String!")
_type("IssueTimelineItems")
_SCALARS = {"ID", "Int", "BigInt", "String", "Boolean", "DateTime", "URI", "IssueState",
            "IssueStateReason"}


def _named(type_ref: str) -> str:
    return type_ref.strip("[]!")


def _fields_of(type_name: str, field: str) -> tuple[str, frozenset[str]] | None:
    if field == "__typename":
        return "String!", frozenset()
    return SCHEMA.get(type_name, {}).get(field)


def _value(raw: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(raw, Var):
        return variables.get(raw.name)
    if isinstance(raw, list):
        return [_value(v, variables) for v in raw]
    if isinstance(raw, dict):
        return {k: _value(v, variables) for k, v in raw.items()}
    return str(raw) if isinstance(raw, _Enum) else raw


def _variables_in(raw: Any) -> set[str]:
    if isinstance(raw, Var):
        return {raw.name}
    values = raw.values() if isinstance(raw, dict) else raw if isinstance(raw, list) else ()
    return set().union(*map(_variables_in, values))


def variables_of(query: Query, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The query's variables with their defaults, each required one given."""
    values = dict(given or {})
    for name, (type_ref, default) in query.variables.items():
        if values.get(name) is None:
            if type_ref.endswith("!"):
                raise GraphQLError(f"Variable ${name} of type {type_ref} was provided invalid "
                                   "value", extensions={"code": "variableMismatch"})
            values[name] = default
    return values


def cost_of(query: Query, variables: Mapping[str, Any], *,
            without: frozenset[str] = frozenset()) -> tuple[int, int]:
    """(points, nodes) of a query, as GitHub computes them before it runs it; refuses a query
    that does not fit the schema (less the ``Type.field`` names in ``without``: a server that
    lacks them) or the node limit, in GitHub's words."""
    totals = {"requests": 0, "nodes": 0}
    used: set[str] = set()
    used_variables: set[str] = set()

    def walk(selections: list[Any], type_name: str, parents: int, seen: tuple[str, ...]) -> None:
        for selection in selections:
            if isinstance(selection, Fragment):
                fragment = selection
                if selection.name is not None:
                    used.add(selection.name)
                    fragment = query.fragments.get(selection.name)  # type: ignore[assignment]
                    if fragment is None:
                        raise GraphQLError(f"Fragment {selection.name} was used, but not "
                                           "defined", line=selection.line,
                                           column=selection.column,
                                           extensions={"code": "useAndDefineFragment"})
                    if selection.name in seen:
                        raise GraphQLError(f"Fragment {selection.name} contains an infinite "
                                           "loop")
                on = fragment.on or type_name
                if on not in SCHEMA:
                    raise GraphQLError(f"No such type {on}, so it can't be a fragment "
                                       "condition", line=fragment.line, column=fragment.column,
                                       extensions={"code": "undefinedType", "typeName": on})
                if on != type_name and on not in ABSTRACT.get(type_name, ()) \
                        and type_name not in ABSTRACT.get(on, ()):
                    raise GraphQLError(f"Fragment on {on} can't be spread inside {type_name}",
                                       line=fragment.line, column=fragment.column,
                                       extensions={"code": "fragmentSpreadTypeMismatch"})
                walk(fragment.selections or [], on, parents,
                     (*seen, selection.name) if selection.name else seen)
                continue
            spec = _fields_of(type_name, selection.name)
            if spec is None or f"{type_name}.{selection.name}" in without:
                raise GraphQLError(f"Field '{selection.name}' doesn't exist on type "
                                   f"'{type_name}'", line=selection.line,
                                   column=selection.column,
                                   extensions={"code": "undefinedField", "typeName": type_name,
                                               "fieldName": selection.name})
            value_type, takes = spec
            for name in _variables_in(selection.args):
                used_variables.add(name)
                if name not in query.variables:
                    raise GraphQLError(f"Variable ${name} is used by anonymous query but not "
                                       "declared", line=selection.line, column=selection.column,
                                       extensions={"code": "variableNotDefined",
                                                   "variableName": name})
            for arg in selection.args:
                if arg not in takes:
                    raise GraphQLError(f"Field '{selection.name}' doesn't accept argument "
                                       f"'{arg}'", line=selection.line, column=selection.column,
                                       extensions={"code": "argumentNotAccepted",
                                                   "name": selection.name, "argumentName": arg})
            named = _named(value_type)
            if (named in _SCALARS) != (selection.selections is None):
                what = "must have" if selection.selections is None else "can't have"
                raise GraphQLError(f"Field '{selection.name}' {what} a selection",
                                   line=selection.line, column=selection.column)
            inner = parents
            if named.endswith("Connection"):
                first = _value(selection.args.get("first"), variables)
                last = _value(selection.args.get("last"), variables)
                size = first if first is not None else last
                if size is None:
                    raise GraphQLError(f"You must provide a `first` or `last` value to properly "
                                       f"paginate the `{selection.name}` connection.",
                                       line=selection.line, column=selection.column,
                                       type="MISSING_PAGINATION_BOUNDARIES")
                if not 1 <= size <= 100:
                    raise GraphQLError(f"Requesting {size} records on the `{selection.name}` "
                                       "connection exceeds the `first` limit of 100 records.",
                                       line=selection.line, column=selection.column,
                                       type="EXCESSIVE_PAGINATION")
                totals["requests"] += parents
                totals["nodes"] += parents * size
                inner = parents * size
            if selection.selections is not None:
                walk(selection.selections, named, inner, seen)

    walk(query.selections, "Query", 1, ())
    if unused := sorted(set(query.variables) - used_variables):
        raise GraphQLError(f"Variable ${unused[0]} is declared by anonymous query but not used",
                           extensions={"code": "variableNotUsed", "variableName": unused[0]})
    if unused := sorted(set(query.fragments) - used):
        raise GraphQLError(f"Fragment {unused[0]} was defined, but not used",
                           extensions={"code": "useAndDefineFragment", "fragmentName": unused[0]})
    if totals["nodes"] > MAX_NODES:
        raise GraphQLError(f"This query requests up to {totals['nodes']:,} possible nodes which "
                           f"exceeds the maximum limit of {MAX_NODES:,}.",
                           type="MAX_NODE_LIMIT_EXCEEDED")
    # "Divide the number by 100 and round the result to the nearest whole number"; at least 1.
    return max(1, math.floor(totals["requests"] / 100 + 0.5)), totals["nodes"]


# --- answering --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Obj:
    """An object of the fake's data as GraphQL sees it: its type and what it is made of."""

    type: str
    data: Any


Resolver = Callable[[Obj, dict[str, Any]], Any]


def cursor(place: int) -> str:
    return base64.b64encode(f"cursor:v2:{place}".encode()).decode()


def _place(raw: str) -> int:
    try:
        text = base64.b64decode(raw.encode(), validate=True).decode()
        if text.startswith("cursor:v2:"):
            return int(text.removeprefix("cursor:v2:"))
    except (ValueError, UnicodeDecodeError):
        pass
    raise GraphQLError(f"`{raw}` does not appear to be a valid cursor.")


def connection(values: list[Any], args: Mapping[str, Any]) -> Obj:
    """One page of ``values`` as GraphQL connections page: ``first`` after ``after``, or
    ``last`` before ``before``."""
    start, end = 0, len(values)
    if args.get("after") is not None:
        start = _place(args["after"]) + 1
    if args.get("before") is not None:
        end = min(end, _place(args["before"]))
    if args.get("first") is not None:
        end = min(end, start + args["first"])
    elif args.get("last") is not None:
        start = max(start, end - args["last"])
    page = [(place, value) for place, value in enumerate(values) if start <= place < end]
    info = {"hasNextPage": end < len(values), "hasPreviousPage": start > 0,
            "startCursor": cursor(page[0][0]) if page else None,
            "endCursor": cursor(page[-1][0]) if page else None}
    return Obj("Connection", {
        "nodes": [v for _, v in page], "pageInfo": Obj("PageInfo", info),
        "edges": [Obj("Edge", {"node": v, "cursor": cursor(p)}) for p, v in page],
        "totalCount": len(values)})


def execute(query: Query, variables: Mapping[str, Any],
            resolvers: Mapping[str, Mapping[str, Resolver]],
            root: Obj) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``data`` and ``errors`` of a checked query. A resolver answers a field's value (an
    :class:`Obj`, a list of them, a scalar or None) or raises GraphQLError for a null with an
    error at the field's path; a field with no resolver is its object's ``data[field]``."""
    errors: list[dict[str, Any]] = []

    def fields(selections: list[Any], concrete: str, declared: str) -> list[Field]:
        found: list[Field] = []
        for selection in selections:
            if isinstance(selection, Field):
                found.append(selection)
                continue
            fragment = query.fragments[selection.name] if selection.name else selection
            on = fragment.on or declared
            if on == concrete or concrete in ABSTRACT.get(on, ()):
                found += fields(fragment.selections or [], concrete, on)
        return found

    def resolve(selections: list[Any], obj: Obj, declared: str,
                path: list[Any]) -> dict[str, Any]:
        # An abstract type's object says what it is; a concrete one is what the schema says.
        concrete = obj.type if declared in ABSTRACT else declared
        out: dict[str, Any] = {}
        for field in fields(selections, concrete, declared):
            if field.name == "__typename":
                out[field.key] = concrete
                continue
            args = {k: _value(v, variables) for k, v in field.args.items()}
            resolver = resolvers.get(concrete, {}).get(field.name)
            try:
                value = resolver(obj, args) if resolver else obj.data.get(field.name)
            except GraphQLError as exc:
                errors.append({**exc.entry, "path": [*path, field.key],
                               "locations": [{"line": field.line, "column": field.column}]})
                value = None
            value_type = SCHEMA[concrete][field.name][0]
            out[field.key] = shape(value, field, _named(value_type), [*path, field.key],
                                   out.get(field.key))
        return out

    def shape(value: Any, field: Field, named: str, path: list[Any], before: Any) -> Any:
        if value is None or field.selections is None:
            return value
        if isinstance(value, list):
            return [shape(v, field, named, [*path, n], None) for n, v in enumerate(value)]
        merged = resolve(field.selections, value, named, path)
        return {**before, **merged} if isinstance(before, dict) else merged

    return resolve(query.selections, root, "Query", []), errors


def iso(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None
