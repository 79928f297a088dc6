"""GitHub issues, read through the GraphQL API (v4) and written through REST (API version
2022-11-28), normalised to the store.

Wire shapes followed (docs.github.com; GitHub Enterprise Server at ``https://HOST/api/v3``, its
GraphQL at ``https://HOST/api/graphql``):

* ``GET /user``: who the token belongs to; ``GET /repos/{owner}/{repo}``: that a mirrored
  repository is visible and has issues turned on.
* ``POST /graphql``, ``repository.issues(first, after, filterBy: {since}, orderBy: {field:
  UPDATED_AT, direction: ASC})``, each page asked again from the last update read (see Order),
  with every issue's fields, labels, assignees and the first page of its ``timelineItems`` of
  ``ISSUE_COMMENT``, ``CLOSED_EVENT`` (with its ``stateReason``) and ``REOPENED_EVENT``: the
  comments and the status history. Longer timelines are read on 50 issues a query
  (``github_graphql``). This list has no pull requests. A page of 100 issues costs 3 points.
* Writes: ``POST …/issues``, ``PATCH …/issues/{number}`` (fields, ``state``/``state_reason``),
  ``POST …/issues/{number}/comments``; a written issue's item is the REST answer and its
  timeline, read with ``repository.issue(number).timelineItems``.

Order: each repository's list comes oldest update first; several repositories are merged by update
time, so pages are oldest first across all of them and the sync's cursor never passes an item not
yet written. ``since`` is "updated at or after" with the one-second precision of GitHub's own
timestamps, so the item at the cursor is read again (upserts make that harmless) and none is lost.
GitHub documents no cursor as a snapshot: one may be a position in a list that moves when an issue
changes during the sync, so each next page is asked ``since`` the last update read instead (keyset
pagination), skipping the versions already read; a cursor is followed only through a page that is
all one second. An issue changed during the sync is read again at its new place.

Mappings (an instance's ``priority_labels`` / ``type_labels`` config, label → value, go first):

* status: open → Open (todo); closed as not_planned or duplicate → Not planned (cancelled);
  otherwise closed → Closed (done). ``resolved`` is ``closedAt`` while closed.
* priority, from labels (case-insensitive; the highest wins): ``priority: critical|high|medium|
  low`` (also ``priority/…``, ``priority-…``, ``prio: …``, ``urgent``, ``normal``), P0 → critical,
  P1 → high, P2 → medium, P3 → low, a bare ``critical`` or ``urgent`` → critical; none → none.
* type: the issue's GitHub issue type when set, else labels (also as ``type: …``): bug/defect →
  bug, enhancement/feature → feature, epic, story, task/chore (precedence in that order); else
  task. Writing a priority or type writes its label (``priority: high``, ``bug``, ``enhancement``,
  ``epic``, ``story``); task and none write no label.
* assignee: the first assignee's login; reporter: the author's login; labels: every label's
  name; due: the milestone's due date; key: LOCALKEY-<issue number>; source_id: the issue's
  numeric id (REST's ``id``, GraphQL's ``fullDatabaseId``). GitHub has no issue links and no
  parent field: links stay local, and due or parent changes are refused (``SourceError`` kind
  ``unsupported``).
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .base import (
    PRIORITIES,
    TYPES,
    Adapter,
    Comment,
    Draft,
    HttpClient,
    Item,
    Page,
    Ref,
    SourceError,
    Transition,
    Workflow,
    writes,
)
from .github_graphql import (
    FOLLOW_UPS,
    ISSUES_QUERY,
    NEWER_FIELDS,
    TIMELINE_QUERY,
    follow_up_query,
    graphql_error,
    graphql_url,
    legacy,
    missing_field,
    node_of,
    timeline_of,
)
from .github_labels import LabelMap, priority_labels, type_labels

__all__ = ["ADAPTER", "CLOSED", "NOT_PLANNED", "OPEN", "REPO", "GitHubAdapter", "LabelMap",
           "priority_labels", "status_for", "type_labels"]

# Owner: a user or organisation login; repository: letters, digits, '.', '-', '_', never '.' or
# '..'. The reference becomes a URL path, so nothing else may pass.
REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?!\.\.?$)[A-Za-z0-9._-]{1,100}$")
OPEN = ("Open", "todo")
CLOSED = ("Closed", "done")
NOT_PLANNED = ("Not planned", "cancelled")
# A status name → the PATCH that reaches it.
_STATE_OF = {OPEN[0]: {"state": "open", "state_reason": "reopened"},
             CLOSED[0]: {"state": "closed", "state_reason": "completed"},
             NOT_PLANNED[0]: {"state": "closed", "state_reason": "not_planned"}}
WORKFLOW = Workflow(
    statuses=[OPEN, CLOSED, NOT_PLANNED],
    transitions=[("close", "Close", OPEN[0], CLOSED[0]),
                 ("close-not-planned", "Close as not planned", OPEN[0], NOT_PLANNED[0]),
                 ("reopen", "Reopen", CLOSED[0], OPEN[0]),
                 ("reopen-not-planned", "Reopen", NOT_PLANNED[0], OPEN[0])])
# What a write cannot change at GitHub, and why.
_CANNOT = {"due": "GitHub issues have no due date of their own (a milestone's due date is "
                  "shared by all its issues); set the milestone on GitHub",
           "parent": "GitHub issue parents (sub-issues) cannot be set through this source"}

def status_for(state: str, state_reason: str | None) -> tuple[str, str]:
    """The store's (status, category) of an issue's ``state`` and ``state_reason``."""
    if state != "closed":
        return OPEN
    return NOT_PLANNED if state_reason in ("not_planned", "duplicate") else CLOSED


def _when(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _login(user: Mapping[str, Any] | None) -> str | None:
    return user.get("login") if user else None


def _stamp(at: datetime) -> str:
    """A ``since`` value: GitHub's timestamps are whole seconds in UTC."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(ref: Ref) -> int:
    return int(ref.key.rpartition("-")[2])


