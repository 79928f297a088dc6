"""Conformance fixtures of multi round-trip requests (test-only): the tools and the prompt that the
``input-required-result-*`` scenarios and the server-stateless checks call. Each asks through
``ctx.ask`` as a product tool does, so the scenarios exercise the product's own mechanism: in the
stateless era an InputRequiredResult and a sealed requestState, on a session a request to the
client.
"""

from __future__ import annotations

from typing import Any

import orjson

from spiral_mcp.handlers import Tool
from spiral_mcp.handlers.context import ToolContext, ask_all
from spiral_mcp.handlers.prompts import Prompt

__all__ = ["mrtr_prompts", "mrtr_tools"]

_NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_TEXT: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}}


def _form(message: str, name: str, kind: str = "string") -> dict[str, Any]:
    return {"message": message, "requestedSchema": {
        "type": "object", "properties": {name: {"type": kind}}, "required": [name]}}


def _sampling(text: str, max_tokens: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": {"type": "text", "text": text}}],
            "maxTokens": max_tokens}


def _content(answer: dict[str, Any], name: str) -> Any:
    return (answer.get("content") or {}).get(name)


def _sampled(answer: dict[str, Any]) -> Any:
    content = answer.get("content")
    return content.get("text") if isinstance(content, dict) else content


async def _elicitation(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    answer = await ctx.ask("elicitation/create", _form("What is your name?", "name"),
                           key="user_name")
    return {"text": f"Hello, {_content(answer, 'name')}!"}


async def _sampling_tool(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    answer = await ctx.ask("sampling/createMessage",
                           _sampling("What is the capital of France?", 100),
                           key="capital_question")
    return {"text": f"The model said: {_sampled(answer)}"}


async def _list_roots(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    answer = await ctx.ask("roots/list", {}, key="client_roots")
    uris = [root.get("uri") for root in answer["roots"] if isinstance(root, dict)]
    return {"text": f"Roots: {', '.join(map(str, uris))}"}


async def _request_state(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    # The requestState the retry carried was opened and checked (sealed, this key's, this
    # request's, in time) before this handler ran again; a refused one never gets here.
    answer = await ctx.ask("elicitation/create", _form("Please confirm", "ok", "boolean"),
                           key="confirm")
    return {"text": f"state-ok: confirmed={_content(answer, 'ok')}"}


async def _multiple_inputs(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    answers = await ask_all(ctx, {
        "user_name": ("elicitation/create", _form("What is your name?", "name")),
        "greeting": ("sampling/createMessage", _sampling("Generate a greeting", 50)),
        "client_roots": ("roots/list", {}),
    })
    return {"text": f"{_sampled(answers['greeting'])} {_content(answers['user_name'], 'name')}, "
                    f"{len(answers['client_roots']['roots'])} root(s)"}


async def _multi_round(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    name = await ctx.ask("elicitation/create", _form("Step 1: What is your name?", "name"),
                         key="step1")
    # The second question comes only once the first is answered: a round of its own.
    color = await ctx.ask("elicitation/create",
                          _form("Step 2: What is your favorite color?", "color"), key="step2")
    return {"text": f"{_content(name, 'name')} likes {_content(color, 'color')}"}


async def _capabilities(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    # Asks a person when the client can; otherwise makes do with the model alone.
    questions = {"summary": ("sampling/createMessage", _sampling("Summarize the situation", 50))}
    if ctx.can_ask("elicitation/create"):
        questions["approval"] = ("elicitation/create", _form("Approve?", "ok", "boolean"))
    answers = await ask_all(ctx, questions)
    return {"text": orjson.dumps(sorted(answers)).decode()}


async def _streaming_elicitation(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    answer = await ctx.ask("elicitation/create", _form("Anything to add?", "note"))
    return {"text": f"noted: {_content(answer, 'note')}"}


async def _missing_capability(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    # No fallback: a client that cannot sample cannot use this tool (-32021 when stateless).
    answer = await ctx.ask("sampling/createMessage", _sampling("Say something", 20))
    return {"text": f"sampled: {_sampled(answer)}"}


def _tool(name: str, handler: Any) -> Tool:
    return Tool(name=name, title=name, description=f"Conformance fixture {name}",
                handler=handler, scope="read", call_class="read",
                input_schema=_NO_ARGS, output_schema=_TEXT)


def mrtr_tools() -> list[Tool]:
    return [
        _tool("test_input_required_result_elicitation", _elicitation),
        _tool("test_input_required_result_sampling", _sampling_tool),
        _tool("test_input_required_result_list_roots", _list_roots),
        _tool("test_input_required_result_request_state", _request_state),
        _tool("test_input_required_result_multiple_inputs", _multiple_inputs),
        _tool("test_input_required_result_multi_round", _multi_round),
        _tool("test_input_required_result_tampered_state", _request_state),
        _tool("test_input_required_result_capabilities", _capabilities),
        _tool("test_streaming_elicitation", _streaming_elicitation),
        _tool("test_missing_capability", _missing_capability),
    ]


async def _prompt(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    answer = await ctx.ask("elicitation/create",
                           _form("What context should the prompt use?", "context"),
                           key="user_context")
    return [{"role": "user", "content": {
        "type": "text", "text": f"Work in this context: {_content(answer, 'context')}"}}]


def mrtr_prompts() -> list[Prompt]:
    return [Prompt(name="test_input_required_result_prompt",
                   description="A prompt that asks the user for its context first",
                   render=_prompt)]
