"""Conformance fixtures of the 2026-07-28 era's core rules (test-only, served by the harness).

- ``test_logging_tool`` logs three messages: the suite checks that none is sent for a request
  whose ``_meta`` names no log level (server-stateless).
- ``test_trigger_tool_change`` and ``test_trigger_prompt_change`` really change the server's tool
  or prompt list (they add a fixture tool or prompt, or take it away again), through the same
  ToolRegistry.add/remove and PromptRegistry.add/remove that announce changes to listen streams.
- ``test_custom_header_tool`` mirrors two parameters into ``Mcp-Param-*`` headers (x-mcp-header),
  for http-custom-header-server-validation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from spiral_mcp.handlers import Tool
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.handlers.prompts import Prompt
from spiral_mcp.protocol.dispatcher import Dispatcher
from spiral_mcp.server.keys import DISPATCHER

__all__ = ["ModernFixtures", "log_three_messages"]

_NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_TEXT: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}}
CUSTOM_HEADER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "description": "Where to run", "x-mcp-header": "Region"},
        "priority": {"type": "integer", "description": "How urgent",
                     "x-mcp-header": "Priority"},
        "query": {"type": "string", "description": "What to run"},
    },
    "required": ["region"],
    "additionalProperties": False,
}


def _tool(name: str, handler: Any, input_schema: dict[str, Any] | None = None) -> Tool:
    return Tool(name=name, title=name, description=f"Conformance fixture {name}",
                handler=handler, scope="read", call_class="read",
                input_schema=input_schema or _NO_ARGS, output_schema=_TEXT)


async def log_three_messages(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    for i, text in enumerate(("Tool execution started", "Tool processing data",
                              "Tool execution completed")):
        if i:
            await asyncio.sleep(0.05)
        await ctx.log("info", text)
    return {"text": "logged"}


async def _echo_region(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"text": f"ran in {args['region']}"}


async def _dynamic(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"text": "a tool that comes and goes"}


async def _dynamic_prompt(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": {"type": "text", "text": "a prompt that comes and goes"}}]


class ModernFixtures:
    """The fixtures, bound to the running app's dispatcher once it has started (``attach``)."""

    def __init__(self) -> None:
        self._dispatcher: Dispatcher | None = None

    def attach(self, app: web.Application) -> None:
        async def bind(app: web.Application) -> None:
            self._dispatcher = app[DISPATCHER]

        app.on_startup.append(bind)  # after the cleanup contexts, which build the dispatcher

    def tools(self) -> list[Tool]:
        return [
            _tool("test_logging_tool", log_three_messages),
            _tool("test_trigger_tool_change", self._toggle_tool),
            _tool("test_trigger_prompt_change", self._toggle_prompt),
            _tool("test_custom_header_tool", _echo_region, CUSTOM_HEADER_SCHEMA),
        ]

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("ModernFixtures.attach was not called before the app started")
        return self._dispatcher

    async def _toggle_tool(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        registry = self.dispatcher.registry
        if "test_dynamic_tool" in registry:
            registry.remove("test_dynamic_tool")
            return {"text": "removed test_dynamic_tool"}
        registry.add(_tool("test_dynamic_tool", _dynamic))
        return {"text": "added test_dynamic_tool"}

    async def _toggle_prompt(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        prompts = self.dispatcher.prompts
        try:
            prompts.remove("test_dynamic_prompt")
        except KeyError:
            prompts.add(Prompt(name="test_dynamic_prompt", description="Comes and goes",
                               render=_dynamic_prompt))
            return {"text": "added test_dynamic_prompt"}
        return {"text": "removed test_dynamic_prompt"}
