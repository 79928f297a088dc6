"""Jira Cloud (REST v3) and Server/Data Center (REST v2), read and written, normalised to the store.

One class speaks both: an instance with an ``email`` is Cloud (basic auth, REST v3, Atlassian
Document Format bodies, ``POST search/jql`` with ``nextPageToken``); without one it is Server or
Data Center (a personal access token as a bearer token, REST v2, plain-text wiki bodies, ``GET
search`` with ``startAt``/``maxResults``/``total``), which has no v3. Every other path is the same
under ``/rest/api/{3,2}``.

Wire shapes followed (developer.atlassian.com):

* ``GET myself``: who the token belongs to, and ``timeZone``: JQL dates are read in the user's
  time zone, so the cursor is written in it.
* ``GET status``: every status with its ``statusCategory.key``, to categorise the historical
  statuses in changelogs.
* Cloud: ``POST search/jql`` with ``{jql, fields, expand: "changelog", maxResults,
  nextPageToken}``; answers ``{issues, nextPageToken, isLast}``. Server: ``GET search?jql=&fields=
  &expand=changelog&startAt=&maxResults=``; answers ``{startAt, maxResults, total, issues}``.
  ``nextPageToken`` is left out on the last page, and a page may hold fewer issues than asked.
  ``startAt`` is a position in a result that moves when an issue changes during the sync, and
  Atlassian does not document ``nextPageToken`` as a snapshot, so it may be one too: both
  searches are keyset-paginated on ``updated`` (see :meth:`JiraAdapter._search_server` and
  :meth:`JiraAdapter._search_cloud`).
* ``GET issue/{id}/comment`` and ``/changelog`` (``startAt``/``maxResults``/``total``) when the
  search answer holds only the first part of an issue's comments or history (Server answers
  the whole changelog inline).
* ``GET project/{key}/statuses``: per issue type, the project's statuses, for :meth:`workflow`.
* Writes: ``POST issue`` ``{fields}`` (→ ``{id, key}``), ``PUT issue/{id}`` ``{fields}``, ``GET``
  and ``POST issue/{id}/transitions`` (``{transitions: [{id, name, to: {name}}]}``, then
  ``{transition: {id}}``), ``POST issue/{id}/comment`` ``{body}``, ``POST issueLink`` ``{type:
  {name}, outwardIssue: {key}, inwardIssue: {key}}`` where the outward issue is the one the link
  reads from ("outward blocks inward"); each write is read back with ``GET issue/{id}?expand=
  changelog``. ``GET user/search`` (Cloud ``query``, Server ``username``) finds an assignee. A 400
  (``{"errorMessages": [...], "errors": {field: message}}``) is a SourceError of kind "refused".

Mappings (defaults; an instance's ``status_categories`` config overrides by status name):

* status category: ``statusCategory.key`` new → todo, indeterminate → in_progress, done → done;
  status names Blocked/On Hold → blocked, In Review/Review/Code Review → in_review, and Won't Do,
  Cancelled, Rejected, Declined (as a status or a done resolution) → cancelled.
* priority: Highest/Blocker/Critical → critical, High/Major → high, Medium → medium,
  Low/Minor → low, Lowest/Trivial → none; no priority → none; an unknown name → medium. Written
  back as Jira's default scheme's names: Highest, High, Medium, Low, Lowest.
* type: Epic, Story, Task, Bug; Sub-task (or any subtask type) → subtask; New Feature,
  Feature, Improvement → feature; anything else → task. Written back as Epic, Story, Task, Bug,
  Sub-task, New Feature.
* links: Blocks → blocks, Relates → relates, Duplicate → duplicates, Cloners → clones; other link
  types, and links to projects we do not mirror, are not mirrored.
* key: JIRAKEY-12 → LOCALKEY-12 through the project map; source_id is Jira's issue id, which
  survives a key change.

Workflow. Jira's REST gives a project's statuses but no project-wide transition graph that a
non-admin can read (workflow schemes differ per issue type, and team-managed projects use global
transitions: any status to any other). So :meth:`workflow` offers every move between two statuses
of the project (id ``<from status id>-><to status id>``, named after the target, as global
transitions are), and :meth:`transition` stays faithful by asking Jira for the issue's real
transitions and refusing a target Jira does not offer. The initial status is the first status of
Jira's "new" category (where Jira's default workflows start an issue), else the first status.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..handlers.adf import AdfError, adf_to_markdown, markdown_to_adf
from ..priorities import priority_of
from .base import (
    CATEGORIES,
    Adapter,
    Comment,
    Draft,
    HttpClient,
    Item,
    Link,
    Page,
    Ref,
    SourceError,
    Transition,
    Workflow,
    writes,
)

__all__ = ["ADAPTER", "JiraAdapter", "category_for", "priority_for", "type_for"]

PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,19}$")
FIELDS = ("summary", "description", "issuetype", "status", "priority", "assignee", "reporter",
          "labels", "parent", "created", "updated", "resolutiondate", "resolution", "duedate",
          "comment", "issuelinks")

_KEY_CATEGORY = {"new": "todo", "indeterminate": "in_progress", "done": "done",
                 "undefined": "todo"}
_NAME_CATEGORY = {
    "blocked": "blocked", "on hold": "blocked", "impeded": "blocked",
    "in review": "in_review", "review": "in_review", "code review": "in_review",
    "won't do": "cancelled", "wont do": "cancelled", "won't fix": "cancelled",
    "cancelled": "cancelled", "canceled": "cancelled", "rejected": "cancelled",
    "declined": "cancelled",
}
_TYPE = {"epic": "epic", "story": "story", "task": "task", "bug": "bug", "sub-task": "subtask",
         "subtask": "subtask", "new feature": "feature", "feature": "feature",
         "improvement": "feature"}
# The store's values as Jira's default schemes name them, for writes.
_PRIORITY_NAME = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low",
                  "none": "Lowest"}
_TYPE_NAME = {"epic": "Epic", "story": "Story", "task": "Task", "bug": "Bug",
              "subtask": "Sub-task", "feature": "New Feature"}
_LINK_TYPE = {"Blocks": "blocks", "Relates": "relates", "Duplicate": "duplicates",
              "Cloners": "clones"}
_LINK_NAME = {store: jira for jira, store in _LINK_TYPE.items()}
# Readings of a minute that holds more than a page, at most (see JiraAdapter._crowded_minute).
_MINUTE_READINGS = 4
# Issues a changelog/bulkfetch may name (Jira Cloud's limit).
_BULK_ISSUES = 1000


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
    return "none" if not name else priority_of(name) or "medium"


def type_for(name: str | None, *, subtask: bool = False) -> str:
    return "subtask" if subtask else _TYPE.get((name or "").strip().lower(), "task")


def _person(user: Mapping[str, Any] | None) -> str | None:
    # Cloud hides emailAddress unless the user allows it; the display name is the fallback.
    if not user:
        return None
    return user.get("emailAddress") or user.get("displayName") or user.get("accountId")


def _when(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _first_minute(since: datetime, zone: ZoneInfo) -> datetime:
    """Where a search from ``since`` starts: JQL dates have minute precision in the user's zone;
    a minute early, so an item updated in the cursor's own minute is fetched again (upserts make
    it harmless)."""
    return since.astimezone(zone).replace(second=0, microsecond=0) - timedelta(minutes=1)


def _version(issue: Mapping[str, Any]) -> tuple[str, str]:
    return str(issue["id"]), issue["fields"]["updated"]


def _minute(issue: Mapping[str, Any]) -> datetime:
    """The minute ``issue`` was updated in, the finest step of JQL's ``updated``. In UTC: every
    zone is whole minutes off it, and a wall clock repeats an hour when summer time ends."""
    return _when(issue["fields"]["updated"]).astimezone(UTC).replace(second=0, microsecond=0)


def _unseen(issues: list[Any], seen: set[tuple[str, str]]) -> list[Any]:
    """The issues whose version is not in ``seen``, which then holds them."""
    new = [issue for issue in issues if _version(issue) not in seen]
    seen.update(map(_version, new))
    return new


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
    """One Jira site, the projects in ``projects`` (Jira key → local key)."""

    kind = "jira"
    overrides = {"status_categories": CATEGORIES}
    ref_pattern = PROJECT_KEY
    ref_example = "ABC"
    default_rate = 5.0
    rate_basis = ("Atlassian publishes no fixed limit for API tokens (Cloud's burst limits per "
                  "endpoint are unpublished, Data Center's are its administrator's): kept low")

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
        self._cloud = email is not None
        if email is None:
            # Server / Data Center: a personal access token, as a bearer token; REST v2 only.
            authorization = f"Bearer {token}"
            self._api = "/rest/api/2"
        else:
            # Cloud: email and API token. Built by hand: aiohttp deprecates BasicAuth and its
            # replacement is newer than our floor.
            authorization = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
            self._api = "/rest/api/3"
        self._http = HttpClient(base_url, headers={"Authorization": authorization},
                                **{"rate": self.default_rate, **client_options})
        self._status_by_id: dict[str, str] = {}
        self._status_by_name: dict[str, str] = {}

    async def check(self) -> str:
        me = await self._http.request("GET", f"{self._api}/myself")
        for jira_key in self.projects:
            try:
                await self._http.request("GET", f"{self._api}/project/{jira_key}")
            except SourceError as exc:
                if exc.kind == "not_found":
                    raise SourceError("not_found", f"Jira project {jira_key} does not exist or "
                                      "is not visible to this account", status=404) from None
                raise
        return _person(me) or "unknown user"

    async def _time_zone(self) -> ZoneInfo:
        me = await self._http.request("GET", f"{self._api}/myself")
        try:
            return ZoneInfo(me.get("timeZone") or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    async def _load_statuses(self) -> None:
        for status in await self._http.request("GET", f"{self._api}/status") or []:
            key = (status.get("statusCategory") or {}).get("key")
            category = category_for(status["name"], key, overrides=self._overrides)
            self._status_by_id[str(status["id"])] = category
            self._status_by_name[status["name"].lower()] = category

    def jql(self, *, start: datetime | None) -> str:
        """The search of the mirrored projects updated from the minute ``start`` on (a time in
        the user's zone, see :func:`_first_minute`), oldest update first."""
        projects = ", ".join(f'"{k}"' for k in self.projects)
        where = f"project in ({projects})"
        if start is not None:
            where += f' AND updated >= "{start:%Y-%m-%d %H:%M}"'
        return f"{where} ORDER BY updated ASC, key ASC"

    async def pages(self, *, since: datetime | None) -> AsyncGenerator[Page, None]:
        zone = await self._time_zone()
        await self._load_statuses()
        search = self._search_cloud if self._cloud else self._search_server
        async for issues in search(since, zone):
            histories = await self._histories(issues)
            yield Page([item for issue in issues
                        if (item := await self._item(issue, histories)) is not None])

    async def _histories(self, issues: list[Any]) -> dict[str, list[Any]]:
        """The whole status history of each issue whose changelog came cut short (Cloud's
        search answers 40 histories at most), by issue id; the others' came whole.

        Cloud: one ``POST changelog/bulkfetch`` for up to 1,000 issues, status changes only,
        paged by ``nextPageToken``, instead of a ``GET issue/{id}/changelog`` per issue (which
        Server/Data Center, whose search answers the whole changelog, keeps for an exception).
        An issue the answer leaves out (deleted meanwhile) keeps what came with it."""
        logs = {str(issue["id"]): issue.get("changelog") or {} for issue in issues}
        short = [issue_id for issue_id, log in logs.items()
                 if log.get("total", 0) > len(log.get("histories") or [])]
        if not self._cloud:
            return {issue_id: await self._rest(
                f"{self._api}/issue/{issue_id}/changelog", "values",
                {"values": logs[issue_id].get("histories") or [],
                 "total": logs[issue_id]["total"]}) for issue_id in short}
        found: dict[str, list[Any]] = {}
        for start in range(0, len(short), _BULK_ISSUES):
            body: dict[str, Any] = {"issueIdsOrKeys": short[start:start + _BULK_ISSUES],
                                    "fieldIds": ["status"], "maxResults": 1000}
            while True:
                answer = await self._http.request("POST", f"{self._api}/changelog/bulkfetch",
                                                  json=body, idempotent=True)
                for log in answer.get("issueChangeLogs") or []:
                    found.setdefault(str(log["issueId"]), []).extend(
                        log.get("changeHistories") or [])
                following = answer.get("nextPageToken")
                if not following:
                    break
                if following == body.get("nextPageToken"):
                    raise SourceError("bad_response", f"{self._http.base_url} answered a "
                                      "changelog page with the token that asked for it")
                body["nextPageToken"] = following
        return found

    async def _search_cloud(self, since: datetime | None,
                            zone: ZoneInfo) -> AsyncIterator[list[Any]]:
        """Issues updated from ``since`` on, oldest update first, each version once.

        ``nextPageToken`` is not documented to walk a snapshot. If it is a place in a result
        computed afresh, as ``startAt`` is, an issue changed during the sync leaves its place for
        the end and the issue after a page boundary slips back onto the page already read, where
        a token would step over it. So each next page is a fresh search from the minute of the
        last issue read (JQL has no finer ``updated``), asking for as many more issues as there
        are versions read from that minute on, which it skips by (id, updated): a page of new
        issues stays one request. Only a page that ends in the minute it started from, which no
        fresh search can get past, is followed by its token (:meth:`_crowded_minute`).
        """
        start = _first_minute(since, zone).astimezone(UTC) if since is not None else None
        seen: set[tuple[str, str]] = set()  # versions read, updated from ``start`` on
        while True:
            body = self._cloud_search(start, zone, size=self._page_size + len(seen))
            issues, token = await self._cloud_page(body)
            if token is not None and start is not None and _minute(issues[-1]) <= start:
                async for new in self._crowded_minute(body, issues, token, seen):
                    yield new
                start += timedelta(minutes=1)  # the whole minute is read
            else:
                if new := _unseen(issues, seen):
                    yield new
                if token is None:
                    return
                start = _minute(issues[-1])  # strictly later: this loop always moves on
            seen = {version for version in seen if _when(version[1]) >= start}

    async def _crowded_minute(self, body: Mapping[str, Any], issues: list[Any],
                              token: str | None,
                              seen: set[tuple[str, str]]) -> AsyncIterator[list[Any]]:
        """The issues of the minute ``body`` searches from, which holds more than a page, not in
        ``seen``; ``issues`` is the first page and ``token`` leads to the next.

        The minute is followed by token to its end, then read again from a fresh search until a
        reading finds nothing new: a change during one reading can shift an issue past it, so
        one found again comes after later ones of the same minute. At most four readings, so a
        minute that keeps changing cannot hold the sync forever. A sync stopped meanwhile
        resumes from this minute: the cursor stays in it until it is done.
        """
        minute = _minute(issues[0])
        for reading in range(_MINUTE_READINGS):
            found = False
            while True:
                within = [issue for issue in issues if _minute(issue) <= minute]
                if new := _unseen(within, seen):
                    found = True
                    yield new
                if token is None or len(within) < len(issues):
                    break  # the minute is over: a fresh search reads on from the next
                issues, token = await self._cloud_page(body, token)
            if not found or reading == _MINUTE_READINGS - 1:
                return
            issues, token = await self._cloud_page(body)

    def _cloud_search(self, start: datetime | None, zone: ZoneInfo, *,
                      size: int) -> dict[str, Any]:
        local = start.astimezone(zone) if start is not None else None
        return {"jql": self.jql(start=local), "fields": list(FIELDS), "expand": "changelog",
                "maxResults": size}

    async def _cloud_page(self, body: Mapping[str, Any],
                          token: str | None = None) -> tuple[list[Any], str | None]:
        """A page of the Cloud search ``body`` (the first, or the one ``token`` leads to) and the
        token of the next, None after the last."""
        answer = await self._http.request(
            "POST", f"{self._api}/search/jql", idempotent=True,
            json={**body, "nextPageToken": token} if token else body)
        issues = answer.get("issues") or []
        following = answer.get("nextPageToken")
        if answer.get("isLast") or not following or not issues:
            return issues, None
        if following == token:
            # The same place again: following it would never end.
            raise SourceError("bad_response", f"{self._http.base_url} answered a search page "
                              "with the token that asked for it")
        return issues, following

    async def _search_server(self, since: datetime | None,
                             zone: ZoneInfo) -> AsyncIterator[list[Any]]:
        """Issues updated from ``since`` on, oldest update first, each version once.

        ``startAt`` counts places in a result that moves: an issue changed during the sync
        leaves its place for the end and every one after it moves a place earlier, so one would
        slip back across a page boundary unread. So the search is keyset-paginated: each page is
        asked from the minute of the last issue read (JQL has no finer ``updated``), with
        ``startAt`` skipping what this walk of that window has passed, less one: the page must
        start with the last issue read, else something behind it moved and the window is walked
        again from its start. Versions already read, by (id, updated), are not yielded twice.
        """
        start = _first_minute(since, zone) if since is not None else None
        walk: list[tuple[str, str]] = []  # (id, updated) passed in this window, in order
        seen: set[tuple[str, str]] = set()
        while True:
            at = max(len(walk) - 1, 0)
            answer = await self._http.request("GET", f"{self._api}/search", params={
                "jql": self.jql(start=start), "fields": ",".join(FIELDS),
                "expand": "changelog", "startAt": at,
                "maxResults": self._page_size + (1 if walk else 0)})
            issues = answer.get("issues") or []
            if walk and (not issues or _version(issues[0]) != walk[-1]):
                walk = []  # an issue behind our place moved: walk this window again
                continue
            fresh = issues[1:] if walk else issues
            walk += map(_version, fresh)
            new = [issue for issue in fresh if _version(issue) not in seen]
            seen.update(map(_version, new))
            if new:
                yield new
            if not fresh or at + len(issues) >= answer.get("total", 0):
                return
            ahead = _first_minute(_when(walk[-1][1]), zone)
            if start is None or ahead > start:
                # No older version can come again: keep what is in the new window.
                start = ahead
                walk = [v for v in walk if _when(v[1]) >= start]
                seen = {v for v in seen if _when(v[1]) >= start}

    # --- workflow and writes -----------------------------------------------------------------
    def _mirrored(self, project_ref: str) -> str:
        # The reference goes into a URL path; only a configured key may.
        if project_ref not in self.projects:
            raise SourceError("config", f"Jira project {project_ref!r} is not mirrored")
        return project_ref

    async def workflow(self, project_ref: str) -> Workflow:
        by_type = await self._http.request(
            "GET", f"{self._api}/project/{self._mirrored(project_ref)}/statuses")
        # Issue types share statuses; the union, by name as the store keys them (any case).
        found: dict[str, tuple[str, str, str | None]] = {}
        for issuetype in by_type or []:
            for status in issuetype.get("statuses") or []:
                key = (status.get("statusCategory") or {}).get("key")
                found.setdefault(status["name"].lower(), (status["name"][:100],
                                                          str(status["id"]), key))
        entries = list(found.values())
        if entries:
            # Jira's default workflows start an issue in a status of the "new" category.
            entries.insert(0, entries.pop(next((n for n, (_, _, key) in enumerate(entries)
                                                if key == "new"), 0)))
        statuses = [(name, category_for(name, key, overrides=self._overrides))
                    for name, _, key in entries]
        ids = {name: status_id for name, status_id, _ in entries}
        transitions = [(f"{ids[source]}->{ids[target]}", target, source, target)
                       for source, _ in statuses for target, _ in statuses if source != target]
        return Workflow(statuses, transitions)

    def _jira_key(self, ref: Ref) -> str:
        """The Jira key of a stored item: its source project and the number both keys share."""
        return f"{self._mirrored(ref.project_ref)}-{ref.key.rpartition('-')[2]}"

    def _issue_path(self, ref: Ref) -> str:
        # A stored source id goes into a URL path; Jira's are numbers, nothing else may pass.
        if not ref.source_id.isdigit():
            raise SourceError("config", f"not a Jira issue id: {ref.source_id!r}")
        return f"{self._api}/issue/{ref.source_id}"

    def _document(self, markdown: str) -> Any:
        # Server's v2 takes wiki text, which shows Markdown readably; Cloud's v3 takes ADF.
        return markdown_to_adf(markdown) if self._cloud else markdown

    async def _user(self, person: str) -> dict[str, str]:
        """Jira's reference to the user the store names (an email, display name or id)."""
        params = {"query": person} if self._cloud else {"username": person}
        wanted = person.strip().lower()
        for user in await self._http.request("GET", f"{self._api}/user/search",
                                             params=params) or []:
            names = {str(user.get(k) or "").lower() for k in ("emailAddress", "displayName",
                                                              "accountId", "name")}
            if wanted in names:
                return {"accountId": user["accountId"]} if self._cloud else {"name": user["name"]}
        raise SourceError("refused", f"no Jira user matches {person!r}")

    async def _fields(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name, value in changes.items():
            match name:
                case "title":
                    fields["summary"] = value
                case "description":
                    fields["description"] = None if value is None else self._document(value)
                case "type":
                    fields["issuetype"] = {"name": _TYPE_NAME[value]}
                case "priority":
                    fields["priority"] = {"name": _PRIORITY_NAME[value]}
                case "assignee":
                    fields["assignee"] = None if value is None else await self._user(value)
                case "labels":
                    fields["labels"] = list(value)
                case "due":
                    fields["duedate"] = None if value is None else value.isoformat()
                case "parent":
                    fields["parent"] = None if value is None else {"key": self._jira_key(value)}
                case _:
                    raise ValueError(f"Jira has no field for {name!r}")
        return fields

    async def _send(self, method: str, path: str, body: Any) -> Any:
        try:
            return await self._http.request(method, path, json=body)
        except SourceError as exc:
            if exc.status == 400:
                # Jira names the fields it refused: the request's fault, not the source's.
                raise SourceError("refused", str(exc), status=400) from None
            raise

    async def _read(self, issue_id: str) -> Item:
        if not self._status_by_id:
            await self._load_statuses()
        issue = await self._http.request("GET", f"{self._api}/issue/{issue_id}",
                                         params={"fields": ",".join(FIELDS),
                                                 "expand": "changelog"})
        item = await self._item(issue, await self._histories([issue]))
        if item is None:
            raise SourceError("refused", f"Jira moved {issue.get('key')} to a project that is "
                                         "not mirrored")
        return item

    @writes
    async def create(self, project_ref: str, draft: Draft) -> Item:
        changes = {"title": draft.title, "description": draft.description, "type": draft.type,
                   "priority": draft.priority, "assignee": draft.assignee,
                   "labels": draft.labels, "due": draft.due, "parent": draft.parent}
        fields = {"project": {"key": self._mirrored(project_ref)},
                  **await self._fields({k: v for k, v in changes.items() if v is not None})}
        created = await self._send("POST", f"{self._api}/issue", {"fields": fields})
        return await self._read(str(created["id"]))

    @writes
    async def update(self, ref: Ref, changes: Mapping[str, Any]) -> Item:
        await self._send("PUT", self._issue_path(ref), {"fields": await self._fields(changes)})
        return await self._read(ref.source_id)

    @writes
    async def transition(self, ref: Ref, status: str) -> Item:
        path = f"{self._issue_path(ref)}/transitions"
        offered = (await self._http.request("GET", path)).get("transitions") or []
        chosen = next((t for t in offered
                       if t["to"]["name"].lower() == status.strip().lower()), None)
        if chosen is None:
            allowed = ", ".join(sorted({t["to"]["name"] for t in offered})) or "none"
            raise SourceError("refused", f"Jira does not let {self._jira_key(ref)} move to "
                                         f"{status!r}; it can move to: {allowed}")
        await self._send("POST", path, {"transition": {"id": chosen["id"]}})
        return await self._read(ref.source_id)

    @writes
    async def comment(self, ref: Ref, body: str) -> Comment:
        answer = await self._send("POST", f"{self._issue_path(ref)}/comment",
                                  {"body": self._document(body)})
        comment = self._comment(answer)
        if comment is None:
            raise SourceError("bad_response", "Jira stored the comment without its text")
        return comment

    @writes
    async def link(self, outward: Ref, inward: Ref, link_type: str) -> bool:
        await self._send("POST", f"{self._api}/issueLink", {
            "type": {"name": _LINK_NAME[link_type]},
            "outwardIssue": {"key": self._jira_key(outward)},
            "inwardIssue": {"key": self._jira_key(inward)}})
        return True

    # --- reading issues ----------------------------------------------------------------------
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

    async def _item(self, issue: Mapping[str, Any],
                    histories_read: Mapping[str, list[Any]] | None = None) -> Item | None:
        """The item of a search's (or a read's) issue; ``histories_read``: the whole status
        histories of the issues whose changelog came cut short (:meth:`_histories`)."""
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
        # Comments have no bulk endpoint (comment/list takes comment ids): those past the
        # search's inline page are read per issue.
        comments_raw = await self._rest(f"{self._api}/issue/{issue['id']}/comment", "comments",
                                        f.get("comment") or {})
        histories = ((histories_read or {}).get(str(issue["id"]))
                     or (issue.get("changelog") or {}).get("histories") or [])
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
            links=[link for raw in f.get("issuelinks") or []
                   if (link := self._link(raw)) is not None],
        )

    def _link(self, raw: Mapping[str, Any]) -> Link | None:
        # An entry on issue A names the other end B: under "outwardIssue" it reads "A <outward
        # description> B" (A blocks B), under "inwardIssue" "A <inward description> B".
        link_type = _LINK_TYPE.get((raw.get("type") or {}).get("name", ""))
        outward = "outwardIssue" in raw
        other = self._local_key((raw.get("outwardIssue") or raw.get("inwardIssue") or {})
                                .get("key"))
        if link_type is None or other is None:
            return None  # a custom link type, or an item we do not mirror
        return Link(link_type, other[0], outward)

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
