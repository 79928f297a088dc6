"""Fixture tools of the conformance suite's tasks scenarios (io.modelcontextprotocol/tasks,
src/scenarios/server/tasks/*.ts): test-only, served by tests/conformance_harness.py.

Each behaves as the scenarios describe it: ``greet`` answers at once; the task-supporting ones
become a task as they start (``ctx.become_task``) when the client declares the extension.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.handlers import Tool
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.protocol.jsonrpc import INTERNAL_ERROR, RpcError

__all__ = ["task_fixture_tools"]

_NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}
_TEXT: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}}


def _text(ctx: ToolContext, text: str) -> dict[str, Any]:
    """``text`` as the result's first content block (the scenarios read content[0].text)."""
    ctx.attach({"type": "text", "text": text})
    return {"text": text}


def _form(message: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"mode": "form", "message": message,
            "requestedSchema": {"type": "object", "properties": properties}}


async def _greet(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return _text(ctx, f"Hello, {args['name']}!")


async def _slow_compute(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.become_task()
    seconds = args.get("seconds", 1)
    for step in range(int(seconds)):
        await ctx.progress(step, seconds, f"{step} of {seconds} s")
        await asyncio.sleep(1)
    await asyncio.sleep(seconds - int(seconds))
    return _text(ctx, f"computed {args.get('label', '')} in {seconds} s")


async def _failing_job(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.become_task()
    await asyncio.sleep(0.5)
    raise ServiceError(ErrorCode.UPSTREAM_ERROR, "failing_job always fails (a tool error)")


async def _protocol_error_job(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.become_task()
    await asyncio.sleep(0.2)
    raise RpcError(INTERNAL_ERROR, "protocol_error_job failed at the protocol level")


async def _confirm_delete(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.become_task()
    answer = await ctx.ask("elicitation/create", _form(
        f"Delete {args['filename']}?", {"confirm": {"type": "boolean"}}))
    confirmed = answer.get("action") == "accept" and (answer.get("content") or {}).get("confirm")
    return _text(ctx, f"{'deleted' if confirmed else 'kept'} {args['filename']}")


async def _multi_input(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.become_task()
    first, second = await asyncio.gather(
        ctx.ask("elicitation/create", _form("Your name?", {"name": {"type": "string"}})),
        ctx.ask("elicitation/create", _form("Confirm?", {"confirm": {"type": "boolean"}})))
    return _text(ctx, f"answers: {orjson.dumps([first, second]).decode()}")


async def _with_task(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    # Asked before the task exists (a multi round-trip request), then run as a task.
    answer = await ctx.ask("elicitation/create", _form(
        "What is your name?", {"user_name": {"type": "string"}, "name": {"type": "string"}}))
    await ctx.become_task()
    content = answer.get("content") or {}
    return _text(ctx, f"Hello, {content.get('user_name') or content.get('name')}!")


def _fixture(name: str, handler: Any, *, task: str | None,
             properties: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> Tool:
    schema = {"type": "object", "properties": properties or {}, "required": list(required)}
    return Tool(name=name, title=name, description=f"Conformance fixture {name}",
                handler=handler, scope="read", call_class="read", task=task,
                input_schema=schema if properties else _NO_ARGS, output_schema=_TEXT)


def task_fixture_tools() -> list[Tool]:
    return [
        _fixture("greet", _greet, task=None, properties={"name": {"type": "string"}},
                 required=("name",)),
        _fixture("slow_compute", _slow_compute, task="optional", properties={
            "seconds": {"type": "number", "minimum": 0, "maximum": 600},
            "label": {"type": "string"}}),
        _fixture("failing_job", _failing_job, task="required"),
        _fixture("protocol_error_job", _protocol_error_job, task="optional"),
        _fixture("confirm_delete", _confirm_delete, task="optional",
                 properties={"filename": {"type": "string"}}, required=("filename",)),
        _fixture("multi_input", _multi_input, task="optional"),
        _fixture("test_tool_with_task", _with_task, task="required"),
    ]
