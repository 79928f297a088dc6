"""A fake Jira site speaking REST as Atlassian documents it, for the source tests.

One flavour per instance. Cloud (the default): REST v3 only, basic auth with email:token, Atlassian
Document Format bodies, ``POST /rest/api/3/search/jql`` (``{jql, fields, expand, maxResults,
nextPageToken}`` → ``{issues, nextPageToken, isLast}``), inline comments and changelogs cut short
(their first ``inline_comments`` and ``inline_histories``) so the adapter must read on through
``GET issue/{id}/comment``, ``/changelog`` or ``POST changelog/bulkfetch`` (``{issueIdsOrKeys,
fieldIds, maxResults, nextPageToken}`` → ``{issueChangeLogs: [{issueId, changeHistories}],
nextPageToken}``). Server/Data Center
(``server=True``): REST v2 only, a bearer personal access token, plain-text bodies, ``GET
/rest/api/2/search?jql=&startAt=&maxResults=&fields=&expand=`` (→ ``{startAt, maxResults, total,
issues}``) with the whole changelog inline.

Both: ``GET myself`` (with ``timeZone``), ``GET status``, ``GET project/{key}``, ``GET
project/{key}/statuses`` (per issue type), ``GET user/search`` (Cloud ``query``, Server
``username``), ``POST issue`` (201 ``{id, key, self}``), ``GET``/``PUT issue/{id}`` (204),
``GET``/``POST issue/{id}/transitions`` (the issue's workflow; 204), ``POST issue/{id}/comment``
(201, the comment), ``POST issueLink`` (201, no body; the outward issue is the one the link reads
from), ``issuelinks`` on each issue. Errors are Jira's body ``{"errorMessages": [...], "errors":
{field: message}}``: 400 for bad fields or transitions, 401, 404, 429 (with ``Retry-After``) and
5xx. Search understands the JQL the adapter writes: ``project in (...)``, an optional ``updated
>= "yyyy-MM-dd HH:mm"`` read in the user's time zone, ``ORDER BY updated ASC, key ASC``. The
result is computed afresh for every request, as Jira's is: an issue changed between two page
requests (``before_search`` hooks do that) leaves its place for the end, and every issue after its
old place moves one place earlier, so ``startAt`` alone would step over one.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

STATUSES = {  # name -> (id, statusCategory.key)
    "To Do": ("1", "new"), "In Progress": ("3", "indeterminate"),
    "Blocked": ("10", "indeterminate"),
    "In Review": ("11", "indeterminate"), "Done": ("5", "done"), "Won't Do": ("12", "done"),
}
# The statuses of each issue type's workflow, as GET project/{key}/statuses lists them.
TYPE_STATUSES = {
    "Bug": ("In Progress", "To Do", "Blocked", "In Review", "Done", "Won't Do"),
    "Story": ("To Do", "In Progress", "In Review", "Done"),
    "Task": ("To Do", "In Progress", "Done"),
}
# The company-managed workflow every issue follows: status -> the statuses it may move to.
WORKFLOW = {
    "To Do": ("In Progress", "Won't Do"),
    "In Progress": ("To Do", "Blocked", "In Review", "Done"),
    "Blocked": ("In Progress",),
    "In Review": ("In Progress", "Done"),
    "Done": ("To Do",),
    "Won't Do": ("To Do",),
}
# Transitions are named for the act, not the target: the adapter must match on ``to.name``.
TRANSITION_NAMES = {"To Do": "Reopen", "In Progress": "Start progress", "Blocked": "Block",
                    "In Review": "Request review", "Done": "Resolve", "Won't Do": "Decline"}
ISSUE_TYPES = {"Epic", "Story", "Task", "Bug", "Sub-task", "New Feature"}
PRIORITIES = {"Highest", "High", "Medium", "Low", "Lowest"}
LINK_TYPES = {  # Jira's default issue link types
    "Blocks": {"id": "10000", "name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
    "Cloners": {"id": "10001", "name": "Cloners", "inward": "is cloned by", "outward": "clones"},
    "Duplicate": {"id": "10002", "name": "Duplicate", "inward": "is duplicated by",
                  "outward": "duplicates"},
    "Relates": {"id": "10003", "name": "Relates", "inward": "relates to",
                "outward": "relates to"},
}
USERS = [  # (Server user name, Cloud account id, display name, email)
    ("alice", "5b10ac8d82e05b22cc7d4ef5", "Alice Liddell", "alice@x.io"),
    ("bob", "5b109f2e9729b51b54dc274d", "Bob Stone", "bob@x.io"),
]
EDITABLE = {"summary", "description", "issuetype", "priority", "assignee", "labels", "duedate",
            "parent"}
_JQL = re.compile(r'^project in \((?P<projects>[^)]*)\)'
                  r'(?: AND updated >= "(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d)")?'
                  r' ORDER BY updated ASC, key ASC$')
_NOT_FOUND = "Issue does not exist or you do not have permission to see it."


def jira_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def adf(text: str) -> dict[str, Any]:
    return {"type": "doc", "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]}


def _error(status: int, message: str | None = None, errors: dict[str, str] | None = None,
           **headers: str) -> web.Response:
    return web.json_response({"errorMessages": [message] if message else [],
                              "errors": errors or {}}, status=status, headers=headers)


def _status(name: str) -> dict[str, Any]:
    status_id, category = STATUSES[name]
    return {"id": status_id, "name": name, "untranslatedName": name,
            "statusCategory": {"key": category}}


@dataclasses.dataclass
class FakeJira:
    email: str = "bot@example.com"
    token: str = "s3cret-token"
    server: bool = False
    time_zone: str = "Europe/Berlin"
    inline_comments: int = 2
    inline_histories: int = 2
    projects: set[str] = dataclasses.field(default_factory=lambda: {"ABC"})
    type_statuses: dict[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: dict(TYPE_STATUSES))
    issues: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    histories: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # (link id, link type name, outward issue id, inward issue id): "outward <type> inward".
    links: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)
    # Answers to give instead of the real one, consumed in order: (status, headers).
    faults: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    # The same for one (method, path) only; these go first.
    faults_at: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = dataclasses.field(
        default_factory=dict)
    # The n-th search request and every later one fail with 500 for as long as this is set: a
    # dying sync.
    broken_search: int | None = None
    # n -> what to do just before answering the n-th search request.
    before_search: dict[int, Callable[[], Any]] = dataclasses.field(default_factory=dict)
    searches: int = 0
    log: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # Bodies of the writes received, in order: (method, path, JSON body).
    writes: list[tuple[str, str, Any]] = dataclasses.field(default_factory=list)
    # Bodies of the changelog/bulkfetch requests received, in order.
    bulk_reads: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    _next_id: int = 10000

    @property
    def api(self) -> str:
        return "/rest/api/2" if self.server else "/rest/api/3"

    def body(self, text: str) -> Any:
        """A description or comment body as this flavour stores it."""
        return text if self.server else adf(text)

    # --- building the site ---------------------------------------------------------------
    def add_issue(self, key: str, *, summary: str, updated: datetime, status: str = "To Do",
                  issuetype: str = "Task", priority: str | None = "Medium",
                  labels: tuple[str, ...] = (), assignee: str | None = None,
                  parent: str | None = None, resolution: str | None = None,
                  comments: int = 0, moves: tuple[str, ...] = ()) -> dict[str, Any]:
        self._next_id += 1
        issue_id = str(self._next_id)
        self.projects.add(key.split("-")[0])
        created = updated - timedelta(days=1)
        category = STATUSES[status][1]
        fields: dict[str, Any] = {
            "summary": summary, "description": self.body(f"About {summary}."),
            "issuetype": {"name": issuetype, "subtask": issuetype == "Sub-task"},
            "status": _status(status),
            "priority": {"name": priority} if priority else None,
            "assignee": ({"accountId": "a1", "displayName": assignee} if assignee else None),
            "reporter": {"accountId": "r1", "displayName": "Rita", "emailAddress": "rita@x.io"},
            "labels": list(labels), "created": jira_time(created), "updated": jira_time(updated),
            "resolutiondate": jira_time(updated) if category == "done" else None,
            "resolution": {"name": resolution or "Done"} if category == "done" else None,
            "duedate": None,
        }
        if parent:
            fields["parent"] = {"key": parent}
        self.issues[issue_id] = {"id": issue_id, "key": key, "fields": fields}
        self.comments[issue_id] = [
            {"id": f"{issue_id}{n}", "author": {"displayName": "Carl"},
             "body": self.body(f"c{n}"), "created": jira_time(created + timedelta(hours=n)),
             "updated": jira_time(created + timedelta(hours=n))} for n in range(comments)]
        self.histories[issue_id] = []
        previous = "To Do"
        for n, target in enumerate(moves):
            self._move(issue_id, previous, target, created + timedelta(minutes=n + 1))
            previous = target
        return self.issues[issue_id]

    def _move(self, issue_id: str, source: str, target: str, at: datetime) -> None:
        self.histories[issue_id].append({
            "id": f"h{issue_id}-{len(self.histories[issue_id])}",
            "author": {"displayName": "Mover"}, "created": jira_time(at),
            "items": [{"field": "status", "fieldtype": "jira", "fieldId": "status",
                       "from": STATUSES[source][0], "fromString": source,
                       "to": STATUSES[target][0], "toString": target}]})

    def find(self, id_or_key: str) -> dict[str, Any] | None:
        """An issue by id or key, as Jira's ``issue/{issueIdOrKey}`` paths take either."""
        return self.issues.get(id_or_key) or next(
            (i for i in self.issues.values() if i["key"] == id_or_key), None)

    def update_issue(self, key: str, *, at: datetime, status: str | None = None,
                     summary: str | None = None) -> None:
        issue = self.find(key)
        assert issue is not None
        fields = issue["fields"]
        if status is not None:
            self._move(issue["id"], fields["status"]["name"], status, at)
            category = STATUSES[status][1]
            fields["status"] = _status(status)
            fields["resolutiondate"] = jira_time(at) if category == "done" else None
            fields["resolution"] = {"name": "Done"} if category == "done" else None
        if summary is not None:
            fields["summary"] = summary
        fields["updated"] = jira_time(at)

    def link_issues(self, outward: str, inward: str, type_name: str, *, at: datetime) -> None:
        """Record "outward <type> inward"; like Jira, both issues count as updated."""
        ends = [self.find(outward), self.find(inward)]
        assert all(ends)
        self.links.append((str(20000 + len(self.links)), type_name,
                           *(e["id"] for e in ends)))  # type: ignore[index]
        for end in ends:
            end["fields"]["updated"] = jira_time(at)  # type: ignore[index]

    def user(self, name: str) -> dict[str, Any]:
        """A user (by any of its names) as this flavour renders one."""
        entry = next(u for u in USERS if name in u)
        login, account, display, email = entry
        if self.server:
            return {"name": login, "key": f"JIRAUSER{10100 + USERS.index(entry)}",
                    "displayName": display, "emailAddress": email, "active": True}
        return {"accountId": account, "accountType": "atlassian", "displayName": display,
                "emailAddress": email, "active": True}

    def now(self) -> datetime:
        return datetime.now(UTC)

    def charges(self) -> dict[str, int]:
        """What the requests so far cost against Jira's limits, which count requests."""
        return {"requests": len(self.log)}

    # --- the HTTP side --------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        api, add = self.api, app.router.add_route
        add("GET", f"{api}/myself", self._myself)
        add("GET", f"{api}/status", self._statuses)
        add("GET", f"{api}/project/{{key}}", self._project)
        add("GET", f"{api}/project/{{key}}/statuses", self._project_statuses)
        add("GET", f"{api}/user/search", self._user_search)
        if self.server:
            add("GET", f"{api}/search", self._search_server)
        else:
            add("POST", f"{api}/search/jql", self._search)
            add("GET", f"{api}/issue/{{id}}/changelog", self._changelog)
            add("POST", f"{api}/changelog/bulkfetch", self._bulk_changelog)
        add("POST", f"{api}/issue", self._create)
        add("GET", f"{api}/issue/{{id}}", self._issue)
        add("PUT", f"{api}/issue/{{id}}", self._edit)
        add("GET", f"{api}/issue/{{id}}/comment", self._comments)
        add("POST", f"{api}/issue/{{id}}/comment", self._add_comment)
        add("GET", f"{api}/issue/{{id}}/transitions", self._transitions)
        add("POST", f"{api}/issue/{{id}}/transitions", self._transition)
        add("POST", f"{api}/issueLink", self._link)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.log.append((request.method, request.path))
        if self.server:
            expected = f"Bearer {self.token}"
        else:
            expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "Client must be authenticated to access this resource.")
        if faults := self.faults_at.get((request.method, request.path)) or self.faults:
            status, headers = faults.pop(0)
            return _error(status, "Rate limit exceeded." if status == 429 else "Internal error",
                          **headers)
        if request.method in ("POST", "PUT") and not request.path.startswith(
                (f"{self.api}/search", f"{self.api}/changelog/bulkfetch")):  # reads
            self.writes.append((request.method, request.path, await request.json()))
        return await handler(request)

    async def _myself(self, request: web.Request) -> web.Response:
        return web.json_response({"accountId": "bot", "name": "bot", "emailAddress": self.email,
                                  "displayName": "Sync Bot", "timeZone": self.time_zone})

    async def _statuses(self, request: web.Request) -> web.Response:
        return web.json_response([_status(name) for name in STATUSES])

    async def _project(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.projects:
            return _error(404, f"No project could be found with key '{key}'.")
        return web.json_response({"id": "1", "key": key, "name": key})

    async def _project_statuses(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.projects:
            return _error(404, f"No project could be found with key '{key}'.")
        return web.json_response([
            {"id": str(n), "name": name, "subtask": False,
             "statuses": [_status(status) for status in statuses]}
            for n, (name, statuses) in enumerate(self.type_statuses.items(), start=1)])

    async def _user_search(self, request: web.Request) -> web.Response:
        wanted = request.query.get("username" if self.server else "query", "").lower()
        return web.json_response([self.user(u[0]) for u in USERS
                                  if wanted and any(wanted in part.lower() for part in u)])

    def _found(self, jql: str) -> list[dict[str, Any]] | None:
        self.searches += 1
        if (hook := self.before_search.pop(self.searches, None)) is not None:
            hook()
        match = _JQL.match(jql)
        if match is None:
            return None
        projects = {p.strip().strip('"') for p in match["projects"].split(",")}
        found = [i for i in self.issues.values() if i["key"].split("-")[0] in projects]
        if match["since"]:
            since = datetime.strptime(match["since"], "%Y-%m-%d %H:%M").replace(
                tzinfo=ZoneInfo(self.time_zone))
            found = [i for i in found
                     if datetime.fromisoformat(i["fields"]["updated"]) >= since]
        return sorted(found, key=lambda i: (i["fields"]["updated"], i["key"]))

    def _broken(self) -> bool:
        return self.broken_search is not None and self.searches >= self.broken_search

    async def _search(self, request: web.Request) -> web.Response:
        body = await request.json()
        found = self._found(body["jql"])
        if found is None:
            return _error(400, f"Error in the JQL Query: {body['jql']}")
        start = int(base64.b64decode(body["nextPageToken"])) if body.get("nextPageToken") else 0
        size = min(int(body.get("maxResults", 50)), 100)
        if self._broken():
            return _error(500, "Internal server error")
        wanted = set(body.get("fields", []))
        issues = [self._render(i, wanted, "changelog" in body.get("expand", ""))
                  for i in found[start:start + size]]
        more = start + size < len(found)
        answer: dict[str, Any] = {"issues": issues, "isLast": not more}
        if more:
            answer["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return web.json_response(answer)

    async def _search_server(self, request: web.Request) -> web.Response:
        query = request.query
        found = self._found(query.get("jql", ""))
        if found is None:
            return _error(400, f"Error in the JQL Query: {query.get('jql')}")
        start, size = int(query.get("startAt", 0)), min(int(query.get("maxResults", 50)), 100)
        if self._broken():
            return _error(500, "Internal server error")
        wanted = set(query.get("fields", "").split(","))
        issues = [self._render(i, wanted, "changelog" in query.get("expand", ""))
                  for i in found[start:start + size]]
        return web.json_response({"expand": "schema,names", "startAt": start,
                                  "maxResults": size, "total": len(found), "issues": issues})

    def _render(self, issue: dict[str, Any], wanted: set[str], changelog: bool) -> dict[str, Any]:
        fields = {k: v for k, v in issue["fields"].items() if k in wanted}
        comments = self.comments[issue["id"]]
        if "comment" in wanted:
            fields["comment"] = {"comments": comments[: self.inline_comments], "startAt": 0,
                                 "maxResults": self.inline_comments, "total": len(comments)}
        if "issuelinks" in wanted:
            fields["issuelinks"] = self._issue_links(issue["id"])
        out = {"id": issue["id"], "key": issue["key"], "fields": fields}
        if changelog:
            histories = self.histories[issue["id"]]
            # Server answers the whole changelog inline; Cloud its first part.
            shown = histories if self.server else histories[: self.inline_histories]
            out["changelog"] = {"startAt": 0, "maxResults": len(shown), "total": len(histories),
                                "histories": shown}
        return out

    def _issue_links(self, issue_id: str) -> list[dict[str, Any]]:
        # On the outward issue the other end shows as "outwardIssue" (A blocks B); on the
        # inward one as "inwardIssue" (B is blocked by A).
        out = []
        for link_id, name, outward, inward in self.links:
            if issue_id in (outward, inward):
                role, other = (("outwardIssue", inward) if issue_id == outward
                               else ("inwardIssue", outward))
                brief = self.issues[other]
                out.append({"id": link_id, "type": LINK_TYPES[name], role: {
                    "id": brief["id"], "key": brief["key"],
                    "fields": {"summary": brief["fields"]["summary"],
                               "status": brief["fields"]["status"]}}})
        return out

    def _slice(self, request: web.Request, values: list[Any]) -> tuple[int, int, list[Any]]:
        start = int(request.query.get("startAt", 0))
        size = int(request.query.get("maxResults", 50))
        return start, size, values[start:start + size]

    async def _comments(self, request: web.Request) -> web.Response:
        issue = self.find(request.match_info["id"])
        if issue is None:
            return _error(404, _NOT_FOUND)
        values = self.comments[issue["id"]]
        start, size, chunk = self._slice(request, values)
        return web.json_response({"startAt": start, "maxResults": size, "total": len(values),
                                  "comments": chunk})

    async def _changelog(self, request: web.Request) -> web.Response:
        issue = self.find(request.match_info["id"])
        if issue is None:
            return _error(404, _NOT_FOUND)
        values = self.histories[issue["id"]]
        start, size, chunk = self._slice(request, values)
        return web.json_response({"startAt": start, "maxResults": size, "total": len(values),
                                  "isLast": start + size >= len(values), "values": chunk})

    async def _bulk_changelog(self, request: web.Request) -> web.Response:
        """``POST changelog/bulkfetch`` (Cloud): the changelogs of up to 1,000 issues, only the
        items of up to 10 ``fieldIds`` when given, oldest first by (created, issue id), at most
        ``maxResults`` (1,000) histories a page, grouped by issue; ``nextPageToken`` while more
        remain. Issues that do not exist or have no matching history are left out."""
        body = await request.json()
        self.bulk_reads.append(body)
        wanted = body.get("issueIdsOrKeys")
        fields = body.get("fieldIds")
        size = body.get("maxResults", 1000)
        if not isinstance(wanted, list) or not 1 <= len(wanted) <= 1000:
            return _error(400, errors={"issueIdsOrKeys": "Provide between 1 and 1000 issue IDs "
                                                         "or keys."})
        if fields is not None and (not isinstance(fields, list) or len(fields) > 10):
            return _error(400, errors={"fieldIds": "Provide at most 10 field IDs."})
        if not isinstance(size, int) or not 1 <= size <= 1000:
            return _error(400, errors={"maxResults": "maxResults must be between 1 and 1000."})
        entries = []
        for issue in filter(None, map(self.find, dict.fromkeys(map(str, wanted)))):
            for history in self.histories[issue["id"]]:
                items = [i for i in history["items"] if fields is None or i["fieldId"] in fields]
                if items:
                    entries.append((history["created"], int(issue["id"]),
                                    {**history, "items": items}))
        entries.sort(key=lambda e: (e[0], e[1]))
        start = int(base64.b64decode(body["nextPageToken"])) if body.get("nextPageToken") else 0
        logs: list[dict[str, Any]] = []
        for _, issue_id, history in entries[start:start + size]:
            if not logs or logs[-1]["issueId"] != str(issue_id):
                logs.append({"issueId": str(issue_id), "changeHistories": []})
            logs[-1]["changeHistories"].append(history)
        answer: dict[str, Any] = {"issueChangeLogs": logs}
        if start + size < len(entries):
            answer["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return web.json_response(answer)

    # --- writes ---------------------------------------------------------------------------
    def _is_body(self, value: Any) -> bool:
        if self.server:
            return isinstance(value, str)
        return isinstance(value, dict) and value.get("type") == "doc" and value.get("version") == 1

    def _assignee(self, value: Any) -> dict[str, Any] | None:
        """The user a create or edit names: Cloud by ``accountId``, Server by ``name``."""
        ref = (value or {}).get("name" if self.server else "accountId")
        column = 0 if self.server else 1
        entry = next((u for u in USERS if u[column] == ref), None)
        return self.user(entry[0]) if entry else None

    def _field_errors(self, fields: dict[str, Any], *, creating: bool) -> dict[str, str]:
        errors: dict[str, str] = {}
        for name, value in fields.items():
            if name not in EDITABLE and not (creating and name == "project"):
                errors[name] = (f"Field '{name}' cannot be set. It is not on the appropriate "
                                "screen, or unknown.")
            elif name == "project" and (value or {}).get("key") not in self.projects:
                errors[name] = "Specify a valid project ID or key"
            elif name == "summary" and not (isinstance(value, str) and value.strip()):
                errors[name] = "You must specify a summary of the issue."
            elif name == "summary" and len(value) > 255:
                errors[name] = "Summary must be less than 255 characters."
            elif name == "description" and value is not None and not self._is_body(value):
                errors[name] = ("Operation value must be a string" if self.server else
                                "Operation value must be an Atlassian Document (see the "
                                "Atlassian Document Format)")
            elif name == "issuetype" and (value or {}).get("name") not in ISSUE_TYPES:
                errors[name] = "Specify a valid issue type"
            elif name == "priority" and (value or {}).get("name") not in PRIORITIES:
                errors[name] = f"Priority name '{(value or {}).get('name')}' is not valid"
            elif name == "assignee" and value is not None and self._assignee(value) is None:
                errors[name] = "Specify a valid value for assignee"
            elif name == "labels" and (bad := [v for v in value if " " in v]):
                errors[name] = f"The label '{bad[0]}' contains spaces which is invalid."
            elif name == "duedate" and value is not None and not _is_date(value):
                errors[name] = f"Error parsing date string: {value}"
            elif name == "parent" and value is not None and self.find(value.get("key", "")) is None:
                errors[name] = "Could not find issue by id or key."
        if creating:
            for required in ("project", "summary", "issuetype"):
                if required not in fields:
                    errors.setdefault(required, f"You must specify the {required}.")
        return errors

    def _set(self, issue: dict[str, Any], fields: dict[str, Any]) -> None:
        target = issue["fields"]
        for name, value in fields.items():
            match name:
                case "project":
                    continue
                case "issuetype":
                    target[name] = {"name": value["name"], "subtask": value["name"] == "Sub-task"}
                case "priority":
                    target[name] = {"name": value["name"]}
                case "assignee":
                    target[name] = None if value is None else self._assignee(value)
                case "parent" if value is None:
                    target.pop("parent", None)
                case "parent":
                    target[name] = {"key": self.find(value["key"])["key"]}  # type: ignore[index]
                case _:
                    target[name] = value
        target["updated"] = jira_time(self.now())

    async def _create(self, request: web.Request) -> web.Response:
        fields = (await request.json()).get("fields") or {}
        if errors := self._field_errors(fields, creating=True):
            return _error(400, errors=errors)
        project = fields["project"]["key"]
        number = 1 + max((int(i["key"].split("-")[1]) for i in self.issues.values()
                          if i["key"].startswith(f"{project}-")), default=0)
        issue = self.add_issue(f"{project}-{number}", summary=fields["summary"],
                               updated=self.now(), issuetype=fields["issuetype"]["name"])
        issue["fields"]["created"] = issue["fields"]["updated"]
        issue["fields"]["description"] = None
        self._set(issue, fields)
        return web.json_response({"id": issue["id"], "key": issue["key"],
                                  "self": f"{request.url.origin()}{self.api}/issue/{issue['id']}"},
                                 status=201)

    async def _issue(self, request: web.Request) -> web.Response:
        issue = self.find(request.match_info["id"])
        if issue is None:
            return _error(404, _NOT_FOUND)
        wanted = set(request.query.get("fields", "").split(","))
        return web.json_response(self._render(issue, wanted,
                                              "changelog" in request.query.get("expand", "")))

    async def _edit(self, request: web.Request) -> web.Response:
        issue = self.find(request.match_info["id"])
        if issue is None:
            return _error(404, _NOT_FOUND)
        fields = (await request.json()).get("fields") or {}
        if errors := self._field_errors(fields, creating=False):
            return _error(400, errors=errors)
        self._set(issue, fields)
        return web.Response(status=204)

    def _offered(self, issue: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"id": f"{STATUSES[target][0]}1", "name": TRANSITION_NAMES[target],
                 "to": _status(target), "hasScreen": False, "isGlobal": False,
                 "isInitial": False, "isConditional": False}
                for target in WORKFLOW[issue["fields"]["status"]["name"]]]

    async def _transitions(self, request: web.Request) -> web.Response:
        issue = self.find(request.match_info["id"])
        if issue is None:
            return _error(404, _NOT_FOUND)
        return web.json_response({"expand": "transitions", "transitions": self._offered(issue)})

    async def _transition(self, request: web.Request) -> web.Response:
        issue = self.find(request.match_info["id"])
        if issue is None:
            return _error(404, _NOT_FOUND)
        wanted = ((await request.json()).get("transition") or {}).get("id")
        chosen = next((t for t in self._offered(issue) if t["id"] == wanted), None)
        if chosen is None:
            return _error(400, f"Transition id '{wanted}' is not valid for this issue.")
        self.update_issue(issue["key"], at=self.now(), status=chosen["to"]["name"])
        return web.Response(status=204)

    async def _add_comment(self, request: web.Request) -> web.Response:
        issue = self.find(request.match_info["id"])
        if issue is None:
            return _error(404, _NOT_FOUND)
        body = (await request.json()).get("body")
        if not self._is_body(body) or not (body.strip() if self.server else body["content"]):
            return _error(400, errors={"comment": "Comment body can not be empty!"})
        at = jira_time(self.now())
        comment = {"id": str(90000 + sum(map(len, self.comments.values()))),
                   "author": {"displayName": "Sync Bot", "emailAddress": self.email},
                   "body": body, "created": at, "updated": at}
        self.comments[issue["id"]].append(comment)
        issue["fields"]["updated"] = at
        return web.json_response(comment, status=201)

    async def _link(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = (body.get("type") or {}).get("name")
        if name not in LINK_TYPES:
            return _error(404, f"No issue link type with name '{name}' found.")
        ends = [self.find((body.get(role) or {}).get("key", ""))
                for role in ("outwardIssue", "inwardIssue")]
        if not all(ends):
            return _error(404, "Issue Does Not Exist")
        self.link_issues(ends[0]["key"], ends[1]["key"], name,  # type: ignore[index]
                         at=self.now())
        return web.Response(status=201)


def _is_date(value: Any) -> bool:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True