def _database_id(node: Mapping[str, Any]) -> str:
    # fullDatabaseId is a BigInt, so a JSON string; databaseId (an Int) on older servers. Either
    # is the REST API's id, which items are stored under.
    return str(node.get("fullDatabaseId") or node["databaseId"])


def _transitions(timeline: Iterable[Mapping[str, Any]]) -> list[Transition]:
    """Status moves from the timeline's closed and reopened events; every issue starts Open."""
    moves: list[Transition] = []
    current = OPEN
    for event in timeline:  # oldest first, as GitHub lists them
        if event.get("__typename") == "ClosedEvent":
            target = status_for("closed", (event.get("stateReason") or "").lower() or None)
        elif event.get("__typename") == "ReopenedEvent":
            target = OPEN
        else:
            continue
        moves.append(Transition(current[0], target[0], current[1], target[1],
                                _login(event.get("actor")), _when(event["createdAt"])))
        current = target
    return moves


def _comments(timeline: Iterable[Mapping[str, Any]]) -> list[Comment]:
    """The timeline's comments; the store requires a body, and a blank one says nothing."""
    comments: list[Comment] = []
    for entry in timeline:
        if entry.get("__typename") == "IssueComment" and (entry.get("body") or "").strip():
            created = _when(entry["createdAt"])
            comments.append(Comment(_database_id(entry), _login(entry.get("author")),
                                    entry["body"].strip()[:100_000], created,
                                    _when(entry.get("updatedAt")) or created))
    return comments


def _comment(raw: Mapping[str, Any]) -> Comment:
    """A comment as the REST API answers one (a new comment's answer)."""
    created = _when(raw["created_at"])
    return Comment(str(raw["id"]), _login(raw.get("user")), raw["body"].strip()[:100_000],
                   created, _when(raw.get("updated_at")) or created)


