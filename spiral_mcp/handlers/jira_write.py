"""Jira toolset, writing: create and update work items, comment on them (links: jira_links.py).

Every write runs in one tenant transaction and ends with ``ctx.commit_write``, so the change, its
audit row (with before and after values) and the stored result of an idempotency key commit
together or not at all. Keys are accepted in any case and stored upper-case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import asyncpg

from ..changed_data import COMMENTS, ITEM_MOVES, WORK_ITEMS
from ..errors import ErrorCode, ServiceError
from ..priorities import priority_of
from ..sources.base import Draft, Ref
from .adf import AdfError, adf_to_markdown, is_adf
from .choices import resolve_assignee
from .context import ToolContext
from .jira_read import not_found
from .registry import Tool
from .rows import jsonable, row_dict
from .writethrough import (
    Mirror,
    ask,
    create_at_source,
    item_mirrors,
    project_mirror,
    store_comment,
    store_created,
    store_item,
)

__all__ = ["TOOLS", "comment_body", "conflict", "invalid", "lock_issue", "markdown_text"]

_ISSUE_TYPE_ALIASES = {"sub-task": "subtask", "sub task": "subtask"}
_COMMENT_MAX = 100_000

# jira_update_issue's field names and the work_items columns they set.
_COLUMNS = {
    "summary": "title", "description": "description", "priority": "priority",
    "assignee": "assignee", "labels": "labels", "due_date": "due_at", "parent_key": "parent_key",
    "custom_fields": "custom_fields",
}

# jira_update_issue's field names and the adapter's names for them; custom fields stay local.
_SOURCE_FIELDS = {
    "summary": "title", "description": "description", "priority": "priority",
    "assignee": "assignee", "labels": "labels", "due_date": "due", "parent_key": "parent",
}

def invalid(path: str, message: str, **extra: Any) -> ServiceError:
    """VALIDATION_ERROR about one argument, with its JSON path as the schema errors carry it."""
    return ServiceError(ErrorCode.VALIDATION_ERROR, f"{path}: {message}",
                        details=[{"path": path, "message": message, **extra}])


def conflict(issue_key: str, expected: int, current: int) -> ServiceError:
    return ServiceError(
        ErrorCode.CONFLICT,
        f"{issue_key} changed since version {expected}; it is at version {current}. Read it "
        "again (jira_get_issue) and retry with the new version.",
        details=[{"path": "/expected_version", "expected": expected, "current": current}],
    )


async def lock_issue(
    conn: asyncpg.Connection, ctx: ToolContext, issue_key: str, expected_version: int | None
) -> asyncpg.Record:
    """The item, locked for this write: NOT_FOUND, or CONFLICT if ``expected_version`` is stale."""
    row = await ctx.database.queries.lock_issue(conn, issue_key=issue_key)
    if row is None:
        raise not_found(issue_key)
    if expected_version is not None and expected_version != row["version"]:
        raise conflict(issue_key, expected_version, row["version"])
    return row


def comment_body(value: Any, path: str) -> str:
    """A comment's Markdown (ADF converted), refused when empty or too long for the store."""
    body = markdown_text(value, path)
    if not body:
        raise invalid(path, "the comment is empty")
    if len(body) > _COMMENT_MAX:
        raise invalid(path, f"the comment is longer than {_COMMENT_MAX} characters")
    return body


def markdown_text(value: Any, path: str) -> str:
    """Markdown from a Markdown string or an ADF document; VALIDATION_ERROR for malformed ADF."""
    if isinstance(value, str):
        return value.strip()
    # The input schemas say only "a string or an object" (a form every client accepts); the
    # document's shape is checked here, each refusal at its own path.
    if not is_adf(value):
        raise invalid(f"{path}/type",
                      'give Markdown text or an ADF document ({"type": "doc", ...})')
    if not isinstance(value.get("content", []), list):
        raise invalid(f"{path}/content", "an ADF document's content is a list of nodes")
    try:
        return adf_to_markdown(value)
    except AdfError as exc:
        raise invalid(path, f"not a valid ADF document: {exc}") from None


def _optional_markdown(value: Any, path: str) -> str | None:
    # An empty description is no description.
    return None if value is None else markdown_text(value, path) or None


def _priority(value: str, path: str) -> str:
    priority = priority_of(value)
    if priority is None:
        raise invalid(path, f"unknown priority {value!r}; use one of critical, high, medium, "
                            "low, none (or Jira's Highest, High, Medium, Low, Lowest)")
    return priority


