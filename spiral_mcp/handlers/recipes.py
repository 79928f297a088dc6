"""The prompts the product ships: the recipes people ask an agent for, each a message that says
which tools and reports to call, with which arguments, and what to look at in what comes back.

Every recipe takes a project key of the caller's workspace (completion offers the workspace's
keys, read in the caller's tenant transaction), and checks it there: a key the workspace does not
have is an invalid argument, whoever else may have it.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ErrorCode, ServiceError
from .context import ToolContext
from .prompts import Prompt, PromptArgument

__all__ = ["shipped_prompts"]

_PROJECT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,19}")


def _invalid(argument: str, message: str) -> ServiceError:
    return ServiceError(ErrorCode.VALIDATION_ERROR, f"{argument}: {message}",
                        details=[{"path": f"/{argument}", "message": message}])


async def _projects(ctx: ToolContext) -> list[str]:
    async with ctx.transaction(readonly=True) as conn:
        row = await ctx.database.queries.jql_known_values(conn, statuses=[])
    return list(row["projects"])


async def _complete_project(ctx: ToolContext, typed: str) -> list[str]:
    return [key for key in await _projects(ctx) if key.startswith(typed.strip().upper())]


async def _project(ctx: ToolContext, args: dict[str, str]) -> str:
    key = args["project_key"].strip().upper()
    if not _PROJECT.fullmatch(key):
        raise _invalid("project_key", f"{args['project_key']!r} is not a project key (e.g. WEB)")
    projects = await _projects(ctx)
    if key not in projects:
        raise _invalid("project_key", f"no project {key} in your workspace; its projects: "
                                      + (", ".join(projects[:50]) or "none"))
    return key


def _days(args: dict[str, str], default: int) -> int:
    raw = args.get("days", str(default)).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 365:
        raise _invalid("days", f"{raw!r} is not a number of days from 1 to 365")
    return int(raw)


def _say(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": {"type": "text", "text": text}}]


async def _weekly_status(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    key = await _project(ctx, args)
    return _say(f"""Write the weekly status report of project {key}.

1. Call sql_get_project_metrics with project_key={key}, days=7: the "period" row gives this \
week's created, resolved (throughput) and work in progress; "change" compares it with the week \
before; the "day" rows show when work moved.
2. Call jira_search with jql `project = {key} AND resolved >= -7d ORDER BY resolved DESC`: what \
was finished.
3. Call jira_search with jql `project = {key} AND statusCategory = blocked`: what is stuck, and \
jql `project = {key} AND due < 7d AND statusCategory NOT IN (done, cancelled) ORDER BY due`: \
what is due or overdue.
4. Call jira_search with jql `project = {key} AND statusCategory IN (in_progress, in_review) \
ORDER BY updated ASC`: work in progress, the least recently touched first.

Report, in this order: a one-line summary; done this week (the notable items, by key); in \
progress; blocked and at risk (each with why, from jira_get_issue's comments when unclear); due \
next week; the figures (created, resolved, work in progress, lead time p50/p90) against last \
week. Say what changed and what needs a decision. Do not change any item. Figures' definitions: \
resource spiral://reports.""")


async def _backlog_triage(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    key = await _project(ctx, args)
    return _say(f"""Triage the backlog of project {key}.

1. Call jira_list_projects to see {key}'s issue types and workflow statuses.
2. Call jira_search with jql `project = {key} AND statusCategory = todo ORDER BY created ASC`, \
fields key, summary, type, priority, assignee, labels, created_at, updated_at (page with \
next_cursor until you have them all, or the first 200).
3. For items whose summary is unclear, call jira_get_issue (include_comments).
4. Look for likely duplicates with sql_search_issues_by_text on the summaries that sound alike \
(project_keys=["{key}"]).

Sort the backlog into: ready (clear, sized, prioritised), needs detail (say what is missing), \
duplicates (which of a pair to keep), stale (untouched for 90 days or more: close or revive?), \
and unprioritised (priority none: propose one, with the reason). Flag critical and high items \
without an assignee. Propose the changes as a list (jira_update_issue fields, \
jira_link_issues duplicates, jira_transition_issue to cancel) and make none of them before the \
user agrees.""")


async def _flow_review(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    key = await _project(ctx, args)
    days = _days(args, 30)
    return _say(f"""Review the flow of project {key} over the last {days} days.

1. Call sql_lead_time_metrics with project_key={key}, days={days}: lead time (created to \
resolved) and cycle time (started to resolved) percentiles p50/p75/p90/p95, and throughput, for \
the period and per ISO week.
2. Call sql_get_project_metrics with project_key={key}, days={days}: per day, created, resolved \
and work in progress at the day's end, and the change against the previous {days} days.
3. Call jira_search with jql `project = {key} AND statusCategory IN (in_progress, blocked, \
in_review) ORDER BY updated ASC`: today's work in progress, oldest first.

Look at:
- lead time against cycle time: a wide gap means items wait long before anyone starts them;
- p90 against p50: a p90 far above the p50 means delivery is unpredictable; name the items \
behind the long tail (sql_get_issue_history shows where each waited);
- throughput week by week: steady, rising or falling, and created against resolved (is the \
backlog growing?);
- work in progress against throughput: by Little's law, average cycle time is about work in \
progress divided by throughput; rising work in progress with flat throughput means too much \
started at once;
- items blocked or in review for long, and who holds them (sql_get_user_workload for an \
assignee with many).

Give the figures with their trend, the two or three findings that matter most, and a concrete \
suggestion for each. Definitions of every figure: resource spiral://reports. Do not change any \
item.""")


_PROJECT_ARGUMENT = PromptArgument(name="project_key", description="The project's key, e.g. WEB",
                                   complete=_complete_project)


def shipped_prompts() -> list[Prompt]:
    return [
        Prompt(name="weekly_status_report", title="Weekly status report",
               description="A project's week: finished, in progress, blocked, due, and its "
                           "flow figures against last week.",
               render=_weekly_status, arguments=(_PROJECT_ARGUMENT,), icon="prompt"),
        Prompt(name="backlog_triage", title="Backlog triage",
               description="Sort a project's backlog into ready, needs detail, duplicates, "
                           "stale and unprioritised, and propose the changes.",
               render=_backlog_triage, arguments=(_PROJECT_ARGUMENT,), icon="prompt"),
        Prompt(name="flow_metrics_review", title="Flow metrics review",
               description="Lead and cycle time, throughput and work in progress of a project, "
                           "with what to look at in them.",
               render=_flow_review, icon="prompt", arguments=(
                   _PROJECT_ARGUMENT,
                   PromptArgument(name="days", description="The period in days, 1-365 "
                                  "(default 30)", required=False))),
    ]
