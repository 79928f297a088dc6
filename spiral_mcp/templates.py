"""SQL report templates: a tool declared as data, one ``.sql`` file each, no Python per template.

A template file starts with a header, the first block of consecutive ``--`` lines, then holds
exactly one read-only SELECT (CTEs welcome)::

    -- name: sql_items_by_project
    -- title: Items of a project
    -- row_cap: 100
    -- description: The items of one project, newest update first.
    --   Indented lines continue the field above; in a description they keep their line breaks.
    -- param project_key: {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$",
    --   "description": "The project's key, e.g. WEB."}
    -- param limit: {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}
    -- required: project_key
    SELECT key, title FROM work_items WHERE project_key = $1 ORDER BY updated_at DESC LIMIT $2

Header lines are ``-- field: value`` (exactly one space after ``--``), indented continuations
(``--`` and two or more spaces) or a bare ``--``; the header ends at the first line that does not
start with ``--``. Continuations join with a space; in a description or definitions a continuation
starting with ``- `` opens a new line (a list item) and one after a bare ``--`` a new paragraph.

Fields: ``name`` (the tool name: ``sql_`` then ``[a-z0-9_]``), ``title``, ``description`` (what
the agent reads in the tool list: short), ``definitions`` (optional: each figure's exact
meaning, served in the report catalogue resource; reflowed as a description is), ``row_cap``
(1-10000: the most rows a call returns), ``param NAME`` (a JSON Schema, Draft 2020-12, one per
parameter; in the forms every client accepts: no type arrays, no null), ``required``
(comma-separated names) and ``chart`` (optional: the name of a chart of ``spiral_mcp.charts``
that draws this report's rows, e.g. ``daily_flow``). Parameters
bind to ``$1..$n`` in declaration order; the tenant is never one (row-level security binds it).
The tool's input schema is an object of those properties, ``required``, no other properties;
with ``chart`` it also takes ``chart`` (boolean, default false: the caller asks for the picture),
which binds to no placeholder.

At load every file is checked, or loading fails with :class:`TemplateError` naming the file: the
metadata is complete, every schema is valid and in the forms every client accepts
(``schema_types.portable_problems``), and so is every default, the SQL parses (PostgreSQL's
own parser, via pglast) as exactly one SELECT that neither writes (no data-modifying CTE, no SELECT
INTO) nor locks rows, and the placeholders used are exactly ``$1..$n``.

Binding (:func:`run_template`): a missing optional parameter takes its schema's ``default``, or
NULL; a parameter whose schema accepts an array is always bound as a list (a single value ``x``
arrives as ``[x]``), so "one or a list" needs one SQL spelling, ``$n::text[]``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pglast import parser as pg_parser

from .charts import REPORT_CHARTS
from .handlers.rows import jsonable
from .schema_types import accepts, integral_floats, portable_problems

__all__ = [
    "CHART_ARGUMENT", "Template", "TemplateError", "builtin_directory", "load_templates",
    "parse_template", "run_template",
]

MAX_ROW_CAP = 10_000

_NAME = re.compile(r"^sql_[a-z0-9_]{1,60}$")
_PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FIELD = re.compile(r"^-- (?P<field>[a-z_]+)(?: (?P<arg>\S+))?:(?:\s+(?P<value>.*?))?\s*$")
_CONTINUATION = re.compile(r"^--\s{2,}(?P<text>\S.*?)\s*$")
_SINGLE_FIELDS = ("name", "title", "description", "definitions", "row_cap", "required", "chart")
# The argument that asks a report with a chart for its picture; it binds to no placeholder.
CHART_ARGUMENT = "chart"
_CHART_SCHEMA: dict[str, Any] = {
    "type": "boolean", "default": False,
    "description": "true: also return a PNG chart of these figures as an image content block, "
                   "for a person reading your answer to see; the rows are the same either way. "
                   "Ask only when a picture helps: the image is large.",
}
_PROSE_FIELDS = ("description", "definitions")
# Statement kinds that change data; any of them anywhere in the tree (a data-modifying CTE)
# would turn a report into a write.
_WRITES = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


class TemplateError(ValueError):
    """A template file is malformed; the message starts with the file (and line, when known)."""


@dataclasses.dataclass(frozen=True)
class Template:
    """One report: a tool's metadata and the SELECT it runs."""

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    row_cap: int
    sql: str
    params: tuple[str, ...]
    origin: str
    # Each figure's exact definition, for the report catalogue (the description, which every
    # tool list carries, says what the report is and points there).
    definitions: str = ""
    # The chart (spiral_mcp.charts) that draws the rows when the caller passes chart: true.
    chart: str | None = None

    def bind(self, arguments: Mapping[str, Any]) -> list[Any]:
        """The values for ``$1..$n``: defaults applied, "one or a list" made a list."""
        given = set(arguments) - ({CHART_ARGUMENT} if self.chart else set())
        if unknown := sorted(given - set(self.params)):
            raise TypeError(f"template {self.name}: unexpected arguments {unknown}")
        required = set(self.input_schema.get("required", ()))
        values: list[Any] = []
        for name in self.params:
            schema = self.input_schema["properties"][name]
            if name in arguments:
                value = arguments[name]
            elif name in required:
                raise TypeError(f"template {self.name}: missing required argument {name!r}")
            else:
                # deepcopy: a list default must not be shared with (and mutated by) a caller.
                value = copy.deepcopy(schema.get("default"))
            values.append(_coerce(value, schema))
        return values