def _issue_type(value: str) -> str:
    name = " ".join(value.lower().split())
    return _ISSUE_TYPE_ALIASES.get(name, name)


def _due_at(value: str | None, path: str) -> dt.datetime | None:
    if not value:  # "" clears it (an input schema has no null: not every client sends one)
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise invalid(path, f"{value!r} is not a date (YYYY-MM-DD)") from None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _labels(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))  # unique, first occurrence's order


def _custom_fields(given: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    # Fields not named keep their value; a field set to null is removed.
    merged = {**current, **given}
    return {k: v for k, v in merged.items() if v is not None}


async def _check_parent(conn: asyncpg.Connection, ctx: ToolContext, parent_key: str, path: str,
                        *, child_key: str | None = None) -> None:
    queries = ctx.database.queries
    if parent_key == child_key:
        raise invalid(path, "an item cannot be its own parent")
    if not await queries.work_item_key_exists(conn, issue_key=parent_key):
        raise invalid(path, f"no work item with key {parent_key}")
    if child_key is not None and await queries.parent_chain_contains(
            conn, parent_key=parent_key, issue_key=child_key):
        raise invalid(path, f"{parent_key} is below {child_key}; that parent would make a loop")


async def _source_parent(conn: asyncpg.Connection, ctx: ToolContext, mirror: Mirror,
                         parent_key: str | None, path: str) -> Ref | None:
    """The parent as the source knows it: a mirrored item's parent lives at the same source."""
    if parent_key is None:
        return None
    parent = (await item_mirrors(conn, ctx, [parent_key])).get(parent_key)
    if parent is None or parent.instance_id != mirror.instance_id:
        raise invalid(path, f"{parent_key} is not mirrored from the same source; a mirrored "
                            "item's parent must be")
    return parent.ref


async def create_issue(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    project_key = args["project_key"].upper()
    summary = args["summary"].strip()
    issue_type = _issue_type(args.get("issue_type", "task"))
    priority = _priority(args.get("priority", "medium"), "/priority")
    description = _optional_markdown(args.get("description"), "/description")
    due_at = _due_at(args.get("due_date"), "/due_date")
    parent_key = args["parent_key"].upper() if args.get("parent_key") else None
    if issue_type == "subtask" and parent_key is None:
        raise invalid("/parent_key", "a subtask needs a parent_key")
    # Asked, when it could mean several people, before anything is written.
    assignee = await resolve_assignee(ctx, args.get("assignee"), "/assignee")
    queries = ctx.database.queries
    async with ctx.transaction(readonly=False) as conn:
        project = await queries.create_issue_project(conn, project_key=project_key)
        if project is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no project with key {project_key}")
        if issue_type not in project["issue_types"]:
            raise invalid("/issue_type", f"{project_key} has no issue type {issue_type!r}; use "
                                         f"one of {', '.join(project['issue_types'])}")
        if project["initial_status"] is None:
            raise invalid("/project_key", f"{project_key}'s workflow has no initial status")
        if parent_key is not None:
            await _check_parent(conn, ctx, parent_key, "/parent_key")
        mirror = await project_mirror(conn, ctx, project_key)
        if mirror is None:
            # From here the project row is locked until commit: keep the rest short.
            number = await queries.allocate_issue_number(conn, project_key=project_key)
            # The item's id and its first move's are the tenant's next (the trigger): its
            # counter, taken after the project's row and before any other (the lock order in
            # spiral_mcp.ids).
            row = await queries.insert_issue(
                conn, tenant_id=ctx.tenant_id, key=f"{project_key}-{number}",
                project_key=project_key, number=number, summary=summary,
                description=description, type=issue_type, status=project["initial_status"],
                status_category=project["initial_category"], priority=priority,
                assignee=assignee or None, reporter=ctx.principal.user,
                labels=_labels(args.get("labels", [])), parent_key=parent_key, due_at=due_at,
                custom_fields=_custom_fields(args.get("custom_fields", {}), {}),
            )
            await queries.insert_issue_transition(
                conn, tenant_id=ctx.tenant_id, work_item_id=row["id"], from_status=None,
                to_status=row["status"], from_category=None, to_category=row["status_category"],
                actor=ctx.principal.user, id=None, transitioned_at=row["created_at"],
            )
            issue = row_dict(row, drop=("id",))
            await ctx.commit_write(conn, arguments=args, result=issue, after=issue)
            return issue
        parent = await _source_parent(conn, ctx, mirror, parent_key, "/parent_key")
    # A mirrored project: the source makes the item (and its key); nothing is open meanwhile.
    draft = Draft(title=summary, description=description, type=issue_type, priority=priority,
                  assignee=assignee or None, labels=_labels(args.get("labels", [])),
                  due=due_at.date() if due_at else None, parent=parent)
    item = await create_at_source(ctx, mirror, draft, project_key=project_key,
                                  next_number=project["next_number"])
    async with ctx.transaction(readonly=False) as conn:
        item = await store_created(conn, ctx, mirror, item)
        if custom := _custom_fields(args.get("custom_fields", {}), {}):
            await queries.set_custom_fields(conn, issue_key=item.key, custom_fields=custom)
        issue = row_dict(await queries.get_issue(conn, issue_key=item.key), drop=("id",))
        await ctx.commit_write(conn, arguments=args, result=issue, after=issue)
    return issue


def _new_values(fields: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The fields' new values, normalized as stored (before any database check)."""
    new: dict[str, Any] = {}
    for name, value in fields.items():
        path = f"/fields/{name}"
        match name:
            case "summary":
                new[name] = value.strip()
            case "description":
                new[name] = _optional_markdown(value, path)
            case "priority":
                new[name] = _priority(value, path)
            case "labels":
                new[name] = _labels(value)
            case "due_date":
                new[name] = _due_at(value, path)
            case "parent_key":
                new[name] = value.upper() if value else None
            case "assignee":
                new[name] = value or None  # "" for nobody
            case "custom_fields":
                new[name] = _custom_fields(value, current["custom_fields"])
            case _:
                new[name] = value
    return new


def _current_values(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[column if column != "title" else "summary"]
            for name, column in _COLUMNS.items()}


def _same(name: str, old: Any, new: Any) -> bool:
    if name == "labels":
        return sorted(old) == sorted(new)  # labels are a set; order is not a change
    return bool(old == new)


async def _set_fields(conn: asyncpg.Connection, ctx: ToolContext, issue_key: str,
                      version: int, changes: dict[str, Any]) -> asyncpg.Record:
    moved = await ctx.database.queries.update_issue_fields(
        conn, issue_key=issue_key, expected_version=version,
        changes={_COLUMNS[name]: value for name, value in changes.items()})
    if moved is None:  # a concurrent change (a sync) won the compare-and-set
        raise conflict(issue_key, version, version + 1)
    return moved


def _update_result(issue_key: str, version: int, updated_at: Any, before: dict[str, Any],
                   after: dict[str, Any]) -> dict[str, Any]:
    return {"key": issue_key, "version": version, "updated_at": jsonable(updated_at),
            "changed": {name: {"from": before[name], "to": after[name]} for name in before}}


async def update_issue(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    issue_key = args["issue_key"].upper()
    expected = args.get("expected_version")
    fields = args["fields"]
    if "assignee" in fields:
        # Asked, when it could mean several people, before anything is written.
        fields = {**fields, "assignee": await resolve_assignee(ctx, fields["assignee"],
                                                               "/fields/assignee")}
    async with ctx.transaction(readonly=False) as conn:
        row = await lock_issue(conn, ctx, issue_key, expected)
        current = _current_values(row)
        new = _new_values(fields, row)
        if new.get("parent_key"):
            await _check_parent(conn, ctx, new["parent_key"], "/fields/parent_key",
                                child_key=issue_key)
        changed = {name: value for name, value in new.items()
                   if not _same(name, current[name], value)}
        before = {name: jsonable(current[name]) for name in changed}
        mirror = (await item_mirrors(conn, ctx, [issue_key])).get(issue_key)
        if mirror is None:
            version, updated_at = row["version"], None
            if changed:
                moved = await _set_fields(conn, ctx, issue_key, row["version"], changed)
                version, updated_at = moved["version"], moved["updated_at"]
            after = {name: jsonable(value) for name, value in changed.items()}
            result = _update_result(issue_key, version, updated_at, before, after)
            await ctx.commit_write(conn, arguments=args, result=result, before=before,
                                   after=after)
            return result
        remote = {_SOURCE_FIELDS[name]: value for name, value in changed.items()
                  if name in _SOURCE_FIELDS}
        if remote.get("due") is not None:
            remote["due"] = remote["due"].date()
        if "parent" in remote:
            remote["parent"] = await _source_parent(conn, ctx, mirror, remote["parent"],
                                                    "/fields/parent_key")
    # A mirrored item: the version was checked above; the source decides the values, and no
    # transaction or lock is open while it does.
    item = (await ask(ctx, mirror, lambda adapter: adapter.update(mirror.ref, remote))
            if remote else None)
    async with ctx.transaction(readonly=False) as conn:
        if item is not None:
            await store_item(conn, ctx, mirror, item)
        row = await ctx.database.queries.get_issue(conn, issue_key=issue_key)
        stored = _current_values(row)
        version, updated_at = row["version"], row["updated_at"] if changed else None
        if "custom_fields" in changed:  # the store's own field, never the source's
            moved = await _set_fields(conn, ctx, issue_key, version,
                                      {"custom_fields": changed["custom_fields"]})
            version, updated_at = moved["version"], moved["updated_at"]
            stored["custom_fields"] = changed["custom_fields"]
        after = {name: jsonable(stored[name]) for name in changed}
        result = _update_result(issue_key, version, updated_at, before, after)
        await ctx.commit_write(conn, arguments=args, result=result, before=before, after=after)
    return result


async def add_comment(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    issue_key = args["issue_key"].upper()
    if ("body" in args) == ("comment" in args):
        raise invalid("/body", "give the comment as body (or as comment), exactly once")
    path = "/body" if "body" in args else "/comment"
    body = comment_body(args.get("body", args.get("comment")), path)
    queries = ctx.database.queries
    async with ctx.transaction(readonly=False) as conn:
        mirror = (await item_mirrors(conn, ctx, [issue_key])).get(issue_key)
        if mirror is None:
            # The comment's id before the item's lock: the lock order in spiral_mcp.ids.
            comment_id = await queries.take_work_ids(conn, tenant_id=ctx.tenant_id, count=1)
            item = await queries.touch_issue(conn, issue_key=issue_key)
            if item is None:
                raise not_found(issue_key)
            row = await queries.insert_comment(conn, tenant_id=ctx.tenant_id,
                                               work_item_id=item["id"],
                                               author=ctx.principal.user, body=body,
                                               id=comment_id)
            result = {"issue_key": item["key"], **row_dict(row)}
            await ctx.commit_write(conn, arguments=args, result=result, after=result)
            return result
    comment = await ask(ctx, mirror, lambda adapter: adapter.comment(mirror.ref, body))
    async with ctx.transaction(readonly=False) as conn:
        row = await store_comment(conn, ctx, issue_key, comment)
        result = {"issue_key": issue_key, **row_dict(row)}
        await ctx.commit_write(conn, arguments=args, result=result, after=result)
    return result


TOOLS = (
    Tool(
        name="jira_create_issue",
        title="Create a work item",
        description=(
            "Create a work item, you as reporter; returns it with its key (e.g. PROJ-13), initial "
            "status and version 1. In a project mirrored from Jira, GitHub or Asana it is created "
            "there first (refused: UPSTREAM_ERROR). Issue types per project: jira_list_projects."
        ),
        handler=create_issue,
        changes=frozenset({WORK_ITEMS, ITEM_MOVES}),
        scope="write",
        call_class="write",
        read_only=False,
        destructive=False,
        idempotent=False,  # without an idempotency_key, each call makes another item
        aliases=("jira.create_issue",),
    ),
    Tool(
        name="jira_update_issue",
        title="Update a work item's fields",
        description=(
            "Change fields of a work item (others keep their value); returns each change (from, "
            "to) and the new version (none changed: same version). An assignee name that could "
            "mean several people is asked of the user. Status: jira_transition_issue."
        ),
        handler=update_issue,
        changes=frozenset({WORK_ITEMS}),
        scope="write",
        call_class="write",
        read_only=False,
        destructive=True,   # it overwrites values
        idempotent=True,    # the same fields again change nothing and keep the version
        aliases=("jira.update_issue",),
    ),
    Tool(
        name="jira_add_comment",
        title="Comment on a work item",
        description=(
            "Comment on a work item as your key's user; returns the comment with its id and time."
        ),
        handler=add_comment,
        changes=frozenset({COMMENTS, WORK_ITEMS}),
        scope="write",
        call_class="write",
        read_only=False,
        destructive=False,
        idempotent=False,  # each call adds another comment
        aliases=("jira.add_comment",),
    ),
)
