"""What the explorer schema holds: tables, columns, keys, relationships, coded values.

The structure is read from PostgreSQL's catalogs once at start-up (it changes only with a
migration, and a migration means a restart). Views carry the keys and relationships of the table
each one reads, in the view's own column names and without ``tenant_id`` (every row an agent sees
is its tenant's anyway). The tables' indexes are not shown: an explorer query cannot use them
(migration 0010), beyond the tenant's own. Row counts and sample values are per tenant and per call.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import asyncpg

from ..queries import Queries
from .allowlist import FUNCTIONS, TYPES

__all__ = ["CODED_VALUES", "Catalog", "load_catalog"]

_TENANT = "tenant_id"
SAMPLE_MAX_VALUES = 20
_SAMPLE_MAX_LENGTH = 100

_STATUS_CATEGORIES = [
    {"value": "todo", "meaning": "not started"},
    {"value": "in_progress", "meaning": "being worked on"},
    {"value": "blocked", "meaning": "started but waiting on something"},
    {"value": "in_review", "meaning": "done by its assignee, under review"},
    {"value": "done", "meaning": "finished; resolved (resolved_at is set)"},
    {"value": "cancelled", "meaning": "will not be done; resolved (resolved_at is set)"},
]
CODED_VALUES: list[dict[str, Any]] = [
    {"columns": ["work_items.status_category", "workflow_statuses.category",
                 "work_item_transitions.from_category", "work_item_transitions.to_category"],
     "values": _STATUS_CATEGORIES,
     "note": "Open items: status_category NOT IN ('done', 'cancelled'). status is the project's "
             "own name for a workflow step; compare categories across projects."},
    {"columns": ["work_items.priority"],
     "values": [{"value": "critical", "meaning": "highest", "rank": 4},
                {"value": "high", "meaning": "high", "rank": 3},
                {"value": "medium", "meaning": "default", "rank": 2},
                {"value": "low", "meaning": "low", "rank": 1},
                {"value": "none", "meaning": "no priority set", "rank": 0}],
     "note": "Sort by rank (CASE priority WHEN 'critical' THEN 4 ...), not alphabetically."},
    {"columns": ["work_items.type"],
     "values": [{"value": "epic", "meaning": "a large body of work; parent of stories/tasks"},
                {"value": "story", "meaning": "a user-facing piece of work"},
                {"value": "task", "meaning": "a piece of work"},
                {"value": "bug", "meaning": "a defect"},
                {"value": "subtask", "meaning": "part of another item (parent_key)"},
                {"value": "feature", "meaning": "a new capability"}]},
    {"columns": ["work_item_links.link_type"],
     "values": [{"value": "blocks", "meaning": "outward item blocks inward item"},
                {"value": "relates", "meaning": "related, no direction"},
                {"value": "duplicates", "meaning": "outward item duplicates inward item"},
                {"value": "clones", "meaning": "outward item is a clone of inward item"}]},
    {"columns": ["work_items.source", "work_item_links.source", "sources.kind"],
     "values": [{"value": "local", "meaning": "created here"},
                {"value": "jira", "meaning": "synced from Jira"},
                {"value": "github", "meaning": "synced from GitHub issues"},
                {"value": "asana", "meaning": "synced from Asana"}]},
    {"columns": ["audit_log.outcome"],
     "values": [{"value": "ok", "meaning": "the call succeeded"},
                {"value": "error", "meaning": "the call failed; see error_code"}]},
]

HINTS = [
    "Every table holds only your tenant's rows; no tenant filter is needed.",
    "comments, work_item_transitions and work_item_links refer to work_items.id "
    "(not key): JOIN explorer.work_items w ON w.id = c.work_item_id.",
    "work_items.parent_key and work_items.project_key are text keys "
    "(parent_key = work_items.key, project_key = projects.project_key).",
    "labels is text[]: 'x' = ANY(labels), labels @> ARRAY['x'], or unnest(labels).",
    "Lead time: resolved_at - created_at; cycle time: from the first transition to "
    "in_progress (work_item_transitions.to_category) to resolved_at.",
    "Times are timestamptz; date_trunc('week', created_at) groups by week, "
    "now() - interval '30 days' looks back.",
    "Only SELECT over these tables, with the listed functions (no EXPLAIN: plans come from "
    "statistics of every tenant's rows).",
    "Functions that make long text from a size or a pattern (repeat, lpad, rpad, replace, "
    "regexp_replace, regexp_match, array_to_string, array_replace) refuse a result over 1 MiB; "
    "a query may use 256 MiB of database memory: aggregate or filter before building "
    "large values.",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Table:
    name: str
    kind: str
    description: str | None
    columns: list[dict[str, Any]]
    primary_key: list[str]
    unique_keys: list[list[str]]
    relationships: list[dict[str, Any]]

    def structure(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "description": self.description,
            "columns": self.columns, "primary_key": self.primary_key,
            "unique_keys": self.unique_keys, "relationships": self.relationships,
        }


def _without_tenant(columns: list[str]) -> list[str]:
    return [c for c in columns if c != _TENANT]


@dataclasses.dataclass(frozen=True, slots=True)
class Catalog:
    tables: dict[str, Table]

    @property
    def names(self) -> list[str]:
        return sorted(self.tables)

    def columns(self) -> dict[str, list[str]]:
        """Each relation's column names, in order."""
        return {name: [c["name"] for c in table.columns] for name, table in self.tables.items()}

    def find(self, name: str) -> Table | None:
        """Case-insensitive, with or without the ``explorer.`` prefix."""
        key = name.strip().strip('"').lower().removeprefix("explorer.")
        return self.tables.get(key)

    def suggestions(self, name: str) -> list[str]:
        key = name.strip().lower().removeprefix("explorer.")
        close = difflib.get_close_matches(key, self.names, n=3, cutoff=0.5)
        contains = [n for n in self.names if key and (key in n or n in key)]
        return list(dict.fromkeys([*close, *contains]))[:5]

    def relationships(self) -> list[dict[str, Any]]:
        return [{"from_table": t.name, **r} for t in self.tables.values()
                for r in t.relationships]

    def reference(self) -> dict[str, Any]:
        """What an agent needs besides the tables to write correct SQL the first time."""
        return {
            "dialect": "PostgreSQL",
            "schema": "explorer",
            "coded_values": CODED_VALUES,
            "functions": sorted(FUNCTIONS),
            "types": sorted(TYPES),
            "hints": HINTS,
        }


