"""Named SQL: statements live in ``.sql`` files and are loaded once, checked, by name.

A file holds one or more statements, each introduced by a header::

    -- name: get_issue^
    -- params: issue_key
    -- Anything else in the leading comment is the statement's description.
    SELECT ... WHERE key = $1;

The suffix of the name says what a call returns: none, many rows (``fetch``); ``^`` one row or
None (``fetchrow``); ``$`` one value (``fetchval``); ``!`` the status tag (``execute``).
``params`` names the bind parameters ``$1..$n`` in order; callers pass them by keyword. At load
every statement must parse (PostgreSQL's own parser, via pglast) as exactly one statement that uses
exactly the placeholders it declares, or loading fails with ``file:line`` and the reason.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from pglast import parser as pg_parser

from .tracing import Tracer, statement_span

__all__ = ["Queries", "Query", "QueryFileError", "ResultKind", "placeholder_numbers"]

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)(?P<suffix>[\^$!]?)\s*$")
_PARAMS = re.compile(r"^--\s*params:\s*(?P<params>.*)$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class QueryFileError(ValueError):
    """A statement file is malformed; the message starts with ``file:line``."""


class ResultKind(enum.Enum):
    ROWS = ""
    ROW = "^"
    VALUE = "$"
    STATUS = "!"


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """One named statement and how to call it."""

    name: str
    kind: ResultKind
    sql: str
    params: tuple[str, ...]
    description: str
    origin: str

    def bind(self, arguments: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``$1..$n``; every declared name, nothing else."""
        if arguments.keys() != set(self.params):
            missing = [p for p in self.params if p not in arguments]
            extra = sorted(set(arguments) - set(self.params))
            raise TypeError(f"query {self.name}: missing {missing}, unexpected {extra}")
        return [arguments[p] for p in self.params]

    async def __call__(self, conn: asyncpg.Connection, **arguments: Any) -> Any:
        args = self.bind(arguments)
        match self.kind:
            case ResultKind.ROWS:
                return await conn.fetch(self.sql, *args)
            case ResultKind.ROW:
                return await conn.fetchrow(self.sql, *args)
            case ResultKind.VALUE:
                return await conn.fetchval(self.sql, *args)
            case ResultKind.STATUS:
                return await conn.execute(self.sql, *args)


@dataclasses.dataclass(frozen=True, slots=True)
class _TracedQuery(Query):
    """A named statement that runs in a span of its name when traced work calls it (see
    ``tracing.statement_span``). Only built when tracing is on: untraced, statements are plain
    :class:`Query` objects and pay nothing."""

    tracer: Tracer | None = None
    operation: str = ""

    async def __call__(self, conn: asyncpg.Connection, **arguments: Any) -> Any:
        assert self.tracer is not None
        span = statement_span(self.tracer, self.name, self.operation)
        if span is None:
            return await Query.__call__(self, conn, **arguments)
        with span:
            return await Query.__call__(self, conn, **arguments)


def _operation(sql: str) -> str:
    """The statement's kind (SELECT, INSERT, ...), from PostgreSQL's own parse of it."""
    statement = orjson.loads(pg_parser.parse_sql_json(sql))["stmts"][0]["stmt"]
    kind = next(iter(statement))  # SelectStmt, InsertStmt, ...
    return kind.removesuffix("Stmt").upper()


def placeholder_numbers(sql: str) -> tuple[int, set[int]]:
    """Parse ``sql``; return how many statements it holds and the ``$n`` numbers it uses."""
    tree = orjson.loads(pg_parser.parse_sql_json(sql))
    numbers: set[int] = set()
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("ParamRef")
            if isinstance(ref, dict) and "number" in ref:
                numbers.add(ref["number"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return len(tree.get("stmts", [])), numbers


def _check(query: Query) -> None:
    try:
        count, used = placeholder_numbers(query.sql)
    except pg_parser.ParseError as exc:
        raise QueryFileError(f"{query.origin}: {query.name}: does not parse: {exc}") from None
    if count != 1:
        raise QueryFileError(f"{query.origin}: {query.name}: holds {count} statements, not one")
    declared = set(range(1, len(query.params) + 1))
    if used != declared:
        raise QueryFileError(
            f"{query.origin}: {query.name}: declares {len(query.params)} params "
            f"({', '.join(query.params) or 'none'}) but uses "
            f"{', '.join(f'${n}' for n in sorted(used)) or 'no placeholder'}"
        )


def _parse_file(path: Path, text: str) -> Iterator[Query]:
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    if not starts:
        raise QueryFileError(f"{path}:1: no '-- name:' header")
    if any(line.strip() and not line.lstrip().startswith("--") for line in lines[: starts[0]]):
        raise QueryFileError(f"{path}:1: SQL before the first '-- name:' header")
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        header = _HEADER.match(lines[start])
        assert header is not None
        origin = f"{path}:{start + 1}"
        params: tuple[str, ...] = ()
        description: list[str] = []
        body_start = start + 1
        for i in range(start + 1, end):
            line = lines[i]
            if not line.startswith("--"):
                body_start = i
                break
            if match := _PARAMS.match(line):
                params = tuple(p.strip() for p in match["params"].split(",") if p.strip())
                if bad := [p for p in params if not _IDENT.match(p)]:
                    raise QueryFileError(f"{path}:{i + 1}: bad parameter names {bad}")
                if len(set(params)) != len(params):
                    raise QueryFileError(f"{path}:{i + 1}: a parameter is named twice")
            else:
                description.append(line[2:].strip())
        else:
            body_start = end
        sql = "\n".join(lines[body_start:end]).strip().rstrip(";").strip()
        if not sql:
            raise QueryFileError(f"{origin}: {header['name']}: no SQL under the header")
        query = Query(
            name=header["name"],
            kind=ResultKind(header["suffix"]),
            sql=sql,
            params=params,
            description=" ".join(d for d in description if d),
            origin=origin,
        )
        _check(query)
        yield query


class Queries:
    """Every named statement, loaded once at start-up; ``queries.get_issue(conn, ...)``."""

    def __init__(self, queries: Mapping[str, Query], *, tracer: Tracer | None = None) -> None:
        self._queries = dict(queries)
        # Whoever runs SQL of its own beside these statements (the explorer) traces it with this.
        self.tracer = tracer

    def traced(self, tracer: Tracer | None) -> Queries:
        """These statements, each run in a span of its own name when ``tracer`` is given;
        ``self`` unchanged when it is None (tracing off)."""
        if tracer is None:
            return self
        return Queries({name: _TracedQuery(
            **{field.name: getattr(query, field.name) for field in dataclasses.fields(Query)},
            tracer=tracer, operation=_operation(query.sql))
            for name, query in self._queries.items()}, tracer=tracer)

    @classmethod
    def load(cls, *directories: Path) -> Queries:
        """Load and check every ``*.sql`` file in ``directories`` (default: the package's)."""
        if not directories:
            directories = (Path(str(resources.files("spiral_mcp.sql"))),)
        found: dict[str, Query] = {}
        for directory in directories:
            for path in sorted(directory.glob("*.sql")):
                for query in _parse_file(path, path.read_text(encoding="utf-8")):
                    if query.name in found:
                        raise QueryFileError(
                            f"{query.origin}: {query.name}: already defined at "
                            f"{found[query.name].origin}"
                        )
                    found[query.name] = query
        return cls(found)

    def __getattr__(self, name: str) -> Query:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._queries

    def __len__(self) -> int:
        return len(self._queries)
