"""MCP prompts: message templates a client lists and fills in (``prompts/list``, ``prompts/get``).

The product ships its own (``recipes.py``); whoever builds the app may register others instead
(the conformance harness does), and the server declares the ``prompts`` capability only when
there are some.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..auth import Principal
from ..icons import icons
from ..protocol.jsonrpc import INVALID_PARAMS, RpcError
from .context import ToolContext

__all__ = ["Prompt", "PromptArgument", "PromptRegistry"]

# The prompt's messages, each {"role", "content"}, given its arguments.
Renderer = Callable[[ToolContext, dict[str, str]], Awaitable[list[dict[str, Any]]]]
# An argument's values that start with what the user has typed, read from the caller's data.
Completer = Callable[[ToolContext, str], Awaitable[list[str]]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PromptArgument:
    name: str
    description: str
    required: bool = True
    # Values offered by completion/complete, filtered by what the user has typed; or, when
    # ``complete`` is given, the values it reads (which draws on the key's read budget).
    choices: tuple[str, ...] = ()
    complete: Completer | None = None

    async def completions(self, ctx: ToolContext, typed: str) -> list[str]:
        if self.complete is not None:
            return await self.complete(ctx, typed)
        return [c for c in self.choices if c.startswith(typed)]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Prompt:
    name: str
    description: str
    render: Renderer
    title: str | None = None
    arguments: tuple[PromptArgument, ...] = ()
    scope: str = "read"       # the API-key scope a caller needs to see and get it
    icon: str | None = None   # an icon of spiral_mcp/icons

    def listing(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "description": self.description,
                                 "arguments": [{"name": a.name, "description": a.description,
                                                "required": a.required}
                                               for a in self.arguments]}
        if self.title is not None:
            entry["title"] = self.title
        if self.icon is not None and (found := icons(self.icon)):
            entry["icons"] = list(found)
        return entry

    def check(self, arguments: Any) -> dict[str, str]:
        """The arguments as given, or INVALID_PARAMS naming what is missing or not a string."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict) or not all(
                isinstance(v, str) for v in arguments.values()):
            raise RpcError(INVALID_PARAMS, "prompt arguments must be an object of strings")
        known = {a.name for a in self.arguments}
        if unknown := sorted(set(arguments) - known):
            raise RpcError(INVALID_PARAMS, f"unknown arguments for {self.name}: "
                           + ", ".join(unknown))
        if missing := [a.name for a in self.arguments if a.required and a.name not in arguments]:
            raise RpcError(INVALID_PARAMS, f"missing arguments for {self.name}: "
                           + ", ".join(missing))
        return arguments


def _unheard(scope: str) -> None:
    pass


class PromptRegistry:
    def __init__(self, prompts: Iterable[Prompt] = ()) -> None:
        self._prompts: dict[str, Prompt] = {}
        # Told the scope of a prompt added or removed once serving (its keys' lists changed).
        self.on_change: Callable[[str], None] = _unheard
        for prompt in prompts:
            if self._prompts.setdefault(prompt.name, prompt) is not prompt:
                raise ValueError(f"two prompts are named {prompt.name}")

    def add(self, prompt: Prompt) -> None:
        if self._prompts.setdefault(prompt.name, prompt) is not prompt:
            raise ValueError(f"two prompts are named {prompt.name}")
        self.on_change(prompt.scope)

    def remove(self, name: str) -> None:
        self.on_change(self._prompts.pop(name).scope)

    def __bool__(self) -> bool:
        return bool(self._prompts)

    def listed(self, principal: Principal) -> list[dict[str, Any]]:
        return [p.listing() for name, p in sorted(self._prompts.items())
                if p.scope in principal.scopes]

    def scope_needed(self, name: str, principal: Principal) -> str | None:
        """The scope prompt ``name`` needs that ``principal`` lacks; None when it has it, or
        there is no such prompt."""
        prompt = self._prompts.get(name)
        return prompt.scope if prompt is not None and prompt.scope not in principal.scopes \
            else None

    def find(self, name: Any, principal: Principal) -> Prompt:
        """The prompt, or INVALID_PARAMS for a name that is unknown or this key may not use."""
        prompt = self._prompts.get(name) if isinstance(name, str) else None
        if prompt is None or prompt.scope not in principal.scopes:
            raise RpcError(INVALID_PARAMS, f"unknown prompt: {name}")
        return prompt
