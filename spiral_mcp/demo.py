"""Demo data: a few projects with a few hundred work items, their history, comments and links,
spread over the last 90 days, so a new user has something real to ask about.

Deterministic for a given seed and moment. Runs inside the caller's transaction, scoped to the
tenant like every other write. Loaded once per tenant: a tenant that has any of the demo's
projects already is refused (:class:`DemoPresent`), so a second ``spiral-mcp demo`` cannot double
the data or mix it into a project of the tenant's own.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from .admin import AdminError
from .ids import take_work_ids
from .queries import Queries

__all__ = ["LABELS", "SUBJECTS", "VERBS", "DemoPresent", "load_demo"]

_PROJECTS = (
    ("WEB", "Web storefront", "The customer-facing shop", "alice@example.com"),
    ("API", "Public API", "REST and webhooks for partners", "bob@example.com"),
    ("OPS", "Operations", "Infrastructure, on-call and releases", "carol@example.com"),
)
_PEOPLE = ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com",
           "erin@example.com", "frank@example.com")
LABELS = ("frontend", "backend", "infra", "security", "performance", "customer", "tech-debt",
           "team-a", "team-b")
SUBJECTS = ("checkout", "search", "login", "payment webhook", "rate limiter", "cache layer",
             "CSV export", "dashboard", "notification emails", "deploy pipeline", "audit trail",
             "image upload", "billing page", "SSO", "API pagination", "error reporting")
VERBS = {
    "bug": ("Fix crash in", "Fix timeout in", "Wrong totals in", "Broken layout of"),
    "story": ("As a customer I can use", "Let admins configure", "Self-service"),
    "task": ("Upgrade", "Document", "Clean up", "Add monitoring for"),
    "feature": ("Add dark mode to", "Offer bulk edit in", "Add filters to"),
}
# Workflow paths through the default workflow: the statuses an item passes, in order.
_PATHS = (
    ("To Do",),
    ("To Do", "In Progress"),
    ("To Do", "In Progress", "Blocked"),
    ("To Do", "In Progress", "In Review"),
    ("To Do", "In Progress", "In Review", "Done"),
    ("To Do", "In Progress", "Done"),
    ("To Do", "In Progress", "Blocked", "In Progress", "In Review", "Done"),
    ("To Do", "Cancelled"),
)
_PATH_WEIGHTS = (20, 14, 4, 6, 30, 14, 6, 6)
_CATEGORY = {"To Do": "todo", "In Progress": "in_progress", "Blocked": "blocked",
             "In Review": "in_review", "Done": "done", "Cancelled": "cancelled"}
_PRIORITIES = ("critical", "high", "medium", "low", "none")
_PRIORITY_WEIGHTS = (5, 20, 50, 20, 5)
_COMMENTS = ("Looking into this now.", "Reproduced on staging.", "PR is up for review.",
             "Blocked on the vendor's answer.", "Customer confirmed the fix.",
             "Can we split this into smaller pieces?", "Added a test for the edge case.")


class DemoPresent(AdminError):
    """The tenant has a project the demo would load into; nothing was loaded."""


def _columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in names}


async def load_demo(
    conn: asyncpg.Connection,
    queries: Queries,
    *,
    tenant_id: uuid.UUID,
    items_per_project: int = 100,
    seed: int = 7,
    now: datetime | None = None,
) -> dict[str, int]:
    """Add the demo projects and their items to ``tenant_id``; return what was created.

    Raises DemoPresent, having changed nothing, when the tenant has any of the demo's projects.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    now = now or datetime.now(UTC)
    await queries.set_tenant(conn, tenant_id=str(tenant_id))
    present = await queries.demo_projects_present(
        conn, project_keys=[key for key, *_ in _PROJECTS])
    if present:
        keys = ", ".join(row["project_key"] for row in present)
        raise DemoPresent(
            f"tenant {tenant_id} already has the project(s) {keys}; the demo loads only into a "
            "tenant without them, so nothing was loaded")
    items: list[dict[str, Any]] = []
    history: list[tuple[str, str | None, str, datetime, str]] = []
    for project_key, name, description, lead in _PROJECTS:
        await queries.demo_insert_project(
            conn, tenant_id=tenant_id, project_key=project_key, name=name,
            description=description, lead=lead,
        )
        epics: list[str] = []
        for number in range(1, items_per_project + 1):
            key = f"{project_key}-{number}"
            kind = "epic" if number <= 4 else rng.choice(
                ("bug", "bug", "story", "task", "task", "feature"))
            # At most 89 days and 23 hours back: every item falls within the last 90 days.
            created = now - timedelta(days=rng.uniform(1, 89), hours=rng.uniform(0, 23))
            path = rng.choices(_PATHS, _PATH_WEIGHTS)[0]
            at, previous = created, None
            for step, status in enumerate(path, start=2):
                history.append((key, previous, status, at, rng.choice(_PEOPLE)))
                previous = status
                # Kept in the past, a second apart at least: one item's moves never share a
                # moment (a move is unique by item, moment and target).
                latest = now - timedelta(seconds=len(path) - step)
                at = min(latest, at + timedelta(hours=rng.uniform(2, 24 * 6)))
            final = path[-1]
            last_move = history[-1][3]
            verb = rng.choice(VERBS.get(kind, ("Deliver",)))
            items.append({
                "keys": key, "project_keys": project_key, "numbers": number,
                "titles": f"{verb} {rng.choice(SUBJECTS)}" if kind != "epic"
                          else f"Epic: {rng.choice(SUBJECTS)} overhaul",
                "descriptions": f"{name}: {rng.choice(SUBJECTS)} needs attention. "
                                "Steps and acceptance criteria are in the linked doc.",
                "types": kind, "statuses": final, "categories": _CATEGORY[final],
                "priorities": rng.choices(_PRIORITIES, _PRIORITY_WEIGHTS)[0],
                "assignees": None if final == "To Do" and rng.random() < 0.4
                             else rng.choice(_PEOPLE),
                "reporters": rng.choice(_PEOPLE),
                "labels_csv": ",".join(sorted(rng.sample(LABELS, rng.randint(0, 3)))),
                "parent_keys": rng.choice(epics) if epics and kind != "epic"
                               and rng.random() < 0.5 else None,
                "created": created, "updated": last_move,
                "resolved": last_move if _CATEGORY[final] in ("done", "cancelled") else None,
                "due": created + timedelta(days=rng.randint(7, 60)) if rng.random() < 0.3
                       else None,
            })
            if kind == "epic":
                epics.append(key)

    names = ("keys", "project_keys", "numbers", "titles", "descriptions", "types", "statuses",
             "categories", "priorities", "assignees", "reporters", "labels_csv", "parent_keys",
             "created", "updated", "resolved", "due")
    keys = [item["keys"] for item in items]
    comments = [(item["keys"], rng.choice(_PEOPLE), rng.choice(_COMMENTS),
                 min(now, item["created"] + timedelta(hours=rng.uniform(1, 24 * 20))))
                for item in items for _ in range(rng.choice((0, 0, 1, 1, 2, 3)))]
    links = sorted({(rng.choice(("blocks", "relates", "duplicates", "clones")), a, b)
                    for a, b in (rng.sample(keys, 2) for _ in range(len(keys) // 5))})

    # Project rows before the tenant's id counter (the lock order of spiral_mcp.ids), then one
    # block of ids for everything.
    await queries.demo_set_next_numbers(conn, project_keys=[i["project_keys"] for i in items],
                                        numbers=[i["numbers"] for i in items])
    item_ids, move_ids, comment_ids, link_ids = await take_work_ids(
        conn, queries, tenant_id=tenant_id,
        counts=(len(items), len(history), len(comments), len(links)))
    ids = dict(zip(keys, item_ids, strict=True))
    await queries.demo_insert_work_items(conn, tenant_id=tenant_id, ids=item_ids,
                                         **_columns(items, names))

    await queries.demo_insert_transitions(
        conn, tenant_id=tenant_id,
        item_ids=[ids[key] for key, *_ in history],
        from_statuses=[prev for _, prev, *_ in history],
        to_statuses=[to for _, _, to, *_ in history],
        from_categories=[_CATEGORY[prev] if prev else None for _, prev, *_ in history],
        to_categories=[_CATEGORY[to] for _, _, to, *_ in history],
        actors=[actor for *_, actor in history],
        ats=[at for _, _, _, at, _ in history],
        ids=move_ids,
    )

    await queries.demo_insert_comments(
        conn, tenant_id=tenant_id, item_ids=[ids[c[0]] for c in comments],
        authors=[c[1] for c in comments], bodies=[c[2] for c in comments],
        ats=[c[3] for c in comments], ids=comment_ids,
    )

    await queries.demo_insert_links(
        conn, tenant_id=tenant_id, link_types=[t for t, _, _ in links],
        outward_ids=[ids[a] for _, a, _ in links], inward_ids=[ids[b] for _, _, b in links],
        actors=["demo@example.com"] * len(links),
        ids=link_ids,
    )
    return {"projects": len(_PROJECTS), "work_items": len(items), "transitions": len(history),
            "comments": len(comments), "links": len(links)}
