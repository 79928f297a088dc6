"""A fake GitHub REST API (version 2022-11-28) and GraphQL API speaking GitHub's wire format, for
the source tests.

Paths and shapes: ``GET /user``, ``GET /repos/{owner}/{repo}``, ``GET|POST
/repos/{owner}/{repo}/issues`` (the list takes ``state``, ``sort=updated``, ``direction``,
``since`` (inclusive), ``per_page`` (at most 100, 30 by default) and ``page``, and answers with a
``Link`` header of ``first``/``prev``/``next``/``last``; pull requests share the issues' numbers
and list, marked by ``pull_request``), ``GET|PATCH .../issues/{number}``, ``GET|POST
.../issues/{number}/comments`` and ``GET .../issues/{number}/events``, paginated alike. Bearer auth:
anything else is 401 ``{"message": "Bad credentials", "documentation_url": ...}``; unknown things
are 404 ``{"message": "Not Found"}``; bad writes are 422 ``{"message": "Validation Failed",
"errors": [...]}``; writes to a read-only repository are 403. Faults stand in for the real thing,
for the next request or for one method and path: the primary rate limit (403 or 429 with
``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset``), a secondary one (403 or 429 saying
"secondary rate limit", with or without ``retry-after``), 5xx; a fault of status 200 is how
GraphQL refuses for rate (``errors`` of type ``RATE_LIMITED`` with ``x-ratelimit-remaining: 0``,
else naming a secondary rate limit).

The issue list is computed afresh for every request, as GitHub's is: an issue changed between two
page requests (``before_list`` hooks do that) leaves its place for the end of a list sorted by
update, and every issue after its old place moves one place earlier.

``POST /graphql`` answers the part of GitHub's GraphQL schema in ``fake_github_graphql`` from the
same data (a repository's ``issues`` and ``issue``, ``node``, an issue's fields, labels,
assignees, milestone, issue type and its ``timelineItems`` of comments, closed and reopened
events; ``rateLimit``), counted by the same ``list_requests``, ``before_list`` and
``broken_list``. Every query is charged the points GitHub would charge (``points``), and with
``graphql_budget`` set, a query past it is refused as GitHub refuses one: 200, a
``RATE_LIMITED`` error and ``x-ratelimit-remaining: 0``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fake_github_graphql import (
    TIMELINE_TYPES,
    GraphQLError,
    Obj,
    Resolver,
    connection,
    cost_of,
    execute,
    iso,
    parse,
    variables_of,
)

DOCS = "https://docs.github.com/rest"
API_VERSION = "2022-11-28"


def gh_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, *, errors: list[dict[str, Any]] | None = None,
           **headers: str) -> web.Response:
    body: dict[str, Any] = {"message": message, "documentation_url": DOCS}
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status, headers=headers)


def _fault_message(status: int, headers: dict[str, str]) -> str:
    # GitHub's words: a 403 or 429 with no requests remaining is the primary rate limit; any
    # other is a secondary one.
    if status in (403, 429):
        return ("API rate limit exceeded for user ID 1."
                if headers.get("x-ratelimit-remaining") == "0" else
                "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                "try again.")
    return "Server Error"


def _user(login: str) -> dict[str, Any]:
    return {"login": login, "id": sum(map(ord, login)), "type": "User",
            "html_url": f"https://github.com/{login}"}


@dataclasses.dataclass
class FakeGitHub:
    token: str = "ghp_fake0123456789"
    login: str = "sync-bot"
    users: tuple[str, ...] = ("sync-bot", "alice", "bob")
    # owner/repo -> has_issues
    repos: dict[str, bool] = dataclasses.field(default_factory=dict)
    read_only: set[str] = dataclasses.field(default_factory=set)
    # owner/repo -> number -> issue or pull request, as GitHub renders it
    issues: dict[str, dict[int, dict[str, Any]]] = dataclasses.field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    events: dict[int, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # Answers to give instead of the real one, consumed in order: (status, headers).
    faults: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    # The same for one (method, path) only; these go first.
    faults_at: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = dataclasses.field(
        default_factory=dict)
    # (repo, n): that repository's issue list fails with 500 from its n-th request on, for as
    # long as this is set.
    broken_list: tuple[str, int] | None = None
    # n -> what to do just before answering the n-th issue list request (of any repository).
    before_list: dict[int, Callable[[], Any]] = dataclasses.field(default_factory=dict)
    # Issue list requests answered or refused so far, per repository.
    list_requests: Counter[str] = dataclasses.field(default_factory=Counter)
    log: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    accepts: set[str] = dataclasses.field(default_factory=set)
    clock: datetime = datetime(2025, 6, 1, tzinfo=UTC)
    # GraphQL points charged so far, as GitHub computes them (see charges), and the queries.
    points: int = 0
    graphql_queries: int = 0
    # The GraphQL points a token may spend (an hour); None: no limit.
    graphql_budget: int | None = None
    # Schema fields this server lacks, as "Type.field" (an older GitHub Enterprise Server's).
    graphql_without: frozenset[str] = frozenset()
    # When the GraphQL budget is full again (epoch seconds); None: an hour from each answer.
    graphql_reset: int | None = None
    # The parsed GraphQL queries answered, in order: (points, nodes, variables).
    graphql_log: list[tuple[int, int, dict[str, Any]]] = dataclasses.field(default_factory=list)
    _next_id: int = 5000

    # --- building the site ---------------------------------------------------------------
    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def tick(self) -> datetime:
        """The time of a write made through the API: a second after the last one."""
        self.clock += timedelta(seconds=1)
        return self.clock

    def add_issue(self, repo: str, *, title: str, updated: datetime, state: str = "open",
                  state_reason: str | None = None, labels: tuple[str, ...] = (),
                  assignees: tuple[str, ...] = (), milestone_due: datetime | None = None,
                  comments: int = 0, reopens: int = 0, pull_request: bool = False,
                  issue_type: str | None = None) -> dict[str, Any]:
        """An issue (or pull request) created a day before ``updated``, closed and reopened
        ``reopens`` times, then closed when ``state`` is closed, a minute apart."""
        self.repos.setdefault(repo, True)
        numbers = self.issues.setdefault(repo, {})
        number = len(numbers) + 1
        created = updated - timedelta(days=1)
        issue_id = self._id()
        issue: dict[str, Any] = {
            "id": issue_id, "node_id": f"I_kw{issue_id}",
            "url": f"https://api.github.com/repos/{repo}/issues/{number}",
            "html_url": f"https://github.com/{repo}/issues/{number}", "number": number,
            "state": "open", "state_reason": None, "title": title, "body": f"About {title}.",
            "user": _user("rita"), "labels": [], "assignee": None, "assignees": [],
            "milestone": None, "locked": False, "comments": 0, "created_at": gh_time(created),
            "updated_at": gh_time(updated), "closed_at": None, "author_association": "MEMBER",
            "type": {"id": 1, "name": issue_type} if issue_type else None,
        }
        self._set_labels(issue, list(labels))
        self._set_assignees(issue, list(assignees))
        if milestone_due is not None:
            issue["milestone"] = {"number": 1, "title": "v1", "state": "open",
                                  "due_on": gh_time(milestone_due)}
        if pull_request:
            issue["pull_request"] = {"url": f"https://api.github.com/repos/{repo}/pulls/{number}",
                                     "merged_at": None}
        numbers[number] = issue
        self.comments[issue_id] = []
        self.events[issue_id] = []
        for n in range(comments):
            self._comment(issue, f"c{n}", created + timedelta(hours=n + 1), bump=False)
        steps = [("closed", "completed"), ("open", "reopened")] * reopens
        if state == "closed":
            steps.append(("closed", state_reason))
        for n, (target, reason) in enumerate(steps):
            self._set_state(issue, target, reason, created + timedelta(minutes=n + 1))
        issue["updated_at"] = gh_time(updated)
        return issue

    def _set_labels(self, issue: dict[str, Any], names: list[str]) -> None:
        issue["labels"] = [{"id": sum(map(ord, n)), "name": n, "color": "ededed",
                            "default": False, "description": None} for n in dict.fromkeys(names)]

    def _set_assignees(self, issue: dict[str, Any], logins: list[str]) -> None:
        issue["assignees"] = [_user(login) for login in logins]
        issue["assignee"] = issue["assignees"][0] if logins else None

    def _set_state(self, issue: dict[str, Any], state: str, reason: str | None,
                   at: datetime) -> None:
        if state == issue["state"] and reason == issue["state_reason"]:
            return
        event = "closed" if state == "closed" else "reopened"
        if state != issue["state"]:
            self.events[issue["id"]].append({
                "id": self._id(), "actor": _user("mover"), "event": event, "commit_id": None,
                "created_at": gh_time(at), "state_reason": reason})
        issue["state"], issue["state_reason"] = state, reason
        issue["closed_at"] = gh_time(at) if state == "closed" else None
        issue["updated_at"] = gh_time(at)

    def _comment(self, issue: dict[str, Any], body: str, at: datetime, *, author: str = "carl",
                 bump: bool = True) -> dict[str, Any]:
        comment = {"id": self._id(), "user": _user(author), "body": body,
                   "created_at": gh_time(at), "updated_at": gh_time(at),
                   "author_association": "MEMBER"}
        self.comments[issue["id"]].append(comment)
        issue["comments"] += 1
        if bump:
            issue["updated_at"] = gh_time(at)
        return comment

    def issue(self, repo: str, number: int) -> dict[str, Any]:
        return self.issues[repo][number]

    def update_issue(self, repo: str, number: int, *, at: datetime, state: str | None = None,
                     state_reason: str | None = None, title: str | None = None,
                     comment: str | None = None) -> None:
        issue = self.issue(repo, number)
        if state is not None:
            self._set_state(issue, state, state_reason, at)
        if title is not None:
            issue["title"] = title
        if comment is not None:
            self._comment(issue, comment, at)
        issue["updated_at"] = gh_time(at)

    def charges(self) -> dict[str, int]:
        """What the requests so far cost a token against GitHub's primary limits, which are two
        budgets of 5,000 an hour: REST requests (any, retries included) and GraphQL points."""
        rest = sum(1 for _, path in self.log if not path.endswith("/graphql"))
        return {"requests": len(self.log), "rest": rest, "graphql_points": self.points}

    # --- the HTTP side --------------------------------------------------------------------
    def app(self, *, enterprise: bool = False) -> web.Application:
        """The API at the root, as api.github.com; ``enterprise``: REST under ``/api/v3`` and
        GraphQL at ``/api/graphql``, as a GitHub Enterprise Server."""
        app = web.Application(middlewares=[self._gate])
        repo = ("/api/v3" if enterprise else "") + "/repos/{owner}/{repo}"
        app.router.add_get(("/api/v3" if enterprise else "") + "/user", self._me)
        app.router.add_get(repo, self._repo)
        app.router.add_get(f"{repo}/issues", self._list)
        app.router.add_post(f"{repo}/issues", self._create)
        app.router.add_get(f"{repo}/issues/{{number}}", self._get)
        app.router.add_patch(f"{repo}/issues/{{number}}", self._patch)
        app.router.add_get(f"{repo}/issues/{{number}}/comments", self._comments)
        app.router.add_post(f"{repo}/issues/{{number}}/comments", self._add_comment)
        app.router.add_get(f"{repo}/issues/{{number}}/events", self._events)
        app.router.add_post("/api/graphql" if enterprise else "/graphql", self._graphql)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.log.append((request.method, request.path))
        self.accepts.add(request.headers.get("Accept", ""))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Bad credentials")
        if request.headers.get("X-GitHub-Api-Version", API_VERSION) != API_VERSION:
            return _error(400, "Unsupported 'X-GitHub-Api-Version' header")
        if faults := self.faults_at.get((request.method, request.path)) or self.faults:
            status, headers = faults.pop(0)
            if status == 200:  # how GraphQL refuses for rate
                primary = headers.get("x-ratelimit-remaining") == "0"
                return web.json_response({"errors": [{
                    "message": _fault_message(403, headers),
                    **({"type": "RATE_LIMITED"} if primary else {})}]}, headers=headers)
            return _error(status, _fault_message(status, headers), **headers)
        if "owner" in request.match_info:
            name = f"{request.match_info['owner']}/{request.match_info['repo']}"
            if name not in self.repos:
                return _error(404, "Not Found")
            if request.method != "GET" and name in self.read_only:
                return _error(403, "Resource not accessible by personal access token")
        return await handler(request)

    @staticmethod
    def _name(request: web.Request) -> str:
        return f"{request.match_info['owner']}/{request.match_info['repo']}"

    def _target(self, request: web.Request) -> dict[str, Any] | None:
        number = request.match_info["number"]
        return self.issues.get(self._name(request), {}).get(int(number)) if number.isdigit() \
            else None

    def _paginate(self, request: web.Request, values: list[Any]) -> web.Response:
        per_page = min(int(request.query.get("per_page", 30)), 100)
        page = int(request.query.get("page", 1))
        last = max(1, -(-len(values) // per_page))
        rels: list[tuple[int, str]] = []
        if page > 1:
            rels += [(page - 1, "prev"), (1, "first")]
        if page < last:
            rels += [(page + 1, "next"), (last, "last")]
        url = request.url
        links = ", ".join(f'<{url.update_query(page=p)}>; rel="{rel}"' for p, rel in rels)
        return web.json_response(values[(page - 1) * per_page:page * per_page],
                                 headers={"Link": links} if links else None)

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response(_user(self.login))

    async def _repo(self, request: web.Request) -> web.Response:
        name = self._name(request)
        return web.json_response({"id": sum(map(ord, name)), "full_name": name,
                                  "private": True, "has_issues": self.repos[name]})

    def _listed(self, name: str) -> bool:
        """Count a listing of ``name``'s issues and run its hook; False when it is broken."""
        self.list_requests[name] += 1
        if (hook := self.before_list.pop(self.list_requests.total(), None)) is not None:
            hook()
        return not (self.broken_list is not None and self.broken_list[0] == name
                    and self.list_requests[name] >= self.broken_list[1])

    async def _list(self, request: web.Request) -> web.Response:
        name, query = self._name(request), request.query
        if not self._listed(name):
            return _error(500, "Server Error")
        found = list(self.issues.get(name, {}).values())
        if query.get("state", "open") != "all":
            found = [i for i in found if i["state"] == query.get("state", "open")]
        if "since" in query:
            since = datetime.fromisoformat(query["since"])
            found = [i for i in found if datetime.fromisoformat(i["updated_at"]) >= since]
        key = "updated_at" if query.get("sort") == "updated" else "created_at"
        found.sort(key=lambda i: (i[key], i["number"]),
                   reverse=query.get("direction", "desc") == "desc")
        return self._paginate(request, found)

    def _invalid(self, body: dict[str, Any], *, creating: bool) -> web.Response | None:
        """GitHub's 422 for what the fake checks in a write: a missing title, an unknown
        assignee."""
        errors: list[dict[str, Any]] = []
        if (creating or "title" in body) and not str(body.get("title") or "").strip():
            errors.append({"resource": "Issue", "code": "missing_field", "field": "title"})
        errors += [{"value": login, "resource": "Issue", "field": "assignees", "code": "invalid"}
                   for login in body.get("assignees") or [] if login not in self.users]
        return _error(422, "Validation Failed", errors=errors) if errors else None

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (refused := self._invalid(body, creating=True)) is not None:
            return refused
        at = self.tick()
        issue = self.add_issue(self._name(request), title=body["title"], updated=at,
                               labels=tuple(body.get("labels") or ()),
                               assignees=tuple(body.get("assignees") or ()))
        issue["body"], issue["created_at"] = body.get("body"), gh_time(at)
        return web.json_response(issue, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        issue = self._target(request)
        return web.json_response(issue) if issue else _error(404, "Not Found")

    async def _patch(self, request: web.Request) -> web.Response:
        issue = self._target(request)
        if issue is None:
            return _error(404, "Not Found")
        body = await request.json()
        if (refused := self._invalid(body, creating=False)) is not None:
            return refused
        at = self.tick()
        if "state" in body:
            self._set_state(issue, body["state"], body.get("state_reason"), at)
        for field in ("title", "body"):
            if field in body:
                issue[field] = body[field]
        if "labels" in body:
            self._set_labels(issue, list(body["labels"]))
        if "assignees" in body:
            self._set_assignees(issue, list(body["assignees"]))
        issue["updated_at"] = gh_time(at)
        return web.json_response(issue)

    async def _comments(self, request: web.Request) -> web.Response:
        issue = self._target(request)
        return self._paginate(request, self.comments[issue["id"]]) if issue else _error(
            404, "Not Found")

    async def _add_comment(self, request: web.Request) -> web.Response:
        issue = self._target(request)
        if issue is None:
            return _error(404, "Not Found")
        body = await request.json()
        if not str(body.get("body") or "").strip():
            return _error(422, "Validation Failed", errors=[
                {"resource": "IssueComment", "code": "missing_field", "field": "body"}])
        return web.json_response(self._comment(issue, body["body"], self.tick(),
                                               author=self.login), status=201)

    async def _events(self, request: web.Request) -> web.Response:
        issue = self._target(request)
        return self._paginate(request, self.events[issue["id"]]) if issue else _error(
            404, "Not Found")

    async def _graphql(self, request: web.Request) -> web.Response:
        """``POST /graphql``: the query checked and charged as GitHub does, then answered."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Problems parsing JSON")
        text = body.get("query") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return web.json_response({"errors": [{"message": "A query attribute must be specified "
                                                             "and must be a string."}]})
        limit = self.graphql_budget or 5000
        reset = self.graphql_reset or int(time.time()) + 3600
        headers = {"x-ratelimit-limit": str(limit), "x-ratelimit-resource": "graphql",
                   "x-ratelimit-reset": str(reset)}
        try:
            query = parse(text)
            variables = variables_of(query, body.get("variables"))
            cost, nodes = cost_of(query, variables, without=self.graphql_without)
        except GraphQLError as exc:
            return web.json_response({"errors": [exc.entry]}, headers=headers)
        if self.graphql_budget is not None and self.points + cost > self.graphql_budget:
            return web.json_response(
                {"errors": [{"type": "RATE_LIMITED",
                             "message": "API rate limit exceeded for user ID 1."}]},
                headers={**headers, "x-ratelimit-remaining": "0",
                         "x-ratelimit-used": str(self.points)})
        self.points += cost
        self.graphql_queries += 1
        self.graphql_log.append((cost, nodes, dict(variables)))
        headers |= {"x-ratelimit-remaining": str(max(0, limit - self.points)),
                    "x-ratelimit-used": str(self.points)}
        try:
            data, errors = execute(query, variables, _GraphQL(self, cost, nodes).resolvers(),
                                   Obj("Query", None))
        except _Broken:
            return _error(500, "Server Error")
        return web.json_response({"data": data, **({"errors": errors} if errors else {})},
                                 headers=headers)


class _Broken(Exception):
    """A listing ``broken_list`` fails: the whole GraphQL request answers 500."""


class _GraphQL:
    """The resolvers of the fake's GraphQL schema over a FakeGitHub's data."""

    def __init__(self, fake: FakeGitHub, cost: int, nodes: int) -> None:
        self.fake, self.cost, self.nodes = fake, cost, nodes

    def resolvers(self) -> dict[str, dict[str, Resolver]]:
        issue = {
            "id": lambda o, a: o.data["node_id"],
            "databaseId": lambda o, a: o.data["id"],
            "fullDatabaseId": lambda o, a: str(o.data["id"]),
            "body": lambda o, a: o.data.get("body") or "",
            "state": lambda o, a: o.data["state"].upper(),
            "stateReason": lambda o, a: (o.data.get("state_reason") or "").upper() or None,
            "createdAt": lambda o, a: o.data["created_at"],
            "updatedAt": lambda o, a: o.data["updated_at"],
            "closedAt": lambda o, a: o.data.get("closed_at"),
            "url": lambda o, a: o.data["html_url"],
            "author": lambda o, a: _actor(o.data.get("user")),
            "milestone": lambda o, a: Obj("Milestone", o.data["milestone"])
            if o.data.get("milestone") else None,
            "issueType": lambda o, a: Obj("IssueType", o.data["type"])
            if o.data.get("type") else None,
            "labels": lambda o, a: connection([Obj("Label", x) for x in o.data["labels"]], a),
            "assignees": lambda o, a: connection([Obj("User", x) for x in o.data["assignees"]],
                                                 a),
            "comments": lambda o, a: connection(
                [Obj("IssueComment", c) for c in self.fake.comments[o.data["id"]]], a),
            "timelineItems": self._timeline,
        }
        comment = {
            "id": lambda o, a: f"IC_kw{o.data['id']}",
            "databaseId": lambda o, a: o.data["id"],
            "fullDatabaseId": lambda o, a: str(o.data["id"]),
            "body": lambda o, a: o.data.get("body") or "",
            "createdAt": lambda o, a: o.data["created_at"],
            "updatedAt": lambda o, a: o.data["updated_at"],
            "author": lambda o, a: _actor(o.data.get("user")),
            "url": lambda o, a: f"https://github.com/issue-comment/{o.data['id']}",
        }
        event = {
            "id": lambda o, a: f"E_kw{o.data['id']}",
            "createdAt": lambda o, a: o.data["created_at"],
            "stateReason": lambda o, a: (o.data.get("state_reason") or "").upper() or None,
            "actor": lambda o, a: _actor(o.data.get("actor")),
        }
        return {
            "Query": {"repository": self._repository, "node": self._node,
                      "rateLimit": self._rate_limit,
                      "viewer": lambda o, a: Obj("User", _user(self.fake.login))},
            "Repository": {"id": lambda o, a: f"R_kw{sum(map(ord, o.data))}",
                           "name": lambda o, a: o.data.split("/")[1],
                           "nameWithOwner": lambda o, a: o.data,
                           "hasIssuesEnabled": lambda o, a: self.fake.repos[o.data],
                           "issue": self._issue, "issues": self._issues},
            "Issue": issue, "IssueComment": comment, "ClosedEvent": event, "ReopenedEvent": event,
            "Milestone": {"dueOn": lambda o, a: o.data.get("due_on"),
                          "id": lambda o, a: f"MI_kw{o.data['number']}"},
        }

    def _repository(self, obj: Obj, args: dict[str, Any]) -> Obj:
        name = f"{args['owner']}/{args['name']}"
        if name not in self.fake.repos:
            raise GraphQLError(f"Could not resolve to a Repository with the name '{name}'.",
                               type="NOT_FOUND")
        return Obj("Repository", name)

    def _node(self, obj: Obj, args: dict[str, Any]) -> Obj:
        found = next((i for repo in self.fake.issues.values() for i in repo.values()
                      if i["node_id"] == args["id"] and "pull_request" not in i), None)
        if found is None:
            raise GraphQLError(f"Could not resolve to a node with the global id of "
                               f"'{args['id']}'", type="NOT_FOUND")
        return Obj("Issue", found)

    def _rate_limit(self, obj: Obj, args: dict[str, Any]) -> Obj:
        limit = self.fake.graphql_budget or 5000
        return Obj("RateLimit", {
            "cost": self.cost, "limit": limit, "used": self.fake.points,
            "remaining": max(0, limit - self.fake.points), "nodeCount": self.nodes,
            "resetAt": gh_time(datetime.now(UTC) + timedelta(hours=1))})

    def _issue(self, obj: Obj, args: dict[str, Any]) -> Obj:
        issue = self.fake.issues.get(obj.data, {}).get(args["number"])
        if issue is None or "pull_request" in issue:
            raise GraphQLError(f"Could not resolve to an Issue with the number of "
                               f"{args['number']}.", type="NOT_FOUND")
        return Obj("Issue", issue)

    def _issues(self, obj: Obj, args: dict[str, Any]) -> Obj:
        if not self.fake._listed(obj.data):
            raise _Broken
        found = [i for i in self.fake.issues.get(obj.data, {}).values()
                 if "pull_request" not in i]
        filters = args.get("filterBy") or {}
        if states := filters.get("states") or args.get("states"):
            found = [i for i in found if i["state"].upper() in states]
        if since := iso(filters.get("since")):
            found = [i for i in found if iso(i["updated_at"]) >= since]  # type: ignore[operator]
        order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "ASC"}
        key = {"UPDATED_AT": "updated_at", "CREATED_AT": "created_at",
               "COMMENTS": "comments"}[order["field"]]
        found.sort(key=lambda i: (i[key], i["number"]), reverse=order["direction"] == "DESC")
        return connection([Obj("Issue", i) for i in found], args)

    def _timeline(self, obj: Obj, args: dict[str, Any]) -> Obj:
        issue = obj.data
        items = [Obj("IssueComment", c) for c in self.fake.comments[issue["id"]]]
        items += [Obj("ClosedEvent" if e["event"] == "closed" else "ReopenedEvent", e)
                  for e in self.fake.events[issue["id"]] if e["event"] in ("closed", "reopened")]
        items.sort(key=lambda o: (o.data["created_at"], o.data["id"]))
        if (wanted := args.get("itemTypes")) is not None:
            kinds = {TIMELINE_TYPES.get(t) for t in wanted}
            items = [o for o in items if o.type in kinds]
        if since := iso(args.get("since")):
            items = [o for o in items if iso(o.data["created_at"]) >= since]  # type: ignore[operator]
        return connection(items[args.get("skip") or 0:], args)


def _actor(user: dict[str, Any] | None) -> Obj | None:
    return Obj("User", user) if user else None
