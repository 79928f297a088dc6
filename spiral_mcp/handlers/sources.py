"""Sources toolset (admin): the tenant's synced source instances, and a sync on demand.

Credentials never leave the store: the listing reads no credential column, and a sync opens
them in memory only for its requests to the source. A sync takes the same per-instance lock as
the background sync, so a call finding one running is a CONFLICT, not a second sync. It runs on a
connection of its own, never one of the request pool (it waits on the source between pages while
holding that lock), and in its tenant's share of syncs (SYNC_MAX_PER_TENANT).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from ..db import Database
from ..errors import ErrorCode, ServiceError
from ..sources.access import SourceAccess, SourceNotFound, SyncBusy
from ..sources.base import SourceError
from ..sources.manage import SourceAdminError
from ..sources.secrets import CredentialError
from ..sources.sync import SyncError, SyncProgress
from .context import ToolContext
from .registry import Tool
from .rows import jsonable

__all__ = ["TOOLS", "sync_now", "unusable_source", "upstream_error"]


def upstream_error(exc: SourceError) -> ServiceError:
    """UPSTREAM_ERROR with the source's own words and status (``details``: kind, status, and
    whether the change may have been made all the same)."""
    message = str(exc)
    if exc.ambiguous:
        message += ("; the source may have made the change all the same: sync it (sources_sync) "
                    "and look before writing again (a retry with the same idempotency_key is "
                    "held back meanwhile)")
    return ServiceError(ErrorCode.UPSTREAM_ERROR, message,
                        details=[{"kind": exc.kind, "status": exc.status,
                                  "ambiguous": exc.ambiguous}])


def unusable_source(exc: Exception) -> ServiceError:
    # The stored instance cannot be used as it is (no key here, credentials that do not open,
    # an unknown kind): the operator's to fix, not the caller's.
    return ServiceError(ErrorCode.UPSTREAM_ERROR, str(exc),
                        details=[{"kind": "credentials", "status": None}])


def _listing(row: asyncpg.Record) -> dict[str, Any]:
    config = orjson.loads(row["config"]) if row["config"] else {}
    return {
        "id": str(row["instance_id"]), "kind": row["kind"], "name": row["name"],
        "base_url": row["base_url"], "projects": config.get("projects", {}),
        "last_synced_at": jsonable(row["last_synced_at"]),
        "cursor": orjson.loads(row["sync_cursor"]) if row["sync_cursor"] else None,
    }


async def list_sources(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    async with ctx.transaction(readonly=True) as conn:
        rows = await ctx.database.queries.source_list(conn)
    return {"sources": [_listing(row) for row in rows]}


def source_access(ctx: ToolContext) -> SourceAccess:
    """The server's way to sources; a registry served without one reaches none, and says so."""
    return ctx.sources or SourceAccess(None, unavailable="this server reaches no sources")


Progress = Callable[[float, float | None, str | None], Awaitable[None]]


async def sync_now(database: Database, access: SourceAccess, *, tenant_id: uuid.UUID,
                   instance_id: uuid.UUID, full: bool, trigger: str, progress: Progress,
                   task_id: uuid.UUID | None = None,
                   on_start: Callable[[uuid.UUID], None] | None = None) -> dict[str, Any]:
    """A sync asked for now (the sources_sync tool, the admin API): its pages told to
    ``progress`` in order, its failure as the ServiceError a caller gets, its counts."""
    # The sync reports pages from a plain callback; one sender keeps the notifications in order.
    pages: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()

    def on_page(done: SyncProgress) -> None:
        pages.put_nowait((done.pages, done.line()))

    async def send() -> None:
        while (page := await pages.get()) is not None:
            await progress(page[0], None, page[1])

    sender = asyncio.create_task(send())
    try:
        # Not the pool's: a source answering slowly would keep a pooled connection from every
        # tenant's calls, authentication included, for as long as it takes.
        async with database.detached(application_name="spiral-mcp sync") as conn:
            synced = await access.sync(
                conn, database.queries, tenant_id=tenant_id, instance_id=instance_id,
                trigger=trigger, full=full, task_id=task_id, on_page=on_page,
                on_start=on_start)
        pages.put_nowait(None)
        await sender
    except SyncBusy as exc:
        raise ServiceError(ErrorCode.CONFLICT, f"{exc}; wait for it to finish", retry_after=5.0,
                           details=[{"path": "/source_id", "message": str(exc)}]) from None
    except SourceNotFound:
        # Another tenant's instance is as unknown as none at all.
        raise ServiceError(ErrorCode.NOT_FOUND, f"no source with id {instance_id}") from None
    except SourceError as exc:
        raise upstream_error(exc) from None
    except (CredentialError, SourceAdminError) as exc:
        raise unusable_source(exc) from None
    except SyncError as exc:
        raise ServiceError(ErrorCode.CONFLICT, str(exc)) from None
    finally:
        sender.cancel()
    return {"source_id": str(instance_id), "pages": synced.pages, "items": synced.items,
            "changed": synced.changed,
            "items_per_second": round(synced.items_per_second, 1)}


async def sync_source(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    # For a client that takes tasks: it gets a handle and reads the pages' progress with
    # tasks/get; tasks/cancel stops the sync between or inside pages (a page and the cursor
    # commit together, so what was written stays whole, and the next sync resumes from it).
    await ctx.become_task()
    return await sync_now(ctx.database, source_access(ctx), tenant_id=ctx.tenant_id,
                          instance_id=uuid.UUID(args["source_id"]),
                          full=args.get("full", False), trigger="tool", progress=ctx.progress)


TOOLS = (
    Tool(
        name="sources_list",
        title="List synced sources",
        description=(
            "Source instances (Jira, GitHub, Asana) mirrored here: id, kind, name, base_url, "
            "project map, last sync and cursor. No credentials."
        ),
        handler=list_sources,
        scope="admin",
        call_class="read",
    ),
    Tool(
        name="sources_sync",
        title="Sync a source now",
        description=(
            "Sync one source now (incremental, or full), with progress per page; returns pages, "
            "items, changed, items_per_second. Already syncing: CONFLICT; source refused: "
            "UPSTREAM_ERROR."
        ),
        handler=sync_source,
        scope="admin",
        call_class="write",
        share="sync",
        read_only=False,
        destructive=False,
        idempotent=True,   # a second sync finds nothing new to change
        open_world=True,
        task="optional",
    ),
)