class GitHubAdapter(Adapter):
    """One GitHub (or GitHub Enterprise Server) API, the repositories in ``projects``
    (``owner/repo`` → local key)."""

    kind = "github"
    overrides = {"priority_labels": PRIORITIES, "type_labels": TYPES}
    ref_pattern = REPO
    ref_example = "octo-org/web"
    default_base_url = "https://api.github.com"
    default_rate = 15.0
    rate_basis = ("GitHub's secondary rate limit: 900 points a minute for REST, where a read is "
                  "1 point (GraphQL allows 2,000)")

    @classmethod
    def from_instance(cls, base_url: str, credentials: Mapping[str, str],
                      config: Mapping[str, Any], **client_options: Any) -> GitHubAdapter:
        return cls(base_url, token=credentials["token"], projects=config.get("projects", {}),
                   priority_overrides=config.get("priority_labels"),
                   type_overrides=config.get("type_labels"), **client_options)

    def __init__(
        self, base_url: str, *, token: str, projects: Mapping[str, str],
        priority_overrides: Mapping[str, str] | None = None,
        type_overrides: Mapping[str, str] | None = None, page_size: int = 100,
        **client_options: Any,
    ) -> None:
        if bad := [ref for ref in projects if not REPO.match(ref)]:
            raise SourceError("config", f"not a GitHub owner/repo: {', '.join(bad)}")
        self.projects = dict(projects)
        self._priority = priority_labels(priority_overrides)
        self._type = type_labels(type_overrides)
        self._page_size = min(page_size, 100)  # GitHub's most per page
        self._http = HttpClient(base_url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28"}, **{"rate": self.default_rate,
                                                      **client_options})
        self._graphql_url = graphql_url(base_url)
        self._legacy = False  # the server lacks NEWER_FIELDS
        #: GraphQL points GitHub charged the queries so far (its ``rateLimit.cost``).
        self.points = 0

    async def check(self) -> str:
        me = await self._http.request("GET", "/user")
        for repo in self.projects:
            try:
                found = await self._http.request("GET", f"/repos/{repo}")
            except SourceError as exc:
                if exc.kind == "not_found":
                    raise SourceError("not_found", f"GitHub repository {repo} does not exist or "
                                      "is not visible to this token", status=404) from None
                raise
            if not found.get("has_issues", True):
                raise SourceError("config", f"GitHub repository {repo} has issues turned off")
        return _login(me) or "unknown user"

    async def workflow(self, project_ref: str) -> Workflow:
        return WORKFLOW

    # --- reading ---------------------------------------------------------------------------
    async def _graphql(self, query: str, variables: Mapping[str, Any], *,
                       missing_ok: bool = False) -> dict[str, Any]:
        """The ``data`` of a GraphQL query; its errors as one SourceError (``missing_ok``: an
        object that does not exist is left null instead). A server that lacks the newer fields
        the queries name (``issueType``, ``fullDatabaseId``: older GitHub Enterprise Servers)
        is asked again without them, and so from then on."""
        while True:
            text = legacy(query) if self._legacy else query
            answer = await self._http.request(
                "POST", self._graphql_url, json={"query": text, "variables": variables},
                idempotent=True)
            if not isinstance(answer, dict):
                raise SourceError("bad_response", f"{self._http.base_url} answered a GraphQL "
                                  "query with no data or errors (is the base URL right?)")
            errors = [e for e in answer.get("errors") or []
                      if not (missing_ok and isinstance(e, dict) and e.get("type") == "NOT_FOUND")]
            if not errors:
                data: dict[str, Any] = answer.get("data") or {}
                self.points += (data.get("rateLimit") or {}).get("cost") or 0
                return data
            if not self._legacy and any(missing_field(e) in NEWER_FIELDS for e in errors):
                self._legacy = True
                continue
            raise graphql_error(self._http.base_url, errors)

    async def _issue_page(self, repo: str, since: datetime | None,
                          after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of a repository's issues updated at or after ``since``, oldest update first
        (from ``after``, a cursor of the same reading), and the cursor of the next if any."""
        owner, name = repo.split("/")
        try:
            data = await self._graphql(ISSUES_QUERY, {
                "owner": owner, "name": name, "first": self._page_size, "after": after,
                "filterBy": {"since": _stamp(since)} if since is not None else {}})
        except SourceError as exc:
            if exc.kind == "not_found" and exc.status is None:  # GraphQL's NOT_FOUND, not a 404
                raise SourceError("not_found", f"GitHub repository {repo} does not exist or is "
                                  "not visible to this token", status=404) from None
            raise
        issues = (data.get("repository") or {}).get("issues") or {}
        info = issues.get("pageInfo") or {}
        return issues.get("nodes") or [], info.get("endCursor") if info.get("hasNextPage") \
            else None

    async def _complete(self, issues: list[dict[str, Any]]) -> None:
        """Read on the timelines longer than the page that came with their issue, the issues of
        up to ``FOLLOW_UPS`` of them in one query, until each is whole."""
        pending = [i for i in issues if timeline_of(i)["pageInfo"].get("hasNextPage")]
        while pending:
            batch, pending = pending[:FOLLOW_UPS], pending[FOLLOW_UPS:]
            variables: dict[str, Any] = {}
            for n, issue in enumerate(batch):
                variables[f"id{n}"] = issue["id"]
                variables[f"after{n}"] = timeline_of(issue)["pageInfo"].get("endCursor")
                if not variables[f"after{n}"]:
                    raise SourceError("bad_response", f"{self._http.base_url} answered a "
                                      "timeline page that is not the last without its cursor")
            # An issue deleted since its page was read is gone: what was read of it stays.
            data = await self._graphql(follow_up_query(len(batch)), variables, missing_ok=True)
            for n, issue in enumerate(batch):
                more = (data.get(f"t{n}") or {}).get("timelineItems") or {}
                timeline = timeline_of(issue)
                if (more.get("pageInfo") or {}).get("hasNextPage") and not more.get("nodes"):
                    raise SourceError("bad_response", f"{self._http.base_url} answered an empty "
                                      "timeline page that is not the last")
                timeline["nodes"] += more.get("nodes") or []
                timeline["pageInfo"] = more.get("pageInfo") or {"hasNextPage": False}
                if timeline["pageInfo"].get("hasNextPage"):
                    pending.append(issue)

    async def _unseen(self, chunk: list[dict[str, Any]],
                      seen: set[tuple[str, str]]) -> list[dict[str, Any]]:
        """The issues of ``chunk`` whose version is not in ``seen`` (which then holds them),
        with their whole timelines."""
        new = [i for i in chunk if (i["id"], i["updatedAt"]) not in seen]
        seen.update((i["id"], i["updatedAt"]) for i in new)
        await self._complete(new)
        return new

    async def _issues(self, repo: str, since: datetime | None) -> AsyncIterator[dict[str, Any]]:
        """A repository's issues (no pull requests), oldest update first, each version once.

        Keyset pagination: GitHub documents no cursor as a snapshot, and if one is a place in a
        list computed afresh for every request (as the REST list's page numbers are), an issue
        changed meanwhile leaves its place for the end and the issue after a page boundary slips
        back onto the page already read, where the cursor would step over it. So each next page
        is asked from the update time of the last issue read (``since`` is inclusive), and the
        issues of that second seen already are skipped by (id, updatedAt). Only a page that is
        one second from first to last, which ``since`` cannot get past, is followed by its
        cursor; that second is then read again before anything later, for an issue a change
        stepped over.
        """
        seen: set[tuple[str, str]] = set()
        start, after = since, None
        by_cursor: datetime | None = None  # the second whose pages are followed by cursor
        while True:
            chunk, following = await self._issue_page(repo, start, after)
            for issue in await self._unseen(chunk, seen):
                if by_cursor is not None and _when(issue["updatedAt"]) != by_cursor:
                    async for missed in self._second_again(repo, by_cursor, seen):
                        yield missed
                    by_cursor = None
                yield issue
            if following is None or not chunk:
                if by_cursor is not None:
                    async for missed in self._second_again(repo, by_cursor, seen):
                        yield missed
                return
            first, last = chunk[0]["updatedAt"], chunk[-1]["updatedAt"]
            if _when(first) == _when(last):
                by_cursor, after = _when(first), following
            else:
                start, after = _when(last), None
                # Every later page starts at ``last``: no older version can come again.
                seen = {version for version in seen if version[1] == last}

    async def _second_again(self, repo: str, second: datetime,
                            seen: set[tuple[str, str]]) -> AsyncIterator[dict[str, Any]]:
        """The issues updated in ``second`` not seen yet, read again by cursor until a reading
        finds none (a change during one reading can step over another issue), at most three
        times."""
        for _ in range(3):
            found = False
            after: str | None = None
            while True:
                chunk, following = await self._issue_page(repo, second, after)
                within = [i for i in chunk if _when(i["updatedAt"]) == second]
                for issue in await self._unseen(within, seen):
                    found = True
                    yield issue
                if following is None or len(within) < len(chunk):
                    break  # past the second: the caller reads on from here
                after = following
            if not found:
                return

    async def pages(self, *, since: datetime | None) -> AsyncGenerator[Page, None]:
        repos = list(self.projects)
        streams = [self._issues(repo, since) for repo in repos]
        heads: list[tuple[datetime, int, int, dict[str, Any]]] = []
        tie = itertools.count()  # never compare two issues

        async def advance(stream: int) -> None:
            if (issue := await anext(streams[stream], None)) is not None:
                heapq.heappush(heads, (_when(issue["updatedAt"]), stream, next(tie), issue))

        try:
            for stream in range(len(streams)):
                await advance(stream)
            batch: list[Item] = []
            while heads:
                _, stream, _, issue = heapq.heappop(heads)
                batch.append(self._item(repos[stream], issue))
                if len(batch) == self._page_size:
                    # Yield before reading on, so a failing next request loses no finished page.
                    yield Page(batch)
                    batch = []
                await advance(stream)
            if batch:
                yield Page(batch)
        finally:
            for open_stream in streams:
                await open_stream.aclose()

    def _item(self, repo: str, issue: Mapping[str, Any]) -> Item:
        """The item of an issue read with its whole timeline (GraphQL's shape)."""
        number = issue["number"]
        local = self.projects[repo]
        timeline = timeline_of(issue)["nodes"]
        status, category = status_for(issue["state"].lower(),
                                      (issue.get("stateReason") or "").lower() or None)
        labels = [label["name"] for label in (issue.get("labels") or {}).get("nodes") or []]
        assignees = (issue.get("assignees") or {}).get("nodes") or []
        issue_type = (issue.get("issueType") or {}).get("name")
        return Item(
            source_id=_database_id(issue), key=f"{local}-{number}", project_key=local,
            number=number, title=(issue.get("title") or f"{local}-{number}")[:1000],
            description=issue.get("body") or None,
            type=self._type.pick(labels, first=issue_type),
            status=status, status_category=category, priority=self._priority.pick(labels),
            assignee=_login(assignees[0]) if assignees else None,
            reporter=_login(issue.get("author")), labels=labels, parent_key=None,
            created=_when(issue["createdAt"]), updated=_when(issue["updatedAt"]),
            # The store refuses a resolution on an open item, whatever closedAt still says.
            resolved=_when(issue.get("closedAt")) if category != "todo" else None,
            due=_when((issue.get("milestone") or {}).get("dueOn")),
            raw={k: v for k, v in issue.items() if k != "timelineItems"},
            comments=_comments(timeline), transitions=_transitions(timeline),
        )

    async def _written(self, repo: str, issue: Mapping[str, Any]) -> Item:
        """The item a write answered (a REST issue), with its timeline read through GraphQL."""
        owner, name = repo.split("/")
        data = await self._graphql(TIMELINE_QUERY, {"owner": owner, "name": name,
                                                    "number": issue["number"]})
        node = node_of(issue)
        found = (data.get("repository") or {}).get("issue") or {}
        node["id"] = found.get("id") or node["id"]
        node["timelineItems"] = found.get("timelineItems") or node["timelineItems"]
        await self._complete([node])
        return self._item(repo, node)

    # --- writing ---------------------------------------------------------------------------
    def _repo(self, project_ref: str) -> str:
        if project_ref not in self.projects:
            raise SourceError("config", f"GitHub repository {project_ref} is not mirrored by "
                                        "this source")
        return project_ref

    @writes
    async def create(self, project_ref: str, draft: Draft) -> Item:
        repo = self._repo(project_ref)
        if draft.due is not None or draft.parent is not None:
            raise SourceError("unsupported", _CANNOT["due" if draft.due is not None else "parent"])
        labels = self._type.relabel(self._priority.relabel(draft.labels, draft.priority),
                                    draft.type)
        body: dict[str, Any] = {"title": draft.title, "labels": labels,
                                "assignees": [draft.assignee] if draft.assignee else []}
        if draft.description is not None:
            body["body"] = draft.description
        return await self._written(repo, await self._http.request("POST", f"/repos/{repo}/issues",
                                                               json=body))

    @writes
    async def update(self, ref: Ref, changes: Mapping[str, Any]) -> Item:
        repo = self._repo(ref.project_ref)
        for field in changes:
            if field not in ("title", "description", "priority", "assignee", "labels"):
                raise SourceError("unsupported", _CANNOT.get(field, f"cannot change {field}"))
        path = f"/repos/{repo}/issues/{_number(ref)}"
        body: dict[str, Any] = {}
        if "title" in changes:
            body["title"] = changes["title"]
        if "description" in changes:
            body["body"] = changes["description"]
        if "assignee" in changes:
            body["assignees"] = [changes["assignee"]] if changes["assignee"] else []
        if "labels" in changes or "priority" in changes:
            # "labels" sets the whole set; "priority" swaps the priority label within it.
            labels = changes.get("labels")
            if labels is None:
                labels = [label["name"] for label in
                          (await self._http.request("GET", path)).get("labels") or []]
            if "priority" in changes:
                labels = self._priority.relabel(labels, changes["priority"])
            body["labels"] = list(labels)
        return await self._written(repo, await self._http.request("PATCH", path, json=body))

    @writes
    async def transition(self, ref: Ref, status: str) -> Item:
        repo = self._repo(ref.project_ref)
        target = next((s for s in _STATE_OF if s.lower() == status.strip().lower()), None)
        if target is None:
            raise SourceError("invalid", f"GitHub issues have no status {status!r} (known: "
                                         f"{', '.join(_STATE_OF)})")
        return await self._written(repo, await self._http.request(
            "PATCH", f"/repos/{repo}/issues/{_number(ref)}", json=_STATE_OF[target]))

    @writes
    async def comment(self, ref: Ref, body: str) -> Comment:
        repo = self._repo(ref.project_ref)
        return _comment(await self._http.request(
            "POST", f"/repos/{repo}/issues/{_number(ref)}/comments", json={"body": body}))

    async def link(self, outward: Ref, inward: Ref, link_type: str) -> bool:
        return False  # GitHub issues have no typed links; the store keeps them locally


ADAPTER = GitHubAdapter
