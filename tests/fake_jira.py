"""A fake Jira Cloud site speaking REST v3 as Atlassian documents it, for the source tests.

Paths and shapes: ``GET /rest/api/3/myself`` (with ``timeZone``), ``GET /rest/api/3/status``,
``GET /rest/api/3/project/{key}``, ``POST /rest/api/3/search/jql`` (``{jql, fields, expand,
maxResults, nextPageToken}`` → ``{issues, nextPageToken, isLast}``), ``GET
/rest/api/3/issue/{id}/comment`` and ``/changelog`` (``startAt``/``maxResults``/``total``). Basic
auth with email:token; 401, 404, 429 (with ``Retry-After``) and 5xx answer with Jira's error body
``{"errorMessages": [...], "errors": {}}``. Search understands the JQL the adapter writes:
``project in (...)``, an optional ``updated >= "yyyy-MM-dd HH:mm"`` read in the user's time zone,
``ORDER BY updated ASC, key ASC``. Inline comments and changelogs are cut short, as Jira does, so
the adapter must page through the issue endpoints.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

STATUSES = {  # name -> (id, statusCategory.key)
    "To Do": ("1", "new"), "In Progress": ("3", "indeterminate"),
    "Blocked": ("10", "indeterminate"),
    "In Review": ("11", "indeterminate"), "Done": ("5", "done"), "Won't Do": ("12", "done"),
}
_JQL = re.compile(r'^project in \((?P<projects>[^)]*)\)'
                  r'(?: AND updated >= "(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d)")?'
                  r' ORDER BY updated ASC, key ASC$')


def jira_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def adf(text: str) -> dict[str, Any]:
    return {"type": "doc", "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]}


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"errorMessages": [message], "errors": {}}, status=status,
                             headers=headers)


@dataclasses.dataclass
class FakeJira:
    email: str = "bot@example.com"
    token: str = "s3cret-token"
    time_zone: str = "Europe/Berlin"
    inline_comments: int = 2
    inline_histories: int = 2
    issues: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    histories: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # Answers to give instead of the real one, consumed in order: (status, headers).
    faults: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    # Search pages (1-based) that fail with 500 for as long as this is set: a dying sync.
    broken_page: int | None = None
    log: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    _next_id: int = 10000

    # --- building the site ---------------------------------------------------------------
    def add_issue(self, key: str, *, summary: str, updated: datetime, status: str = "To Do",
                  issuetype: str = "Task", priority: str | None = "Medium",
                  labels: tuple[str, ...] = (), assignee: str | None = None,
                  parent: str | None = None, resolution: str | None = None,
                  comments: int = 0, moves: tuple[str, ...] = ()) -> dict[str, Any]:
        self._next_id += 1
        issue_id = str(self._next_id)
        created = updated - timedelta(days=1)
        status_id, category = STATUSES[status]
        fields: dict[str, Any] = {
            "summary": summary, "description": adf(f"About {summary}."),
            "issuetype": {"name": issuetype, "subtask": issuetype == "Sub-task"},
            "status": {"name": status, "id": status_id, "statusCategory": {"key": category}},
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
            {"id": f"{issue_id}{n}", "author": {"displayName": "Carl"}, "body": adf(f"c{n}"),
             "created": jira_time(created + timedelta(hours=n)),
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
            "items": [{"field": "status", "fieldtype": "jira", "from": STATUSES[source][0],
                       "fromString": source, "to": STATUSES[target][0], "toString": target}]})

    def update_issue(self, key: str, *, at: datetime, status: str | None = None,
                     summary: str | None = None) -> None:
        issue = next(i for i in self.issues.values() if i["key"] == key)
        fields = issue["fields"]
        if status is not None:
            self._move(issue["id"], fields["status"]["name"], status, at)
            status_id, category = STATUSES[status]
            fields["status"] = {"name": status, "id": status_id,
                                "statusCategory": {"key": category}}
            fields["resolutiondate"] = jira_time(at) if category == "done" else None
            fields["resolution"] = {"name": "Done"} if category == "done" else None
        if summary is not None:
            fields["summary"] = summary
        fields["updated"] = jira_time(at)

    # --- the HTTP side --------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/rest/api/3/myself", self._myself)
        app.router.add_get("/rest/api/3/status", self._statuses)
        app.router.add_get("/rest/api/3/project/{key}", self._project)
        app.router.add_post("/rest/api/3/search/jql", self._search)
        app.router.add_get("/rest/api/3/issue/{id}/comment", self._comments)
        app.router.add_get("/rest/api/3/issue/{id}/changelog", self._changelog)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.log.append((request.method, request.path))
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "Client must be authenticated to access this resource.")
        if self.faults:
            status, headers = self.faults.pop(0)
            return _error(status, "Rate limit exceeded." if status == 429 else "Internal error",
                          **headers)
        return await handler(request)

    async def _myself(self, request: web.Request) -> web.Response:
        return web.json_response({"accountId": "bot", "emailAddress": self.email,
                                  "displayName": "Sync Bot", "timeZone": self.time_zone})

    async def _statuses(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": i, "name": n, "statusCategory": {"key": k}}
                                  for n, (i, k) in STATUSES.items()])

    async def _project(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if not any(i["key"].startswith(f"{key}-") for i in self.issues.values()):
            return _error(404, f"No project could be found with key '{key}'.")
        return web.json_response({"id": "1", "key": key, "name": key})

    async def _search(self, request: web.Request) -> web.Response:
        body = await request.json()
        match = _JQL.match(body["jql"])
        if match is None:
            return _error(400, f"Error in the JQL Query: {body['jql']}")
        projects = {p.strip().strip('"') for p in match["projects"].split(",")}
        found = [i for i in self.issues.values() if i["key"].split("-")[0] in projects]
        if match["since"]:
            since = datetime.strptime(match["since"], "%Y-%m-%d %H:%M").replace(
                tzinfo=ZoneInfo(self.time_zone))
            found = [i for i in found
                     if datetime.fromisoformat(i["fields"]["updated"]) >= since]
        found.sort(key=lambda i: (i["fields"]["updated"], i["key"]))
        start = int(base64.b64decode(body["nextPageToken"])) if body.get("nextPageToken") else 0
        size = min(int(body.get("maxResults", 50)), 100)
        page_number = start // size + 1
        if self.broken_page == page_number:
            return _error(500, "Internal server error")
        chunk = found[start:start + size]
        wanted = set(body.get("fields", []))
        issues = [self._render(i, wanted, "changelog" in body.get("expand", "")) for i in chunk]
        more = start + size < len(found)
        answer: dict[str, Any] = {"issues": issues, "isLast": not more}
        if more:
            answer["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return web.json_response(answer)

    def _render(self, issue: dict[str, Any], wanted: set[str], changelog: bool) -> dict[str, Any]:
        fields = {k: v for k, v in issue["fields"].items() if k in wanted}
        comments = self.comments[issue["id"]]
        if "comment" in wanted:
            fields["comment"] = {"comments": comments[: self.inline_comments], "startAt": 0,
                                 "maxResults": self.inline_comments, "total": len(comments)}
        out = {"id": issue["id"], "key": issue["key"], "fields": fields}
        if changelog:
            histories = self.histories[issue["id"]]
            out["changelog"] = {"startAt": 0, "maxResults": self.inline_histories,
                                "total": len(histories),
                                "histories": histories[: self.inline_histories]}
        return out

    def _slice(self, request: web.Request, values: list[Any]) -> tuple[int, int, list[Any]]:
        start = int(request.query.get("startAt", 0))
        size = int(request.query.get("maxResults", 50))
        return start, size, values[start:start + size]

    async def _comments(self, request: web.Request) -> web.Response:
        values = self.comments.get(request.match_info["id"])
        if values is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        start, size, chunk = self._slice(request, values)
        return web.json_response({"startAt": start, "maxResults": size, "total": len(values),
                                  "comments": chunk})

    async def _changelog(self, request: web.Request) -> web.Response:
        values = self.histories.get(request.match_info["id"])
        if values is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        start, size, chunk = self._slice(request, values)
        return web.json_response({"startAt": start, "maxResults": size, "total": len(values),
                                  "isLast": start + size >= len(values), "values": chunk})
