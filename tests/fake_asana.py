"""A fake Asana speaking REST 1.0 as Asana documents it, for the Asana source tests.

Every body is ``{"data": ...}``; errors are ``{"errors": [{"message": ...}]}``. Listings (tasks of
a project, stories of a task, tags of a workspace) take ``limit`` (1 to 100) and page with an
opaque ``offset``, answering ``next_page: {offset, path, uri}`` or null. ``GET /tasks`` needs
``project``, honours ``modified_since`` (at or after) and answers in creation order, not by
modification. ``opt_fields`` is honoured for the top-level fields of tasks (``gid`` and
``resource_type`` always come). Bearer auth; 401, 404, 429 (with ``Retry-After``), 5xx and 400
for a write Asana would refuse. Writes move the task's ``modified_at`` on a fake clock and add
the stories Asana adds (comment_added, marked_complete, marked_incomplete).
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

WORKSPACE = "1100000000000001"
PRIORITY_FIELD = "1300000000000001"
PRIORITIES = {"Urgent": "1300000000000011", "High": "1300000000000012",
              "Medium": "1300000000000013", "Low": "1300000000000014"}
USERS = {"ann@example.com": {"gid": "1000000000000002", "name": "Ann", "email": "ann@example.com"},
         "bob@example.com": {"gid": "1000000000000003", "name": "Bob", "email": "bob@example.com"}}
_TASK_WRITES = {"name", "notes", "assignee", "due_on", "completed", "custom_fields"}


def asana_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"errors": [{"message": message,
                                          "help": "For more information on API status codes..."}]},
                             status=status, headers=headers)


class Refused(Exception):
    """A request Asana refuses: 400 by default, with Asana's message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class FakeAsana:
    token: str = "1/1000000000000001:a5ana-pat"
    me: dict[str, str] = dataclasses.field(default_factory=lambda: {
        "gid": "1000000000000001", "name": "Sync Bot", "email": "bot@example.com"})
    projects: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    stories: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    tags: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Answers to give instead of the real one, consumed in order: (status, headers).
    faults: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    # The same for one (method, path) only (the path after /api/1.0); these go first.
    faults_at: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = dataclasses.field(
        default_factory=dict)
    # A task whose stories answer 500 for as long as this is set: a sync dying half-way.
    broken_task: str | None = None
    # The clock writes stamp modified_at with; each write moves it a second.
    now: datetime = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
    log: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    queries: list[dict[str, str]] = dataclasses.field(default_factory=list)
    base_url: str = ""
    _next_gid: int = 1200000000000100

    def gid(self) -> str:
        self._next_gid += 1
        return str(self._next_gid)

    # --- building the account ------------------------------------------------------------
    def add_project(self, gid: str, name: str, *, priority_field: bool = True) -> None:
        settings = [{"gid": self.gid(), "custom_field": {
            "gid": PRIORITY_FIELD, "name": "Priority", "resource_subtype": "enum",
            "enum_options": [{"gid": g, "name": n, "enabled": True}
                             for n, g in PRIORITIES.items()]}}] if priority_field else []
        self.projects[gid] = {"gid": gid, "resource_type": "project", "name": name,
                              "workspace": {"gid": WORKSPACE, "name": "Acme"},
                              "custom_field_settings": settings}

    def tag(self, name: str) -> str:
        found = next((g for g, t in self.tags.items() if t["name"] == name), None)
        if found is None:
            found = self.gid()
            self.tags[found] = {"gid": found, "resource_type": "tag", "name": name}
        return found

    def add_task(self, project: str | tuple[str, ...], name: str, *, modified: datetime,
                 completed: bool = False, tags: tuple[str, ...] = (),
                 priority: str | None = "Medium", assignee: str | None = None,
                 comments: int = 0, moves: int = 0, parent: str | None = None,
                 due_on: str | None = None) -> str:
        """A task; ``moves`` complete/reopen stories alternate from created, ending on
        ``completed`` when it is odd and completed."""
        gid = self.gid()
        created = modified - timedelta(days=2)
        self.tasks[gid] = {
            "gid": gid, "resource_type": "task", "name": name, "notes": f"About {name}.",
            "completed": completed, "completed_at": asana_time(modified) if completed else None,
            "created_at": asana_time(created), "modified_at": asana_time(modified),
            "due_on": due_on, "due_at": None,
            "assignee": USERS[assignee] if assignee else None,
            "created_by": {"gid": "1000000000000009", "name": "Rita",
                           "email": "rita@example.com"},
            "tags": [self.tag(t) for t in tags], "priority": priority,
            "projects": [project] if isinstance(project, str) else list(project),
            "parent": parent, "dependencies": [], "dependents": []}
        self.stories[gid] = [self._story("added_to_project", None, created)]
        for n in range(comments):
            self.stories[gid].append(self._story("comment_added", f"c{n}",
                                                 created + timedelta(hours=n + 1)))
        for n in range(moves):
            subtype = "marked_complete" if n % 2 == 0 else "marked_incomplete"
            self.stories[gid].append(self._story(subtype, None, created + timedelta(minutes=n)))
        return gid

    def _story(self, subtype: str, text: str | None, at: datetime,
               by: dict[str, str] | None = None) -> dict[str, Any]:
        author = by or {"gid": "1000000000000008", "name": "Mover"}
        return {"gid": self.gid(), "resource_type": "story", "resource_subtype": subtype,
                "type": "comment" if subtype == "comment_added" else "system",
                "text": text if text is not None else subtype.replace("_", " "),
                "created_at": asana_time(at), "created_by": author}

    def touch(self, gid: str, *, at: datetime, name: str | None = None,
              completed: bool | None = None, comment: str | None = None) -> None:
        """A change made in Asana by someone else."""
        task = self.tasks[gid]
        if name is not None:
            task["name"] = name
        if completed is not None and completed != task["completed"]:
            self._complete(task, completed, at)
        if comment is not None:
            self.stories[gid].append(self._story("comment_added", comment, at))
        task["modified_at"] = asana_time(at)

    def _complete(self, task: dict[str, Any], completed: bool, at: datetime,
                  by: dict[str, str] | None = None) -> None:
        task["completed"] = completed
        task["completed_at"] = asana_time(at) if completed else None
        subtype = "marked_complete" if completed else "marked_incomplete"
        self.stories[task["gid"]].append(self._story(subtype, None, at, by))

    def _tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    # --- rendering -----------------------------------------------------------------------
    def _compact(self, gid: str) -> dict[str, Any]:
        return {"gid": gid, "resource_type": "task", "name": self.tasks[gid]["name"]}

    def render(self, task: dict[str, Any], opt_fields: str | None = None) -> dict[str, Any]:
        field = self.projects[task["projects"][0]]["custom_field_settings"]
        full = {
            **{k: v for k, v in task.items() if k not in ("priority", "projects", "parent",
                                                          "tags", "dependencies",
                                                          "dependents")},
            "tags": [self.tags[g] for g in task["tags"]],
            "projects": [{"gid": p, "resource_type": "project",
                          "name": self.projects[p]["name"]} for p in task["projects"]],
            "parent": self._compact(task["parent"]) if task["parent"] else None,
            "dependencies": [self._compact(g) for g in task["dependencies"]],
            "dependents": [self._compact(g) for g in task["dependents"]],
            "custom_fields": [{
                "gid": PRIORITY_FIELD, "name": "Priority", "resource_subtype": "enum",
                "enum_value": ({"gid": PRIORITIES[task["priority"]], "name": task["priority"]}
                               if task["priority"] else None)}] if field else [],
        }
        if not opt_fields:
            return full
        wanted = {f.split(".")[0] for f in opt_fields.split(",")} | {"gid", "resource_type"}
        return {k: v for k, v in full.items() if k in wanted}

    def _listing(self, request: web.Request, values: list[Any]) -> web.Response:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return _error(400, "limit: Value must be between 1 and 100")
        raw = request.query.get("offset")
        start = int(base64.urlsafe_b64decode(raw)) if raw else 0
        end = start + limit
        next_page = None
        if end < len(values):
            offset = base64.urlsafe_b64encode(str(end).encode()).decode()
            query = {**request.query, "offset": offset}
            path = request.rel_url.with_query(query).path_qs.removeprefix("/api/1.0")
            next_page = {"offset": offset, "path": path, "uri": f"{self.base_url}{path}"}
        return web.json_response({"data": values[start:end], "next_page": next_page})

    def charges(self) -> dict[str, int]:
        """What the requests so far cost against Asana's limits, which count requests."""
        return {"requests": len(self.log)}

    # --- the HTTP side --------------------------------------------------------------------
    def app(self) -> web.Application:
        api = web.Application(middlewares=[self._gate])
        api.router.add_get("/users/me", self._users_me)
        api.router.add_get("/projects/{gid}", self._project)
        api.router.add_get("/tasks", self._tasks)
        api.router.add_post("/tasks", self._create)
        api.router.add_get("/tasks/{gid}", self._task)
        api.router.add_put("/tasks/{gid}", self._update)
        api.router.add_get("/tasks/{gid}/stories", self._stories)
        api.router.add_post("/tasks/{gid}/stories", self._comment)
        api.router.add_post("/tasks/{gid}/{action}", self._task_action)
        api.router.add_get("/workspaces/{gid}/tags", self._tags)
        api.router.add_post("/workspaces/{gid}/tags", self._create_tag)
        app = web.Application()
        app.add_subapp("/api/1.0", api)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path.removeprefix("/api/1.0")
        self.log.append((request.method, path))
        self.queries.append(dict(request.query))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Not Authorized")
        if faults := self.faults_at.get((request.method, path)) or self.faults:
            status, headers = faults.pop(0)
            return _error(status, "You have made too many requests recently. Please, be chill."
                          if status == 429 else "Server Error", **headers)
        try:
            return await handler(request)
        except Refused as exc:
            return _error(exc.status, str(exc))

    def _get_task(self, request: web.Request) -> dict[str, Any]:
        task = self.tasks.get(request.match_info["gid"])
        if task is None:
            raise Refused(f"Unknown object: {request.match_info['gid']}", 404)
        return task

    async def _users_me(self, request: web.Request) -> web.Response:
        return web.json_response({"data": {**self.me, "resource_type": "user",
                                           "workspaces": [{"gid": WORKSPACE, "name": "Acme"}]}})

    async def _project(self, request: web.Request) -> web.Response:
        project = self.projects.get(request.match_info["gid"])
        if project is None:
            return _error(404, f"Unknown object: {request.match_info['gid']}")
        return web.json_response({"data": project})

    async def _tasks(self, request: web.Request) -> web.Response:
        project = request.query.get("project")
        if not project:
            return _error(400, "Must specify exactly one of project, tag, section, user task "
                               "list, or assignee + workspace")
        if project not in self.projects:
            return _error(404, f"project: Unknown object: {project}")
        found = [t for t in self.tasks.values() if project in t["projects"]]
        if since := request.query.get("modified_since"):
            at = datetime.fromisoformat(since)
            found = [t for t in found if datetime.fromisoformat(t["modified_at"]) >= at]
        opt_fields = request.query.get("opt_fields")
        return self._listing(request, [self.render(t, opt_fields) for t in found])

    async def _task(self, request: web.Request) -> web.Response:
        return web.json_response({"data": self.render(self._get_task(request),
                                                      request.query.get("opt_fields"))})

    async def _stories(self, request: web.Request) -> web.Response:
        task = self._get_task(request)
        if task["gid"] == self.broken_task:
            return _error(500, "Server Error")
        return self._listing(request, self.stories[task["gid"]])

    async def _data(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise Refused("Could not parse request data, invalid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise Refused("Request data must be a JSON object with a data property")
        data: dict[str, Any] = body["data"]
        return data

    def _user(self, value: str | None) -> dict[str, str] | None:
        if value is None:
            return None
        user = USERS.get(value) or (self.me if value in ("me", self.me["gid"]) else None)
        if user is None:
            raise Refused(f"assignee: Not a recognized ID: {value}")
        return user

    def _apply(self, task: dict[str, Any], data: dict[str, Any]) -> None:
        if unknown := set(data) - _TASK_WRITES:
            raise Refused(f"{sorted(unknown)[0]}: Unknown property")
        if "name" in data:
            if not str(data["name"]).strip():
                raise Refused("name: Cannot be empty")
            task["name"] = data["name"]
        if "notes" in data:
            task["notes"] = data["notes"]
        if "assignee" in data:
            task["assignee"] = self._user(data["assignee"])
        if "due_on" in data:
            if data["due_on"] is not None:
                try:
                    datetime.strptime(data["due_on"], "%Y-%m-%d")
                except (TypeError, ValueError):
                    raise Refused("due_on: Invalid date string") from None
            task["due_on"] = data["due_on"]
        for field, option in (data.get("custom_fields") or {}).items():
            names = {g: n for n, g in PRIORITIES.items()}
            settings = self.projects[task["projects"][0]]["custom_field_settings"]
            if field != PRIORITY_FIELD or not settings or (option and option not in names):
                raise Refused(f"custom_fields: {field}: Not a valid enum option: {option}")
            task["priority"] = names.get(option) if option else None
        if "completed" in data and data["completed"] != task["completed"]:
            self._complete(task, bool(data["completed"]), self.now, self.me)
        task["modified_at"] = asana_time(self._tick())

    async def _create(self, request: web.Request) -> web.Response:
        data = await self._data(request)
        projects = data.pop("projects", None)
        parent = data.pop("parent", None)
        tags = data.pop("tags", [])
        if not projects:
            raise Refused("You should specify one of workspace, parent, projects")
        if missing := [p for p in projects if p not in self.projects]:
            raise Refused(f"projects: Not a recognized ID: {missing[0]}")
        if parent is not None and parent not in self.tasks:
            raise Refused(f"parent: Not a recognized ID: {parent}")
        if missing := [t for t in tags if t not in self.tags]:
            raise Refused(f"tags: Not a recognized ID: {missing[0]}")
        gid = self.gid()
        created = asana_time(self.now)
        task = {"gid": gid, "resource_type": "task", "name": "", "notes": "",
                "completed": False, "completed_at": None, "created_at": created,
                "modified_at": created, "due_on": None, "due_at": None, "assignee": None,
                "created_by": {"gid": self.me["gid"], "name": self.me["name"],
                               "email": self.me["email"]},
                "tags": list(tags), "priority": None, "projects": list(projects),
                "parent": parent, "dependencies": [], "dependents": []}
        self._apply(task, data)
        self.tasks[gid] = task
        self.stories[gid] = [self._story("added_to_project", None, self.now, self.me)]
        return web.json_response({"data": self.render(task)}, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        task = self._get_task(request)
        self._apply(task, await self._data(request))
        return web.json_response({"data": self.render(task)})

    async def _comment(self, request: web.Request) -> web.Response:
        task = self._get_task(request)
        data = await self._data(request)
        if not str(data.get("text") or data.get("html_text") or "").strip():
            raise Refused("text: Missing input")
        story = self._story("comment_added", data["text"], self._tick(), self.me)
        self.stories[task["gid"]].append(story)
        task["modified_at"] = story["created_at"]
        return web.json_response({"data": story}, status=201)

    async def _task_action(self, request: web.Request) -> web.Response:
        task = self._get_task(request)
        data = await self._data(request)
        match request.match_info["action"]:
            case "addDependencies":
                blockers = data.get("dependencies") or []
                if missing := [g for g in blockers if g not in self.tasks]:
                    raise Refused(f"dependencies: Not a recognized ID: {missing[0]}")
                for blocker in blockers:
                    if blocker not in task["dependencies"]:
                        task["dependencies"].append(blocker)
                        self.tasks[blocker]["dependents"].append(task["gid"])
                        self.tasks[blocker]["modified_at"] = asana_time(self.now)
            case "addTag" | "removeTag" as action:
                if data.get("tag") not in self.tags:
                    raise Refused(f"tag: Not a recognized ID: {data.get('tag')}")
                if action == "addTag" and data["tag"] not in task["tags"]:
                    task["tags"].append(data["tag"])
                elif action == "removeTag" and data["tag"] in task["tags"]:
                    task["tags"].remove(data["tag"])
            case "setParent":
                if data.get("parent") is not None and data["parent"] not in self.tasks:
                    raise Refused(f"parent: Not a recognized ID: {data['parent']}")
                task["parent"] = data.get("parent")
            case action:
                raise Refused(f"No matching route for request: {action}", 404)
        task["modified_at"] = asana_time(self._tick())
        return web.json_response({"data": {}})

    async def _tags(self, request: web.Request) -> web.Response:
        return self._listing(request, list(self.tags.values()))

    async def _create_tag(self, request: web.Request) -> web.Response:
        name = str((await self._data(request)).get("name") or "").strip()
        if not name:
            raise Refused("name: Missing input")
        gid = self.gid()
        self.tags[gid] = {"gid": gid, "resource_type": "tag", "name": name}
        return web.json_response({"data": self.tags[gid]}, status=201)
