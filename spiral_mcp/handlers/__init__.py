"""Tool implementations, one module per toolset, and the registry that serves them."""

from __future__ import annotations

from .registry import Tool, ToolRegistry

__all__ = ["Tool", "ToolRegistry", "builtin_tools"]


def builtin_tools() -> list[Tool]:
    """Every tool the product ships, from each toolset module's ``TOOLS`` table."""
    from . import explorer, jira_links, jira_projects, jira_read, jira_search, jira_write
    from . import sources as source_tools

    return [*jira_read.TOOLS, *jira_search.TOOLS, *jira_write.TOOLS, *jira_links.TOOLS,
            *jira_projects.TOOLS, *explorer.TOOLS, *source_tools.TOOLS]