def builtin_directory() -> Path:
    """The folder of the templates shipped with the package."""
    return Path(str(resources.files("spiral_mcp.sql"))) / "templates"


def load_templates(*directories: Path) -> list[Template]:
    """Load and check every ``*.sql`` file in ``directories`` (default: the built-in folder).

    Operators' folders come after the built-in one: ``load_templates(builtin_directory(), extra)``.
    A name defined twice, in one folder or across folders, is an error.
    """
    if not directories:
        directories = (builtin_directory(),)
    found: dict[str, Template] = {}
    for directory in directories:
        if not directory.is_dir():
            raise TemplateError(f"{directory}: not a directory of templates")
        for path in sorted(directory.glob("*.sql")):
            template = parse_template(path, path.read_text(encoding="utf-8"))
            if (other := found.get(template.name)) is not None:
                raise TemplateError(
                    f"{path}: template {template.name!r} is already defined in {other.origin}"
                )
            found[template.name] = template
    return list(found.values())


def parse_template(path: Path, text: str) -> Template:
    """One template from the text of ``path``; every check of the module docstring applies."""
    fields, params, body_start = _read_header(path, text)
    for field in ("name", "title", "description", "row_cap"):
        if not fields.get(field):
            raise TemplateError(f"{path}: missing '-- {field}:' in the header")
    name = fields["name"]
    if not _NAME.match(name):
        raise TemplateError(f"{path}: name {name!r} must be 'sql_' then 1-60 of [a-z0-9_]")
    try:
        row_cap = int(fields["row_cap"])
    except ValueError:
        raise TemplateError(f"{path}: row_cap {fields['row_cap']!r} is not an integer") from None
    if not 1 <= row_cap <= MAX_ROW_CAP:
        raise TemplateError(f"{path}: row_cap must be between 1 and {MAX_ROW_CAP}")

    properties = {param: _param_schema(path, param, raw) for param, raw in params.items()}
    required = [r.strip() for r in fields.get("required", "").split(",") if r.strip()]
    if undeclared := [r for r in required if r not in properties]:
        raise TemplateError(f"{path}: required names undeclared parameters {undeclared}")
    chart = fields.get("chart") or None
    if chart is not None and chart not in REPORT_CHARTS:
        raise TemplateError(f"{path}: chart {chart!r} is not one of {', '.join(REPORT_CHARTS)}")
    if chart is not None and CHART_ARGUMENT in properties:
        raise TemplateError(f"{path}: a template with a chart cannot declare a parameter "
                            f"{CHART_ARGUMENT!r}: the chart takes that argument")
    input_schema: dict[str, Any] = {"type": "object", "properties": {
        **properties, **({CHART_ARGUMENT: dict(_CHART_SCHEMA)} if chart else {})}}
    if required:  # every tool list carries it: no empty keyword
        input_schema["required"] = required
    input_schema["additionalProperties"] = False
    _check_schema(path, "the input schema", input_schema)

    sql = "\n".join(text.splitlines()[body_start:]).strip().rstrip(";").strip()
    if not sql:
        raise TemplateError(f"{path}: no SQL under the header")
    _check_sql(path, sql, tuple(properties))
    return Template(
        name=name,
        title=fields["title"],
        description=fields["description"],
        input_schema=input_schema,
        row_cap=row_cap,
        sql=sql,
        params=tuple(properties),
        origin=str(path),
        definitions=fields.get("definitions", ""),
        chart=chart,
    )


def _read_header(path: Path, text: str) -> tuple[dict[str, str], dict[str, str], int]:
    """The header's fields, its ``param`` lines (raw JSON, in order) and the first SQL line."""
    fields: dict[str, str] = {}
    params: dict[str, str] = {}
    lines = text.splitlines()
    current: tuple[dict[str, str], str] | None = None  # where a continuation line goes
    paragraph = False  # a bare '--' came just before
    body_start = len(lines)
    for number, line in enumerate(lines, start=1):
        if not line.startswith("--"):
            body_start = number - 1
            break
        if not line[2:].strip():
            paragraph = True
            continue
        if match := _CONTINUATION.match(line):
            if current is None:
                raise TemplateError(f"{path}:{number}: a continuation line with no field above")
            target, key = current
            more = match["text"]
            joiner = " "
            if target is fields and key in _PROSE_FIELDS:
                # Prose reflows; a bare '--' starts a paragraph and '- ' a list item.
                joiner = "\n\n" if paragraph else "\n" if more.startswith("- ") else " "
            target[key] = f"{target[key]}{joiner}{more}" if target[key] else more
            paragraph = False
            continue
        paragraph = False
        match = _FIELD.match(line)
        if match is None:
            raise TemplateError(
                f"{path}:{number}: expected '-- field: value' or an indented continuation"
            )
        field, arg, value = match["field"], match["arg"], match["value"] or ""
        if field == "param":
            if arg is None or not _PARAM_NAME.match(arg):
                raise TemplateError(f"{path}:{number}: bad parameter name {arg!r}")
            if arg in params:
                raise TemplateError(f"{path}:{number}: parameter {arg!r} is declared twice")
            params[arg] = value
            current = (params, arg)
        elif field in _SINGLE_FIELDS and arg is None:
            if field in fields:
                raise TemplateError(f"{path}:{number}: '{field}' is given twice")
            fields[field] = value
            current = (fields, field)
        else:
            raise TemplateError(
                f"{path}:{number}: unknown header field {line[3:].split(':')[0]!r} "
                f"(known: {', '.join(_SINGLE_FIELDS)}, param NAME)"
            )
    return fields, params, body_start


