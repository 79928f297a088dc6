"""The values a tenant defines for JQL's closed fields, and the check that a query names only those.

Jira answers ``project = NOPE`` with "The value 'NOPE' does not exist for the field 'project'"
rather than with nothing found, whatever the operator (``!=`` and ``NOT IN`` too): a typo must
not pass for an empty result, nor ``!=`` for "everything". Projects and statuses are the tenant's
own (the compiler cannot know them); types, priorities, status categories and sources are fixed
sets the compiler checks itself. The caller reads :class:`KnownValues` inside the tenant's
transaction, so another tenant's project is as unknown as one that never existed.
"""

from __future__ import annotations

from dataclasses import dataclass

from spiral_mcp.jql.errors import JqlError, show_found
from spiral_mcp.jql.nodes import And, Clause, Literal, Node, Not, Or, Query

__all__ = ["KnownValues", "check_known", "named_values"]

# Fields whose values the tenant defines.
_TENANT_FIELDS = ("project", "status")
# The most known values an error lists (a tenant may have hundreds of projects).
_SHOWN = 50


@dataclass(frozen=True)
class KnownValues:
    """The tenant's project keys and status names (statuses match ignoring case)."""

    projects: tuple[str, ...]
    statuses: tuple[str, ...]


def named_values(query: Query) -> list[tuple[str, Literal]]:
    """The values the query gives project and status, as ``(field, literal)`` in query order."""
    found: list[tuple[str, Literal]] = []
    stack: list[Node] = [] if query.where is None else [query.where]
    while stack:
        node = stack.pop()
        if isinstance(node, And | Or):
            stack.extend(reversed(node.children))
        elif isinstance(node, Not):
            stack.append(node.child)
        elif isinstance(node, Clause) and node.field in _TENANT_FIELDS:
            values = node.value if isinstance(node.value, tuple) else (node.value,)
            found.extend((node.field, v) for v in values if isinstance(v, Literal))
    return found


def _listing(known: tuple[str, ...]) -> str:
    if not known:
        return "none"
    shown = ", ".join(known[:_SHOWN])
    return shown if len(known) <= _SHOWN else f"{shown}, ... ({len(known) - _SHOWN} more)"


def check_known(query: Query, known: KnownValues) -> None:
    """Raise :class:`JqlError` at the first project or status value the tenant does not have.

    Run it on a query that compiled (its project values are well-formed keys)."""
    projects = set(known.projects)
    statuses = {s.lower() for s in known.statuses}
    for field, value in named_values(query):
        if field == "project":
            ok = value.text.strip().upper() in projects
            listed = known.projects
        else:
            ok = value.text.lower() in statuses
            listed = known.statuses
        if not ok:
            values = _listing(listed)
            shown = show_found(value.text) if value.text else "''"
            raise JqlError(
                value.pos, value.text, f"a {field} of this workspace: {values}",
                detail=f"the value {shown} does not exist for the field '{field}'; "
                       f"known values: {values}")
