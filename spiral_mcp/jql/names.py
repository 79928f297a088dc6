"""The vocabulary of the supported JQL subset: field names (with Jira's aliases) and functions."""

from __future__ import annotations

__all__ = ["DATE_FUNCTIONS", "FIELDS", "FIELD_ALIASES", "FUNCTIONS", "resolve_field"]

FIELDS: tuple[str, ...] = (
    "project", "key", "status", "statusCategory", "type", "priority", "assignee", "reporter",
    "labels", "parent", "created", "updated", "resolved", "due", "summary", "description", "text",
    "source",
)

FIELD_ALIASES = {  # Jira's other names of fields
    "issuetype": "type",
    "issuekey": "key",
    "createddate": "created",
    "updateddate": "updated",
    "resolutiondate": "resolved",
    "duedate": "due",
}

_BY_LOWER = {name.lower(): name for name in FIELDS} | FIELD_ALIASES

# Canonical name -> the largest number of arguments it takes.
FUNCTIONS: dict[str, int] = {
    "currentUser": 0,
    "now": 0,
    "startOfDay": 1,
    "startOfWeek": 1,
    "startOfMonth": 1,
    "startOfYear": 1,
    "endOfDay": 1,
    "endOfWeek": 1,
    "endOfMonth": 1,
    "endOfYear": 1,
}
DATE_FUNCTIONS = frozenset(FUNCTIONS) - {"currentUser"}
FUNCTIONS_BY_LOWER = {name.lower(): name for name in FUNCTIONS}


def resolve_field(name: str) -> str | None:
    """The canonical field for ``name`` (any case, Jira aliases too), or None."""
    return _BY_LOWER.get(name.lower())
