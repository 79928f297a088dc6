"""``spiral-mcp stdio`` with test-only tools beside the shipped ones, run as a process by
tests/test_stdio.py and tests/test_stdio_stateless.py (``python tests/stdio_server.py``): the
tools of test_mcp_clients (progress, a call that sleeps until cancelled, a call that asks the
client), the 2026-07-28 conformance fixtures (a tool that logs, tools that change the tool and
prompt lists) and ``test_pause``, which reports progress as it starts and answers after the
seconds it is given. Everything else is the product's own ``stdio`` command."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from test_mcp_clients import Probe, fixture_tools

from spiral_mcp.config import load_settings
from spiral_mcp.handlers import Tool, builtin_tools
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.server import stdio_main
from spiral_mcp.server.app import create_app
from tests.conformance_modern import ModernFixtures


async def pause(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    # Progress at once: the caller then knows the call is running in the handler.
    await ctx.progress(0, args["seconds"], "pausing")
    await asyncio.sleep(args["seconds"])
    return {"paused": args["seconds"]}


PAUSE = Tool(
    name="test_pause", title="Pause", description="Answers after `seconds` (test only)",
    handler=pause, scope="read", call_class="read",
    input_schema={"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0}},
                  "required": ["seconds"], "additionalProperties": False},
    output_schema={"type": "object"})

MODERN = ModernFixtures()


def _create_app(*args: Any, **kwargs: Any) -> web.Application:
    # The list-changing fixtures need the running app's dispatcher, which `run` builds inside.
    app = create_app(*args, **kwargs)
    MODERN.attach(app)
    return app


if __name__ == "__main__":
    stdio_main.create_app = _create_app  # type: ignore[assignment]
    run_tools = [*builtin_tools(), *fixture_tools(Probe()), *MODERN.tools(), PAUSE]
    stdio_main.run(load_settings(), tools=run_tools)
