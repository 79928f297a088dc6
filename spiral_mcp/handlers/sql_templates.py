"""The `sql` toolset: every report template (a vetted .sql file with its metadata and input
schema, see ``spiral_mcp.templates``) served as a tool of its own. Adding a report adds a file,
not code here. A template that names a chart draws its rows as a PNG image block when the caller
passes ``chart: true``, beside the unchanged result."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..charts import render_async
from ..templates import CHART_ARGUMENT, Template, run_template
from ..tracing import traced_sql
from .context import ToolContext
from .registry import Tool

__all__ = ["RESULT_SCHEMA", "template_tools"]

RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "columns": {
            "type": "array",
            "items": {"type": "object",
                      "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                      "required": ["name", "type"]},
        },
        "rows": {"type": "array", "items": {"type": "object"}},
        "row_count": {"type": "integer", "minimum": 0},
        "truncated": {"type": "boolean"},
    },
    "required": ["columns", "rows", "row_count", "truncated"],
}


def _handler(template: Template, observe: Callable[[str, float], None]):
    async def run(ctx: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        await ctx.become_task()  # for a client that takes tasks: it polls instead of waiting
        draw = bool(arguments.get(CHART_ARGUMENT)) and template.chart is not None
        values = {k: v for k, v in arguments.items() if k != CHART_ARGUMENT}
        started = time.perf_counter()
        # A report may miss the last seconds of writes: served by the replica while in use.
        async with ctx.transaction(readonly=True, lag_ok=True) as conn:
            with traced_sql(ctx.database.queries.tracer, template.name):
                result = await run_template(conn, template, values)
        observe(template.name, time.perf_counter() - started)
        if draw:
            # Drawn after the transaction: the connection is not held while the CPU works.
            png = await render_async(template.chart, {
                "subject": _subject(template, values), **result}, owner=ctx.principal.tenant_id)
            ctx.attach({"type": "image", "mimeType": "image/png",
                        "data": base64.b64encode(png).decode("ascii")})
        return result

    return run


def _subject(template: Template, values: Mapping[str, Any]) -> str:
    """What the chart covers, for its title: "WEB, last 30 days"."""
    bound = dict(zip(template.params, template.bind(values), strict=True))
    named = [str(v) for k, v in bound.items() if isinstance(v, str) and k != "days"]
    days = bound.get("days")
    return ", ".join([*(named or ["all items"]), *([f"last {days} days"] if days else [])])


def template_tools(
    templates: list[Template], *, observe: Callable[[str, float], None]
) -> list[Tool]:
    """One read-only tool per template; ``observe(name, seconds)`` records each run's duration."""
    return [
        Tool(
            name=template.name,
            title=template.title,
            description=template.description,
            handler=_handler(template, observe),
            scope="read",
            call_class="query",
            # A report holds a runtime pool connection for as long as its statement runs.
            share="report",
            task="optional",
            input_schema=template.input_schema,
            output_schema=RESULT_SCHEMA,
        )
        for template in templates
    ]
