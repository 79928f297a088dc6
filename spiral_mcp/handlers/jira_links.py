"""Jira toolset, linking: one work item to another ("PROJ-1 blocks PROJ-2").

A link between two items mirrored from one source is written there first and stored as the
source answered; any other link lives in the store only. Like every write, it commits with its
audit row and idempotency record.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ..changed_data import ITEM_LINKS
from ..errors import ErrorCode, ServiceError
from .context import ToolContext
from .jira_read import not_found
from .jira_write import invalid
from .registry import Tool
from .rows import jsonable
from .writethrough import ask, item_mirrors

__all__ = ["TOOLS"]

# link_type as agents write it -> (stored type, whether the two keys swap). An inverse name reads
# from the other end: "A is blocked by B" is stored as "B blocks A".
_LINK_TYPES = {
    "blocks": ("blocks", False), "block": ("blocks", False), "is blocked by": ("blocks", True),
    "relates": ("relates", False), "relates to": ("relates", False),
    "relate": ("relates", False),
    "duplicates": ("duplicates", False), "duplicate": ("duplicates", False),
    "is duplicated by": ("duplicates", True),
    "clones": ("clones", False), "cloners": ("clones", False), "clone": ("clones", False),
    "is cloned by": ("clones", True),
}
_LINK_VERBS = {"blocks": "blocks", "relates": "relates to", "duplicates": "duplicates",
               "clones": "clones"}


async def link_issues(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    outward_key = args["outward_issue_key"].upper()
    inward_key = args["inward_issue_key"].upper()
    spelled = " ".join(args["link_type"].lower().split())
    if spelled not in _LINK_TYPES:
        raise invalid("/link_type", f"unknown link type {args['link_type']!r}; use blocks, "
                                    "relates to, duplicates, clones, is blocked by, "
                                    "is duplicated by or is cloned by")
    link_type, swap = _LINK_TYPES[spelled]
    if outward_key == inward_key:
        raise invalid("/inward_issue_key", "an item cannot be linked to itself")
    source, target = (inward_key, outward_key) if swap else (outward_key, inward_key)
    async with ctx.transaction(readonly=False) as conn:
        link_id = await _take_link_id(conn, ctx)
        ids = await _link_ends(conn, ctx, outward_key, inward_key)
        mirrors = await item_mirrors(conn, ctx, [source, target])
        outward, inward = mirrors.get(source), mirrors.get(target)
        # Only a link between two items of one source can live there; any other stays local.
        if outward is None or inward is None or outward.instance_id != inward.instance_id:
            return await _insert_link(conn, ctx, args, ids, link_type, source, target, "local",
                                      link_id)
        # Refused here, not after the source wrote a second copy of it.
        if await ctx.database.queries.link_exists(
                conn, link_type=link_type, outward_id=ids[source], inward_id=ids[target]):
            raise _link_exists(link_type, source, target)
    linked = await ask(ctx, outward,
                       lambda adapter: adapter.link(outward.ref, inward.ref, link_type))
    # A link the source holds is its to prune; one it cannot hold (GitHub) stays local.
    held_by = outward.instance["kind"] if linked else "local"
    async with ctx.transaction(readonly=False) as conn:
        link_id = await _take_link_id(conn, ctx)
        ids = await _link_ends(conn, ctx, outward_key, inward_key)
        return await _insert_link(conn, ctx, args, ids, link_type, source, target, held_by,
                                  link_id)


async def _take_link_id(conn: asyncpg.Connection, ctx: ToolContext) -> int:
    """A new link's id, taken before its ends are locked: the lock order in spiral_mcp.ids (a
    page writer holding the tenant's counter may be waiting for either end). Unused when the
    link exists already or is asked of a source first: a gap in this tenant's own ids."""
    return await ctx.database.queries.take_work_ids(conn, tenant_id=ctx.tenant_id, count=1)


async def _link_ends(conn: asyncpg.Connection, ctx: ToolContext, *keys: str) -> dict[str, int]:
    """Both ends of a new link by key, locked; NOT_FOUND for a missing one."""
    ids = {r["key"]: r["id"] for r in await ctx.database.queries.lock_link_ends(
        conn, issue_keys=list(keys))}
    for key in keys:
        if key not in ids:
            raise not_found(key)
    return ids


def _link_sentence(link_type: str, source: str, target: str) -> str:
    return f"{source} {_LINK_VERBS[link_type]} {target}"


def _link_exists(link_type: str, source: str, target: str) -> ServiceError:
    return ServiceError(ErrorCode.CONFLICT, "the link already exists: "
                        + _link_sentence(link_type, source, target))


async def _insert_link(conn: asyncpg.Connection, ctx: ToolContext, args: dict[str, Any],
                       ids: dict[str, int], link_type: str, source: str, target: str,
                       held_by: str, link_id: int) -> dict[str, Any]:
    """Store "source <link_type> target" as ``link_id`` with its audit row; CONFLICT when it
    exists. ``held_by``: 'local', or the kind of source the link was written to."""
    row = await ctx.database.queries.insert_link(
        conn, tenant_id=ctx.tenant_id, link_type=link_type, outward_id=ids[source],
        inward_id=ids[target], created_by=ctx.principal.user, source=held_by, id=link_id,
    )
    if row is None:
        raise _link_exists(link_type, source, target)
    result = {
        "id": row["id"], "link_type": link_type, "outward_issue_key": source,
        "inward_issue_key": target, "description": _link_sentence(link_type, source, target),
        "created_at": jsonable(row["created_at"]),
    }
    await ctx.commit_write(conn, arguments=args, result=result, after=result)
    return result


TOOLS = (
    Tool(
        name="jira_link_issues",
        title="Link two work items",
        description=(
            "Link two items: \"outward <link_type> inward\", e.g. PROJ-1 blocks PROJ-2; an inverse "
            "type reads the other way; relates to has no direction. An existing link: CONFLICT."
        ),
        handler=link_issues,
        changes=frozenset({ITEM_LINKS}),
        scope="write",
        call_class="write",
        read_only=False,
        destructive=False,
        idempotent=True,  # the same link again is refused; nothing more changes
        aliases=("jira.link_issues",),
    ),
)
