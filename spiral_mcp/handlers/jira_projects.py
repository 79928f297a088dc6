"""Jira toolset, projects and workflows: list projects, list an item's possible moves, move it.

A project's workflow (its statuses, their categories and the allowed moves) lives in
``workflow_statuses`` and ``workflow_transitions``; a new project gets the default one.
"""

from __future__ import annotations

from typing import Any

from ..changed_data import COMMENTS, ITEM_MOVES, WORK_ITEMS
from ..errors import ErrorCode, ServiceError
from ..sources.base import Adapter, Comment, Item, SourceError
from .choices import choose_one
from .choices import words as words_of
from .context import ToolContext
from .jira_read import not_found
from .jira_write import comment_body, conflict, invalid, lock_issue
from .registry import Tool
from .rows import jsonable, row_dicts
from .writethrough import Mirror, ask, item_mirrors, store_comment, store_item

__all__ = ["TOOLS"]

CATEGORIES = ("todo", "in_progress", "blocked", "in_review", "done", "cancelled")


def _allowed_text(status: str, allowed: list[dict[str, Any]]) -> str:
    if not allowed:
        return f"the workflow allows no move out of {status!r}"
    moves = ", ".join(f"{t['name']!r} (id {t['id']}) to {t['to_status']!r}" for t in allowed)
    return f"from {status!r} the workflow allows: {moves}"


