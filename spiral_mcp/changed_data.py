"""The kinds of a tenant's data a change touches, named as the explorer views that show them.

A write or a source sync says which it changed (a handler's Tool.changes, a sync run's
``on_change``); a resource says which it shows (Resource.changed_by, see handlers/guides.py); the
server tells the resource's subscribers in that tenant. This module is the shared vocabulary, so
the domain (sources) names what it changed without knowing of resources or the protocol.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

__all__ = [
    "AUDIT_LOG",
    "COMMENTS",
    "ITEM_DATA",
    "ITEM_LINKS",
    "ITEM_MOVES",
    "PROJECTS",
    "SOURCES",
    "WORKFLOW_MOVES",
    "WORKFLOW_STATUSES",
    "WORK_ITEMS",
    "DataChanged",
    "nothing_listens",
]

WORK_ITEMS = "work_items"
ITEM_MOVES = "work_item_transitions"
COMMENTS = "comments"
ITEM_LINKS = "work_item_links"
PROJECTS = "projects"
WORKFLOW_STATUSES = "workflow_statuses"
WORKFLOW_MOVES = "workflow_transitions"
SOURCES = "sources"
AUDIT_LOG = "audit_log"

# What a page of synced (or written-through) items may bring: the items and what rides with them.
ITEM_DATA = frozenset({WORK_ITEMS, ITEM_MOVES, COMMENTS, ITEM_LINKS})

# Told, after the change committed, that ``tenant_id``'s data of these kinds changed.
DataChanged = Callable[[uuid.UUID, frozenset[str]], None]


def nothing_listens(tenant_id: uuid.UUID, kinds: frozenset[str]) -> None:
    return None
