"""Jira toolset, reading: one work item with what an agent usually asks for next."""

from __future__ import annotations

from typing import Any

from ..errors import ErrorCode, ServiceError
from .context import ToolContext
from .registry import Tool
from .rows import row_dict, row_dicts

__all__ = ["TOOLS"]


def not_found(issue_key: str) -> ServiceError:
    # Another tenant's item is exactly as absent as one that never existed.
    return ServiceError(ErrorCode.NOT_FOUND, f"no work item with key {issue_key}")


async def get_issue(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    issue_key = args["issue_key"].upper()
    queries = ctx.database.queries
    async with ctx.transaction(readonly=True) as conn:
        row = await queries.get_issue(conn, issue_key=issue_key)
        if row is None:
            raise not_found(issue_key)
        issue = row_dict(row, drop=("id",))
        if args.get("include_comments", False):
            issue["comments"] = row_dicts(await queries.issue_comments(
                conn, work_item_id=row["id"], max_comments=args.get("max_comments", 10)))
        if args.get("include_history", False):
            issue["history"] = row_dicts(
                await queries.issue_transitions(conn, work_item_id=row["id"]))
        if args.get("include_links", False):
            issue["links"] = row_dicts(await queries.issue_links(conn, work_item_id=row["id"]))
        if args.get("include_children", False):
            issue["children"] = row_dicts(await queries.issue_children(conn, issue_key=issue_key))
    return issue


TOOLS = (
    Tool(
        name="jira_get_issue",
        title="Get a work item",
        description=(
            "One work item by key: every field, its source and version; optionally its latest "
            "comments, status history (oldest first), links and children."
        ),
        handler=get_issue,
        scope="read",
        call_class="read",
        aliases=("jira.get_issue",),
    ),
)