def _param_schema(path: Path, param: str, raw: str) -> dict[str, Any]:
    try:
        schema = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}: parameter {param!r}: schema is not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise TemplateError(f"{path}: parameter {param!r}: schema must be a JSON object")
    _check_schema(path, f"parameter {param!r}", schema)
    if problems := portable_problems(schema):
        # Every tool list carries it: a form one client rejects may cost that client the server.
        raise TemplateError(f"{path}: parameter {param!r}: not a form every client accepts: "
                            + "; ".join(problems[:3]))
    if "default" in schema:
        # A default that fails its own schema would reach the SQL unvalidated.
        errors = list(Draft202012Validator(schema).iter_errors(schema["default"]))
        if errors:
            raise TemplateError(
                f"{path}: parameter {param!r}: default fails its schema: {errors[0].message}"
            )
    return schema


def _check_schema(path: Path, what: str, schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise TemplateError(f"{path}: {what}: invalid JSON Schema: {exc.message}") from None


def _check_sql(path: Path, sql: str, params: tuple[str, ...]) -> None:
    try:
        tree = orjson.loads(pg_parser.parse_sql_json(sql))
    except pg_parser.ParseError as exc:
        raise TemplateError(f"{path}: the SQL does not parse: {exc}") from None
    statements = tree.get("stmts", [])
    if len(statements) != 1:
        raise TemplateError(f"{path}: the SQL holds {len(statements)} statements, not one")
    kind = next(iter(statements[0]["stmt"]))
    if kind != "SelectStmt":
        raise TemplateError(f"{path}: the SQL must be one SELECT, not {kind}")
    used: set[int] = set()
    for node in _nodes(statements[0]):
        if writes := _WRITES & node.keys():
            raise TemplateError(f"{path}: the SELECT contains a {min(writes)}; templates only read")
        if "intoClause" in node:
            raise TemplateError(f"{path}: SELECT INTO creates a table; templates only read")
        if "lockingClause" in node:
            raise TemplateError(f"{path}: FOR UPDATE/SHARE locks rows; templates only read")
        if isinstance(ref := node.get("ParamRef"), dict) and "number" in ref:
            used.add(ref["number"])
    if undeclared := sorted(n for n in used if not 1 <= n <= len(params)):
        raise TemplateError(
            f"{path}: the SQL uses {', '.join(f'${n}' for n in undeclared)} but declares "
            f"{len(params)} parameters ({', '.join(params) or 'none'})"
        )
    if unused := [f"{p} (${i})" for i, p in enumerate(params, start=1) if i not in used]:
        raise TemplateError(f"{path}: declared parameters never used in the SQL: {unused}")


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    if value is None:
        return None
    if accepts(schema, "array") and not isinstance(value, list):
        return [value]
    # JSON Schema counts 30.0 as an integer; PostgreSQL's int binding does not take a float.
    return integral_floats(value, schema)


async def run_template(
    conn: asyncpg.Connection, template: Template, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """Run ``template`` with ``arguments`` (already validated against its input schema).

    Must run inside the caller's transaction that set ``app.tenant_id`` (read-only is best): the
    rows come through a cursor, so at most ``row_cap + 1`` are ever fetched, and the extra one only
    tells that the result was cut. Values come back JSON-ready: decimals as numbers, timestamps and
    dates as ISO 8601 text, intervals as seconds, UUIDs as text.
    """
    if not conn.is_in_transaction():
        # Outside a transaction the tenant setting is unset (RLS shows nothing) and a cursor
        # cannot exist; say so rather than return a misleading empty report.
        raise RuntimeError("run_template needs the caller's tenant transaction")
    args = template.bind(arguments)
    statement = await conn.prepare(template.sql)
    columns = [{"name": a.name, "type": a.type.name} for a in statement.get_attributes()]
    cursor = await statement.cursor(*args)
    records = await cursor.fetch(template.row_cap + 1)
    truncated = len(records) > template.row_cap
    rows = [{key: jsonable(value) for key, value in record.items()}
            for record in records[: template.row_cap]]
    return {"columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated}
