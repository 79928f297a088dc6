"""Jira Cloud (REST v3): enhanced JQL search, changelog, comments, normalised to the store.

Wire shapes followed (developer.atlassian.com, REST v3):

* ``GET /rest/api/3/myself``: who the token belongs to, and ``timeZone``: JQL dates are read in
  the user's time zone, so the cursor is written in it.
* ``GET /rest/api/3/status``: every status with its ``statusCategory.key``, to categorise the
  historical statuses in changelogs.
* ``POST /rest/api/3/search/jql`` with ``{jql, fields, expand: "changelog", maxResults,
  nextPageToken}``; answers ``{issues, nextPageToken, isLast}``.
* ``GET /rest/api/3/issue/{id}/comment`` and ``/changelog`` (``startAt``/``maxResults``/``total``)
  when the search answer holds only the first part of an issue's comments or history.

Mappings (defaults; an instance's ``status_categories`` config overrides by status name):

* status category: ``statusCategory.key`` new → todo, indeterminate → in_progress, done → done;
  status names Blocked/On Hold → blocked, In Review/Review/Code Review → in_review, and Won't Do,
  Cancelled, Rejected, Declined (as a status or a done resolution) → cancelled.
* priority: Highest/Blocker/Critical → critical, High/Major → high, Medium → medium,
  Low/Minor → low, Lowest/Trivial → none; no priority → none; an unknown name → medium.
* type: Epic, Story, Task, Bug; Sub-task (or any subtask type) → subtask; New Feature,
  Feature, Improvement → feature; anything else → task.
* key: JIRAKEY-12 → LOCALKEY-12 through the project map; source_id is Jira's issue id, which
  survives a key change.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..handlers.adf import AdfError, adf_to_markdown
from .base import Adapter, Comment, HttpClient, Item, Page, SourceError, Transition

__all__ = ["ADAPTER", "JiraAdapter", "category_for", "priority_for", "type_for"]

PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,19}$")
FIELDS = ("summary", "description", "issuetype", "status", "priority", "assignee", "reporter",
          "labels", "parent", "created", "updated", "resolutiondate", "resolution", "duedate",
          "comment")

_KEY_CATEGORY = {"new": "todo", "indeterminate": "in_progress", "done": "done",
                 "undefined": "todo"}
_NAME_CATEGORY = {
    "blocked": "blocked", "on hold": "blocked", "impeded": "blocked",
    "in review": "in_review", "review": "in_review", "code review": "in_review",
    "won't do": "cancelled", "wont do": "cancelled", "won't fix": "cancelled",
    "cancelled": "cancelled", "canceled": "cancelled", "rejected": "cancelled",
    "declined": "cancelled",
}
_PRIORITY = {"highest": "critical", "blocker": "critical", "critical": "critical",
             "high": "high", "major": "high", "medium": "medium", "low": "low", "minor": "low",
             "lowest": "none", "trivial": "none"}
_TYPE = {"epic": "epic", "story": "story", "task": "task", "bug": "bug", "sub-task": "subtask",
         "subtask": "subtask", "new feature": "feature", "feature": "feature",
         "improvement": "feature"}


def category_for(name: str, category_key: str | None, *, resolution: str | None = None,
                 overrides: Mapping[str, str] | None = None) -> str:
    """The store's status category of a Jira status."""
    lowered = name.strip().lower()
    if overrides and lowered in overrides:
        return overrides[lowered]
    if lowered in _NAME_CATEGORY:
        return _NAME_CATEGORY[lowered]
    category = _KEY_CATEGORY.get(category_key or "", "todo")
    if category == "done" and resolution and _NAME_CATEGORY.get(resolution.lower()) == "cancelled":
        return "cancelled"
    return category


def priority_for(name: str | None) -> str:
    return "none" if not name else _PRIORITY.get(name.strip().lower(), "medium")


def type_for(name: str | None, *, subtask: bool = False) -> str:
    return "subtask" if subtask else _TYPE.get((name or "").strip().lower(), "task")


def _person(user: Mapping[str, Any] | None) -> str | None:
    # Cloud hides emailAddress unless the user allows it; the display name is the fallback.
    if not user:
        return None
    return user.get("emailAddress") or user.get("displayName") or user.get("accountId")


