"""Writes to mirrored projects go to their source first; the store follows the source's answer.

A project whose ``source_instance_id`` is set belongs to its source: a write tool checks what it
can in a short transaction (the item exists, ``expected_version`` is current, the move is in the
workflow), ends it, asks the source with no transaction or row lock open, then writes the item as
the source answered in one transaction with its audit row and idempotency result, through the
sync's own page writer. A source that refuses or cannot be reached is UPSTREAM_ERROR with its
status and words, and the store is unchanged.

Between the check and the source's answer another write may land; the source decides, and the
store takes its answer. Once the source may have made the change (it answered, or its answer was
lost), the call's outcome is unknown to a retry: a failure after that keeps the call's
idempotency key until its lease ends instead of releasing it, so a retry with the key cannot
write at the source twice; the next sync brings the store in line either way.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from ..errors import ErrorCode, ServiceError
from ..sources.base import Adapter, Comment, Draft, Item, Ref, SourceError
from ..sources.manage import SourceAdminError, adapter_class
from ..sources.secrets import CredentialError
from ..sources.sync import write_items
from .context import ToolContext
from .jira_read import not_found
from .sources import source_access, unusable_source, upstream_error

__all__ = ["Mirror", "ask", "create_at_source", "item_mirrors", "project_mirror", "store_comment",
           "store_created", "store_item"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Mirror:
    """Where a mirrored project or item lives: its instance (the row the adapter is built from)
    and, for an item, its :class:`Ref` at the source."""

    instance: asyncpg.Record
    ref: Ref | None = None

    @property
    def instance_id(self) -> uuid.UUID:
        return self.instance["instance_id"]

    @property
    def project_ref(self) -> str:
        return self.instance["source_ref"]


async def project_mirror(conn: asyncpg.Connection, ctx: ToolContext,
                         project_key: str) -> Mirror | None:
    """The project's source; None for a local project."""
    row = await ctx.database.queries.project_mirror(conn, project_key=project_key)
    return None if row is None else Mirror(row)


async def item_mirrors(conn: asyncpg.Connection, ctx: ToolContext,
                       issue_keys: Sequence[str]) -> dict[str, Mirror]:
    """The sources of the items among ``issue_keys`` that live in mirrored projects."""
    rows = await ctx.database.queries.item_mirrors(conn, issue_keys=list(issue_keys))
    mirrors = {}
    for row in rows:
        if row["source_id"] is None:
            # Mirrored project, yet no id at the source: nothing there to write to.
            raise ServiceError(ErrorCode.CONFLICT, f"{row['key']} is not at its source yet; "
                                                   "sync the source (sources_sync) and retry")
        parent = (Ref(row["parent_source_id"], row["parent_key"], row["source_ref"])
                  if row["parent_source_id"] else None)
        mirrors[row["key"]] = Mirror(row, Ref(row["source_id"], row["key"], row["source_ref"],
                                              parent))
    return mirrors


async def ask(ctx: ToolContext, mirror: Mirror,
              request: Callable[[Adapter], Awaitable[T]]) -> T:
    """One write at the source, as UPSTREAM_ERROR when it refuses or cannot be reached.

    From an answer on (and after a failure that may hide a change) the outcome is the source's:
    ``ctx.outcome_unknown`` keeps the call's idempotency key if storing the answer fails."""
    try:
        adapter = source_access(ctx).adapter(mirror.instance)
    except (CredentialError, SourceAdminError) as exc:
        raise unusable_source(exc) from None
    try:
        answer = await request(adapter)
    except SourceError as exc:
        ctx.outcome_unknown = exc.ambiguous
        raise upstream_error(exc) from None
    finally:
        await adapter.close()
    ctx.outcome_unknown = True
    return answer


async def create_at_source(ctx: ToolContext, mirror: Mirror, draft: Draft, *,
                           project_key: str, next_number: int) -> Item:
    """Create the item at the mirrored project's source. A source without numbers (Asana) names
    it after the project's ``next_number``; :func:`store_created` settles the number."""

    async def create(adapter: Adapter) -> Item:
        adapter.use_keys([], {project_key: next_number})
        return await adapter.create(mirror.project_ref, draft)

    return await ask(ctx, mirror, create)


async def store_created(conn: asyncpg.Connection, ctx: ToolContext, mirror: Mirror,
                        item: Item) -> Item:
    """Store a newly created item, as stored. A source without numbers gets the project's next
    number here, under the project's lock: another create may have taken the one it was named
    after."""
    if not adapter_class(mirror.instance["kind"]).numbers_items:
        number = await ctx.database.queries.allocate_issue_number(
            conn, project_key=item.project_key)
        item = dataclasses.replace(item, key=f"{item.project_key}-{number}", number=number)
    await store_item(conn, ctx, mirror, item)
    return item


async def store_item(conn: asyncpg.Connection, ctx: ToolContext, mirror: Mirror,
                     item: Item) -> None:
    """Write the item as the source answered it, as a sync page would. A source that numbers
    its items names every link's other end in its answer, so the links it dropped go; one the
    store numbers (Asana) names only the ends its adapter was told (the written item), so its
    links are left to the syncs (a link removed there changes both its ends, and the sync of
    either end prunes it)."""
    kind = mirror.instance["kind"]
    await write_items(conn, ctx.database.queries, tenant_id=ctx.tenant_id, source=kind,
                      instance_id=mirror.instance_id, items=[item],
                      skip_unchanged=False,
                      prune_links=adapter_class(kind).numbers_items)


async def store_comment(conn: asyncpg.Connection, ctx: ToolContext, issue_key: str,
                        comment: Comment) -> asyncpg.Record:
    """Write a comment as the source answered it (keyed on its source id, as a sync writes it);
    the stored comment."""
    queries = ctx.database.queries
    item = await queries.get_issue(conn, issue_key=issue_key)
    if item is None:
        raise not_found(issue_key)
    # Its id is the tenant's next (the trigger): the tenant's counter is this write's first lock,
    # or was taken already by the item's page writer (the lock order in spiral_mcp.ids).
    await queries.source_upsert_comments(
        conn, tenant_id=ctx.tenant_id, item_ids=[item["id"]], source_ids=[comment.source_id],
        authors=[comment.author], bodies=[comment.body], created=[comment.created],
        updated=[comment.updated], ids=[None])
    return await queries.comment_by_source_id(conn, issue_key=issue_key,
                                              source_id=comment.source_id)
