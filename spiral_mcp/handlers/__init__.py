"""Tool implementations, one module per toolset, and the registry that serves them."""

from __future__ import annotations

import dataclasses
import functools
import inspect

from ..sources.access import SourceAccess
from .registry import Tool, ToolRegistry

__all__ = ["Tool", "ToolRegistry", "builtin_tools"]


def builtin_tools(*, sources: SourceAccess | None = None) -> list[Tool]:
    """Every tool the product ships, from each toolset module's ``TOOLS`` table.

    A handler that takes a keyword ``sources`` (it reaches a synced source: the sources toolset,
    writes to mirrored projects) gets the server's :class:`SourceAccess`; without one, sources
    are out of its reach and say so.
    """
    from . import explorer, jira_projects, jira_read, jira_search, jira_write
    from . import sources as source_tools

    access = sources or SourceAccess(None, unavailable="this server has no source access")
    tools = [*jira_read.TOOLS, *jira_search.TOOLS, *jira_write.TOOLS, *jira_projects.TOOLS,
             *explorer.TOOLS, *source_tools.TOOLS]
    return [dataclasses.replace(tool, handler=functools.partial(tool.handler, sources=access))
            if "sources" in inspect.signature(tool.handler).parameters else tool
            for tool in tools]