async def load_catalog(conn: asyncpg.Connection, queries: Queries) -> Catalog:
    """Read the explorer schema's structure from the catalogs (no tenant rows are read)."""
    relations = await queries.explorer_relations(conn)
    columns: dict[str, list[dict[str, Any]]] = {r["name"]: [] for r in relations}
    for row in await queries.explorer_columns(conn):
        columns[row["relation"]].append({
            "name": row["name"], "type": row["type"], "nullable": row["nullable"],
            "default": row["default_value"], "description": row["description"],
        })
    keys: dict[str, dict[str, Any]] = {r["name"]: {"pk": [], "unique": [], "fk": []}
                                       for r in relations}
    for row in await queries.explorer_constraints(conn):
        table = row["relation"]
        own = {c["name"] for c in columns[table]}
        cols = _without_tenant(list(row["columns"]))
        if not cols or not set(cols) <= own:
            continue
        if row["kind"] == "p":
            keys[table]["pk"] = cols
        elif row["kind"] == "u":
            keys[table]["unique"].append(cols)
        elif row["ref_relation"] is not None:
            keys[table]["fk"].append({
                "columns": cols, "to_table": row["ref_relation"],
                "to_columns": _without_tenant(list(row["ref_columns"])),
            })
    return Catalog({
        r["name"]: Table(
            name=r["name"], kind=r["kind"], description=r["description"],
            columns=columns[r["name"]], primary_key=keys[r["name"]]["pk"],
            unique_keys=keys[r["name"]]["unique"], relationships=keys[r["name"]]["fk"],
        )
        for r in relations
    })


async def tenant_counts(conn: asyncpg.Connection, queries: Queries,
                        relations: list[str] | None) -> dict[str, int]:
    """This tenant's row count of each relation (all when None)."""
    rows = await queries.explorer_row_counts(conn, relations=relations)
    return {r["relation"]: r["row_count"] for r in rows}


async def tenant_samples(conn: asyncpg.Connection, queries: Queries, relation: str
                         ) -> dict[str, list[dict[str, Any]]]:
    """Sample values of the low-cardinality text and boolean columns, from this tenant's rows:
    at most SAMPLE_MAX_VALUES distinct values that repeat (so titles and keys are left out)."""
    samples: dict[str, list[dict[str, Any]]] = {}
    # Longer values are left out on the server: they were sent only to be dropped here.
    for row in await queries.explorer_column_samples(
            conn, relation=relation, max_values=SAMPLE_MAX_VALUES,
            max_length=_SAMPLE_MAX_LENGTH):
        values = row["sample"]
        if not values:
            continue
        total = sum(v["count"] for v in values)
        if total < 2 * len(values) and len(values) > 1:
            continue  # mostly unique values: identifiers or prose, not codes
        if any(isinstance(v["value"], str) and len(v["value"]) > _SAMPLE_MAX_LENGTH
               for v in values):
            continue
        samples[row["column_name"]] = values
    return samples