def _when(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _text_of(node: Any) -> str:
    if isinstance(node, Mapping):
        return node.get("text", "") + "".join(_text_of(c) for c in node.get("content", []))
    return ""


def _markdown(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, str):  # REST v2 answers and some Server fields are plain text
        return body
    try:
        return adf_to_markdown(body)
    except AdfError:
        # Never drop what the author wrote: fall back to the bare text.
        return _text_of(body)


class JiraAdapter(Adapter):
    """One Jira Cloud site, the projects in ``projects`` (Jira key → local key)."""

    kind = "jira"
    ref_pattern = PROJECT_KEY
    ref_example = "ABC"

    @classmethod
    def from_instance(cls, base_url: str, credentials: Mapping[str, str],
                      config: Mapping[str, Any], **client_options: Any) -> JiraAdapter:
        return cls(base_url, email=credentials.get("email"), token=credentials["token"],
                   projects=config.get("projects", {}),
                   status_categories=config.get("status_categories"), **client_options)

    def __init__(
        self, base_url: str, *, email: str | None, token: str, projects: Mapping[str, str],
        status_categories: Mapping[str, str] | None = None, page_size: int = 100,
        **client_options: Any,
    ) -> None:
        if bad := [k for k in [*projects, *projects.values()] if not PROJECT_KEY.match(k)]:
            # Keys go into JQL; the pattern is what keeps them from being anything but a key.
            raise SourceError("config", f"not a project key: {', '.join(bad)}")
        self.projects = dict(projects)
        self._overrides = {k.lower(): v for k, v in (status_categories or {}).items()}
        self._page_size = page_size
        if email is None:
            # Server / Data Center: a personal access token, as a bearer token.
            authorization = f"Bearer {token}"
        else:
            # Cloud: email and API token. Built by hand: aiohttp deprecates BasicAuth and its
            # replacement is newer than our floor.
            authorization = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
        self._http = HttpClient(base_url, headers={"Authorization": authorization},
                                **client_options)
        self._status_by_id: dict[str, str] = {}
        self._status_by_name: dict[str, str] = {}

    @property
    def requests(self) -> int:
        return self._http.requests

    async def close(self) -> None:
        await self._http.close()

    async def check(self) -> str:
        me = await self._http.request("GET", "/rest/api/3/myself")
        for jira_key in self.projects:
            try:
                await self._http.request("GET", f"/rest/api/3/project/{jira_key}")
            except SourceError as exc:
                if exc.kind == "not_found":
                    raise SourceError("not_found", f"Jira project {jira_key} does not exist or "
                                      "is not visible to this account", status=404) from None
                raise
        return _person(me) or "unknown user"

    async def _time_zone(self) -> ZoneInfo:
        me = await self._http.request("GET", "/rest/api/3/myself")
        try:
            return ZoneInfo(me.get("timeZone") or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    async def _load_statuses(self) -> None:
        for status in await self._http.request("GET", "/rest/api/3/status") or []:
            key = (status.get("statusCategory") or {}).get("key")
            category = category_for(status["name"], key, overrides=self._overrides)
            self._status_by_id[str(status["id"])] = category
            self._status_by_name[status["name"].lower()] = category

    def jql(self, *, since: datetime | None, zone: ZoneInfo) -> str:
        projects = ", ".join(f'"{k}"' for k in self.projects)
        where = f"project in ({projects})"
        if since is not None:
            # JQL dates have minute precision in the user's zone: start a minute early, so an
            # item updated in the cursor's own minute is fetched again (upserts make it harmless).
            local = since.astimezone(zone) - timedelta(minutes=1)
            where += f' AND updated >= "{local:%Y-%m-%d %H:%M}"'
        return f"{where} ORDER BY updated ASC, key ASC"

    async def pages(self, *, since: datetime | None) -> AsyncIterator[Page]:
        zone = await self._time_zone()
        await self._load_statuses()
        body: dict[str, Any] = {"jql": self.jql(since=since, zone=zone), "fields": list(FIELDS),
                                "expand": "changelog", "maxResults": self._page_size}
        while True:
            answer = await self._http.request("POST", "/rest/api/3/search/jql", json=body,
                                              idempotent=True)
            items = [item for issue in answer.get("issues", [])
                     if (item := await self._item(issue)) is not None]
            yield Page(items)
            token = answer.get("nextPageToken")
            if answer.get("isLast", token is None) or not token:
                return
            body["nextPageToken"] = token

    def _local_key(self, jira_key: str | None) -> tuple[str, str, int] | None:
        if not jira_key or "-" not in jira_key:
            return None
        project, _, number = jira_key.rpartition("-")
        local = self.projects.get(project)
        if local is None or not number.isdigit():
            return None
        return f"{local}-{int(number)}", local, int(number)

    def _category(self, status_id: str | None, name: str) -> str:
        return (self._status_by_id.get(str(status_id)) or self._status_by_name.get(name.lower())
                or category_for(name, None, overrides=self._overrides))

    async def _rest(self, path: str, values_key: str, first: Mapping[str, Any]) -> list[Any]:
        """All entries of a startAt-paginated list whose first page came inline."""
        values = list(first.get(values_key, []))
        total = first.get("total", len(values))
        while len(values) < total:
            answer = await self._http.request(
                "GET", path, params={"startAt": len(values), "maxResults": 100})
            more = answer.get(values_key) or []
            if not more:
                break
            values.extend(more)
        return values

    async def _item(self, issue: Mapping[str, Any]) -> Item | None:
        mapped = self._local_key(issue.get("key"))
        if mapped is None:
            return None  # moved to a project we do not mirror
        key, project_key, number = mapped
        f = issue["fields"]
        status = f["status"]
        resolution = (f.get("resolution") or {}).get("name")
        category = category_for(status["name"], (status.get("statusCategory") or {}).get("key"),
                                resolution=resolution, overrides=self._overrides)
        parent = self._local_key((f.get("parent") or {}).get("key"))
        issuetype = f.get("issuetype") or {}
        comments_raw = await self._rest(f"/rest/api/3/issue/{issue['id']}/comment", "comments",
                                        f.get("comment") or {})
        histories = await self._rest(f"/rest/api/3/issue/{issue['id']}/changelog", "values",
                                     {"values": (issue.get("changelog") or {}).get("histories", []),
                                      "total": (issue.get("changelog") or {}).get("total", 0)})
        due = f.get("duedate")
        return Item(
            source_id=str(issue["id"]), key=key, project_key=project_key, number=number,
            title=(f.get("summary") or key)[:1000], description=_markdown(f.get("description")),
            type=type_for(issuetype.get("name"), subtask=bool(issuetype.get("subtask"))),
            status=status["name"][:100], status_category=category,
            priority=priority_for((f.get("priority") or {}).get("name")),
            assignee=_person(f.get("assignee")), reporter=_person(f.get("reporter")),
            labels=list(f.get("labels") or []), parent_key=parent[0] if parent else None,
            created=_when(f["created"]), updated=_when(f["updated"]),
            resolved=(_when(f.get("resolutiondate"))
                      if category in ("done", "cancelled") else None),
            due=datetime.combine(date.fromisoformat(due), datetime.min.time(), UTC)
            if due else None,
            raw=issue,
            comments=[c for c in map(self._comment, comments_raw) if c is not None],
            transitions=[t for h in histories for t in self._transitions(h)],
        )

    def _comment(self, raw: Mapping[str, Any]) -> Comment | None:
        body = (_markdown(raw.get("body")) or "").strip()[:100_000]
        if not body:
            return None  # the store requires a body; an empty Jira comment says nothing
        created = _when(raw["created"])
        return Comment(str(raw["id"]), _person(raw.get("author")), body, created,
                       _when(raw.get("updated")) or created)

    def _transitions(self, history: Mapping[str, Any]) -> list[Transition]:
        at = _when(history["created"])
        return [
            Transition(
                from_status=change.get("fromString"), to_status=change["toString"],
                from_category=self._category(change.get("from"), change["fromString"])
                if change.get("fromString") else None,
                to_category=self._category(change.get("to"), change["toString"]),
                actor=_person(history.get("author")), at=at,
            )
            for change in history.get("items", [])
            if change.get("field") == "status" and change.get("toString")
        ]


ADAPTER = JiraAdapter
