"""The store's priorities and every name accepted for them.

One table for the writers (jira_create_issue, jira_update_issue), JQL and the Jira adapter, so
an item created or synced as Jira's "Lowest" is found by ``priority = Lowest``. GitHub's labels
and Asana's custom field have names of their own (their adapters map them).
"""

from __future__ import annotations

__all__ = ["PRIORITIES", "PRIORITY_ALIASES", "priority_of"]

# The stored values, lowest first: their order is the rank JQL compares by.
PRIORITIES = ("none", "low", "medium", "high", "critical")

# Lower-case name -> stored value: ours, Jira's default scheme, and older schemes' names.
PRIORITY_ALIASES = {
    "critical": "critical", "highest": "critical", "blocker": "critical",
    "high": "high", "major": "high",
    "medium": "medium", "normal": "medium",
    "low": "low", "minor": "low",
    "none": "none", "lowest": "none", "trivial": "none",
}


def priority_of(name: str) -> str | None:
    """The stored priority ``name`` stands for (any case, surrounding spaces ignored), or None."""
    return PRIORITY_ALIASES.get(name.strip().lower())