class _Ambiguous(Exception):
    """The status asked for could mean several moves (or only resembles one): someone must
    choose, the agent would have to guess."""

    def __init__(self, current: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(current)
        self.current = current
        self.candidates = candidates


def _pick(allowed: list[dict[str, Any]], *, status: str | None,
          transition_id: str | None) -> dict[str, Any] | list[dict[str, Any]] | None:
    """The move asked for; or the moves it could mean (one per target status), when it names
    none exactly; or None."""
    if transition_id is not None:
        return next((move for move in allowed if move["id"] == transition_id), None)
    assert status is not None
    wanted = status.lower()
    if move := next((m for m in allowed if m["to_status"].lower() == wanted), None):
        return move
    # Agents often pass the transition's name ("Start progress"); several transitions may share
    # it ("Close" to Done and to Won't Do).
    named = [m for m in allowed if m["name"].lower() == wanted]
    if not named and (words := words_of(status)).strip():
        # Or a part of a name: "review" for "In Review" and "Code Review".
        named = [m for m in allowed
                 if words in words_of(m["to_status"]) or words in words_of(m["name"])]
    by_status: dict[str, dict[str, Any]] = {}
    for move in named:
        by_status.setdefault(move["to_status"], move)
    if len(by_status) == 1 and named[0]["name"].lower() == wanted:
        return named[0]  # the name's moves all lead to one status: nothing to choose
    return list(by_status.values()) or None


def _moves_text(moves: list[dict[str, Any]]) -> str:
    return ", ".join(f"{m['name']!r} (id {m['id']}) to {m['to_status']!r}" for m in moves)


async def _choose_status(ctx: ToolContext, issue_key: str, status: str,
                         ambiguous: _Ambiguous) -> str:
    """The target status a person chose among the candidates."""
    candidates = ambiguous.candidates
    return await choose_one(
        ctx, path="/status", field="status",
        question=f"Move {issue_key} (now {ambiguous.current!r}) to which status?",
        options=[m["to_status"] for m in candidates],
        meaning=(f"{status!r} is not a status {issue_key} can move to from "
                 f"{ambiguous.current!r}; it could mean {_moves_text(candidates)}"),
        details={"current_status": ambiguous.current, "moves": candidates})


def _transition_result(issue_key: str, move: dict[str, Any], before: dict[str, Any],
                       after: dict[str, Any], updated_at: Any,
                       comment_id: int | None) -> dict[str, Any]:
    return {
        "key": issue_key,
        "transition": {"id": move["id"], "name": move["name"]},
        "from_status": before["status"],
        "from_category": before["status_category"],
        "to_status": after["status"],
        "to_category": after["status_category"],
        "resolved_at": after["resolved_at"],
        "version": after["version"],
        "updated_at": jsonable(updated_at),
        "comment_id": comment_id,
    }


async def _move_at_source(ctx: ToolContext, mirror: Mirror, status: str,
                          comment: str | None) -> tuple[Item, Comment | None]:
    """The move, then the comment, in one conversation with the source."""
    ref = mirror.ref

    async def request(adapter: Adapter) -> tuple[Item, Comment | None]:
        moved = await adapter.transition(ref, status)
        if comment is None:
            return moved, None
        try:
            return moved, await adapter.comment(ref, comment)
        except SourceError as exc:
            # The move stands at the source (the next sync brings it); say so.
            raise SourceError(exc.kind, f"{ref.key} moved to {status!r}, but the comment was "
                                        f"not added: {exc}", status=exc.status,
                              ambiguous=True) from None

    return await ask(ctx, mirror, request)


async def transition_issue(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    issue_key = args["issue_key"].upper()
    status = args["status"].strip() if "status" in args else None
    transition_id = str(args["transition_id"]).strip() if "transition_id" in args else None
    if (status is None) == (transition_id is None):
        raise invalid("/status", "give either status (the target status name) or "
                                 "transition_id, not both")
    comment = comment_body(args["comment"], "/comment") if args.get("comment") else None
    try:
        return await _transition(ctx, args, issue_key, status, transition_id, comment)
    except _Ambiguous as ambiguous:
        # Asked with no transaction open (its answer may take a person minutes), before
        # anything is written; the move then goes as if that status had been given.
        assert status is not None
        chosen = await _choose_status(ctx, issue_key, status, ambiguous)
    return await _transition(ctx, args, issue_key, chosen, None, comment)


async def _transition(ctx: ToolContext, args: dict[str, Any], issue_key: str,
                      status: str | None, transition_id: str | None,
                      comment: str | None) -> dict[str, Any]:
    expected = args.get("expected_version")
    queries = ctx.database.queries
    async with ctx.transaction(readonly=False) as conn:
        # The ids of the move and its comment before the item's lock: the lock order in
        # spiral_mcp.ids. Unused for a mirrored item (the source moves it first): a gap in this
        # tenant's own ids.
        first_id = await queries.take_work_ids(conn, tenant_id=ctx.tenant_id,
                                               count=2 if comment else 1)
        row = await lock_issue(conn, ctx, issue_key, expected)
        allowed = row_dicts(await queries.workflow_transitions_from(
            conn, project_key=row["project_key"], from_status=row["status"]))
        move = _pick(allowed, status=status, transition_id=transition_id)
        if isinstance(move, list):
            raise _Ambiguous(row["status"], move)  # rolls this transaction back
        if move is None:
            path = "/status" if status is not None else "/transition_id"
            asked = status if status is not None else f"transition {transition_id}"
            explanation = _allowed_text(row["status"], allowed)
            raise ServiceError(
                ErrorCode.VALIDATION_ERROR,
                f"{path}: {issue_key} cannot move to {asked!r}; {explanation}",
                details=[{"path": path, "message": explanation, "current_status": row["status"],
                          "allowed": allowed}],
            )
        before = {"status": row["status"], "status_category": row["status_category"],
                  "resolved_at": jsonable(row["resolved_at"]), "version": row["version"]}
        mirror = (await item_mirrors(conn, ctx, [issue_key])).get(issue_key)
        if mirror is None:
            moved = await queries.move_issue(
                conn, work_item_id=row["id"], expected_version=row["version"],
                status=move["to_status"], status_category=move["to_category"])
            if moved is None:  # compare-and-set lost; the row lock makes this a can't-happen
                raise conflict(issue_key, row["version"], row["version"] + 1)
            await queries.insert_issue_transition(
                conn, tenant_id=ctx.tenant_id, work_item_id=row["id"], from_status=row["status"],
                to_status=move["to_status"], from_category=row["status_category"],
                to_category=move["to_category"], actor=ctx.principal.user, id=first_id,
                transitioned_at=moved["updated_at"],
            )
            comment_id = None
            if comment:
                comment_row = await queries.insert_comment(
                    conn, tenant_id=ctx.tenant_id, work_item_id=row["id"],
                    author=ctx.principal.user, body=comment, id=first_id + 1)
                comment_id = comment_row["id"]
            after = {"status": move["to_status"], "status_category": move["to_category"],
                     "resolved_at": jsonable(moved["resolved_at"]), "version": moved["version"]}
            result = _transition_result(issue_key, move, before, after, moved["updated_at"],
                                        comment_id)
            await ctx.commit_write(conn, arguments=args, result=result, before=before,
                                   after=after)
            return result
    # A mirrored item: checked against the workflow (the source's, as synced) above; the source
    # moves it with no transaction open, and its answer is what the store keeps.
    item, noted = await _move_at_source(ctx, mirror, move["to_status"], comment)
    async with ctx.transaction(readonly=False) as conn:
        await store_item(conn, ctx, mirror, item)
        comment_id = (await store_comment(conn, ctx, issue_key, noted))["id"] if noted else None
        stored = await queries.get_issue(conn, issue_key=issue_key)
        after = {"status": stored["status"], "status_category": stored["status_category"],
                 "resolved_at": jsonable(stored["resolved_at"]), "version": stored["version"]}
        result = _transition_result(issue_key, move, before, after, stored["updated_at"],
                                    comment_id)
        await ctx.commit_write(conn, arguments=args, result=result, before=before, after=after)
    return result


async def list_transitions(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    issue_key = args["issue_key"].upper()
    queries = ctx.database.queries
    async with ctx.transaction(readonly=True) as conn:
        row = await queries.issue_workflow_state(conn, issue_key=issue_key)
        if row is None:
            raise not_found(issue_key)
        allowed = row_dicts(await queries.workflow_transitions_from(
            conn, project_key=row["project_key"], from_status=row["status"]))
    return {"key": row["key"], "project_key": row["project_key"], "status": row["status"],
            "status_category": row["status_category"], "version": row["version"],
            "transitions": allowed}


async def list_projects(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    async with ctx.transaction(readonly=True) as conn:
        rows = await ctx.database.queries.projects_overview(conn)
    projects = []
    for row in rows:
        counts = {category: row["counts"].get(category, 0) for category in CATEGORIES}
        projects.append({
            "key": row["key"], "name": row["name"], "description": row["description"],
            "lead": row["lead"], "issue_types": list(row["issue_types"]),
            "statuses": row["statuses"], "issue_count": sum(counts.values()),
            "counts_by_category": counts,
        })
    return {"projects": projects}


TOOLS = (
    Tool(
        name="jira_transition_issue",
        title="Move a work item to another status",
        description=(
            "Move a work item to a status its workflow allows from the current one (else the "
            "error lists them; a status that could mean several moves is asked of the user). "
            "Entering done or cancelled sets resolved_at; leaving clears it."
        ),
        handler=transition_issue,
        changes=frozenset({WORK_ITEMS, ITEM_MOVES, COMMENTS}),
        scope="write",
        call_class="write",
        read_only=False,
        destructive=True,   # it overwrites the status and resolution
        idempotent=False,   # a workflow may loop back (e.g. Reopen), so repeats can move again
        aliases=("jira.transition_issue",),
    ),
    Tool(
        name="jira_list_transitions",
        title="List a work item's possible status moves",
        description=(
            "A work item's status and category, and the moves its workflow allows: transition id, "
            "name, target status and category."
        ),
        handler=list_transitions,
        scope="read",
        call_class="read",
        aliases=("jira.list_transitions",),
    ),
    Tool(
        name="jira_list_projects",
        title="List projects",
        description=(
            "Your projects: key, name, lead, issue types, workflow statuses (category, initial) "
            "and item counts per status category."
        ),
        handler=list_projects,
        scope="read",
        call_class="read",
        aliases=("jira.list_projects",),
    ),
)
