"""Asana (REST 1.0): project task listings and stories, normalised to the store; task writes.

Wire shapes followed (developers.asana.com); every body is ``{"data": ...}``:

* ``GET /users/me``; ``GET /projects/{gid}`` with its workspace and custom field settings.
* ``GET /tasks?project=&limit=&opt_fields=&modified_since=`` and ``GET /tasks/{gid}/stories``,
  paginated by ``offset`` (the answer's ``next_page.offset``; ``next_page`` is null at the end).
  A task listing is NOT ordered by modification, so :meth:`AsanaAdapter.pages` reads the whole
  delta first and yields it sorted by ``(modified_at, gid)``, as the sync's cursor requires.
* Writes: ``POST /tasks``, ``PUT /tasks/{gid}``, ``POST /tasks/{gid}/stories``,
  ``/addDependencies``, ``/addTag``, ``/removeTag``, ``/setParent``; tags by name through
  ``GET``/``POST /workspaces/{gid}/tags``.

Keys: Asana tasks have no numbers, so the adapter hands them out. The store's keys of the
source's tasks come in through :meth:`AsanaAdapter.use_keys` (a sync and a create need them; a
write to a known task learns its key from its :class:`Ref`). A task keeps its number for good; a
new task takes its project's next free number when it is yielded, so a number given to an item
that is never committed (a sync dying) is simply given again. A task in several mirrored projects
is one item, in the first project of the ``projects`` map it belongs to; moved to another mirrored
project it is renumbered there, as a Jira issue moved between projects is. A subtask yielded
before its parent is yielded again with the parent's key; if the sync dies in between, it has no
parent key until it next changes.

Mappings (defaults; an instance's ``priorities`` and ``types`` config override by name):

* status: completed → Completed (done), else Open (todo); stories ``marked_complete`` and
  ``marked_incomplete`` are the transitions, ``comment_added`` stories the comments.
* priority: the task's enum custom field named Priority: Urgent/Critical/Highest → critical,
  High → high, Medium → medium, Low → low, Lowest/None → none; no value → none; an unknown
  name → medium. Written through the same field: an explicit change in a project without the
  field is refused (``unsupported``); a create there goes ahead without it, and the answer then
  says none, which is what the store records.
* type: a subtask (a task with a parent) → subtask; else the first tag among bug/defect → bug,
  feature/enhancement/improvement → feature, epic, story → story; else task. A create tags the
  task with its type (not task or subtask), so reading it back gives the same type.
* labels: the tag names (type tags included); assignee: email, else name; reporter: the
  creator; due: ``due_at``, else ``due_on`` at midnight UTC; resolved: ``completed_at``;
  description: ``notes``; links: dependencies as "blocks", carried by both tasks.
* Asana counts a new story as a modification of its task (``modified_since``), so a new
  comment brings its task into the delta; an edited comment keeps its creation time (stories
  carry no edit time).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .base import (
    PRIORITIES,
    TYPES,
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

__all__ = ["ADAPTER", "AsanaAdapter", "priority_for", "type_for"]

PROJECT_GID = re.compile(r"^[1-9][0-9]{0,29}$")
OPEN, COMPLETED = "Open", "Completed"
TASK_FIELDS = ",".join((
    "name", "notes", "completed", "completed_at", "created_at", "modified_at", "due_on",
    "due_at", "assignee.name", "assignee.email", "created_by.name", "created_by.email",
    "tags.name", "custom_fields.name", "custom_fields.enum_value.name", "projects.name",
    "parent.name", "dependencies.name", "dependents.name"))
STORY_FIELDS = "resource_subtype,text,created_at,created_by.name,created_by.email"
PROJECT_FIELDS = ",".join((
    "name", "workspace.name", "custom_field_settings.custom_field.name",
    "custom_field_settings.custom_field.resource_subtype",
    "custom_field_settings.custom_field.enum_options.name",
    "custom_field_settings.custom_field.enum_options.enabled"))

_PRIORITY = {"urgent": "critical", "critical": "critical", "highest": "critical",
             "high": "high", "medium": "medium", "low": "low", "lowest": "none", "none": "none"}
_TYPE = {"bug": "bug", "defect": "bug", "feature": "feature", "enhancement": "feature",
         "improvement": "feature", "epic": "epic", "story": "story", "user story": "story"}
_MOVES = {"marked_complete": (OPEN, COMPLETED), "marked_incomplete": (COMPLETED, OPEN)}
_CATEGORY = {OPEN: "todo", COMPLETED: "done"}


def priority_for(name: str | None, *, overrides: Mapping[str, str] | None = None) -> str:
    if not name:
        return "none"
    lowered = name.strip().lower()
    return (overrides or {}).get(lowered) or _PRIORITY.get(lowered, "medium")


def type_for(tags: Iterable[str], *, subtask: bool = False,
             overrides: Mapping[str, str] | None = None) -> str:
    if subtask:
        return "subtask"
    table = {**_TYPE, **(overrides or {})}
    return next((table[t.strip().lower()] for t in tags if t.strip().lower() in table), "task")


def _person(user: Mapping[str, Any] | None) -> str | None:
    return (user.get("email") or user.get("name") or user.get("gid")) if user else None


def _when(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _due(task: Mapping[str, Any]) -> datetime | None:
    if task.get("due_at"):
        return _when(task["due_at"])
    due = task.get("due_on")
    return datetime.combine(date.fromisoformat(due), datetime.min.time(), UTC) if due else None


def _priority_name(task: Mapping[str, Any]) -> str | None:
    for field in task.get("custom_fields") or []:
        if (field.get("name") or "").strip().lower() == "priority":
            return (field.get("enum_value") or {}).get("name")
    return None


def _comment(story: Mapping[str, Any]) -> Comment:
    created = _when(story["created_at"])
    return Comment(str(story["gid"]), _person(story.get("created_by")),
                   (story.get("text") or "")[:100_000], created, created)


def _gids(tasks: Iterable[Mapping[str, Any]] | None) -> list[str]:
    return [str(t["gid"]) for t in tasks or []]


class AsanaAdapter(Adapter):
    """One Asana account, the projects in ``projects`` (project gid → local key)."""

    kind = "asana"
    overrides = {"priorities": PRIORITIES, "types": TYPES}
    numbers_items = False
    ref_pattern = PROJECT_GID
    ref_example = "1204567890123456"
    default_base_url = "https://app.asana.com/api/1.0"
    default_rate = 2.5
    rate_basis = ("Asana allows 150 requests a minute on a free domain (1,500 on a paid one: "
                  "--rate 1500/min)")

    @classmethod
    def from_instance(cls, base_url: str, credentials: Mapping[str, str],
                      config: Mapping[str, Any], **client_options: Any) -> AsanaAdapter:
        return cls(base_url, token=credentials["token"], projects=config.get("projects", {}),
                   priorities=config.get("priorities"), types=config.get("types"),
                   **client_options)

    def __init__(
        self, base_url: str, *, token: str, projects: Mapping[str, str],
        priorities: Mapping[str, str] | None = None, types: Mapping[str, str] | None = None,
        page_size: int = 100, **client_options: Any,
    ) -> None:
        if bad := [gid for gid in projects if not PROJECT_GID.match(gid)]:
            # Gids go into URL paths; the pattern keeps them from being anything but a gid.
            raise SourceError("config", f"not an Asana project gid: {', '.join(bad)}")
        self.projects = dict(projects)
        self._priorities = {k.lower(): v for k, v in (priorities or {}).items()}
        self._types = {k.lower(): v for k, v in (types or {}).items()}
        self._page_size = min(page_size, 100)  # Asana's most per page
        self._http = HttpClient(base_url, headers={"Authorization": f"Bearer {token}"},
                                **{"rate": self.default_rate, **client_options})
        # gid -> (project key, number); new numbers are handed out only once the store's
        # keys are known (``_bound``).
        self._numbers: dict[str, tuple[str, int]] = {}
        self._next: dict[str, int] = {}
        self._bound = False
        self._project_info: dict[str, Mapping[str, Any]] = {}

    # --- keys ------------------------------------------------------------------------------
    def use_keys(self, stored: Iterable[tuple[str, str, int]],
                 next_numbers: Mapping[str, int]) -> None:
        """Learn the store's keys: (task gid, project key, number) of every task mirrored so
        far, and each mirrored project's next free number. Needed before a sync or a create;
        a write to a known task learns its key from its :class:`Ref`."""
        self._numbers = {gid: (project, number) for gid, project, number in stored}
        self._next = dict(next_numbers)
        for project, number in self._numbers.values():
            self._next[project] = max(self._next.get(project, 1), number + 1)
        self._bound = True

    def _require_keys(self) -> None:
        if not self._bound:
            # Numbering without the store's keys would renumber every task: refuse instead.
            raise SourceError("config", "the Asana adapter needs the store's keys (use_keys) "
                                        "before it can name new tasks")

    def _remember(self, *refs: Ref | None) -> None:
        for ref in refs:
            while ref is not None:  # the item, then its parent: an answer names both
                project, _, number = ref.key.rpartition("-")
                self._numbers.setdefault(ref.source_id, (project, int(number)))
                ref = ref.parent

    def _number(self, gid: str, project_key: str) -> int:
        known = self._numbers.get(gid)
        if known is not None and known[0] == project_key:
            return known[1]
        self._require_keys()
        number = self._next.get(project_key, 1)
        self._next[project_key] = number + 1
        self._numbers[gid] = (project_key, number)
        return number

    def _known_key(self, gid: str | None) -> str | None:
        known = self._numbers.get(gid or "")
        return f"{known[0]}-{known[1]}" if known else None

    def _home(self, task: Mapping[str, Any]) -> str | None:
        """The local project of a task: the first mapped project it belongs to."""
        member = set(_gids(task.get("projects")))
        return next((local for ref, local in self.projects.items() if ref in member), None)

    # --- reads -----------------------------------------------------------------------------
    async def _all(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every entry of an offset-paginated listing."""
        params = {**params, "limit": self._page_size}
        found: list[dict[str, Any]] = []
        while True:
            answer = await self._http.request("GET", path, params=params)
            found.extend(answer.get("data") or [])
            offset = (answer.get("next_page") or {}).get("offset")
            if not offset:
                return found
            params["offset"] = offset

    async def _project(self, gid: str) -> Mapping[str, Any]:
        if gid not in self._project_info:
            try:
                answer = await self._http.request("GET", f"/projects/{gid}",
                                                  params={"opt_fields": PROJECT_FIELDS})
            except SourceError as exc:
                if exc.kind == "not_found":
                    raise SourceError("not_found", f"Asana project {gid} does not exist or is "
                                      "not visible to this account", status=404) from None
                raise
            self._project_info[gid] = answer["data"]
        return self._project_info[gid]

    async def check(self) -> str:
        me = (await self._http.request("GET", "/users/me"))["data"]
        for gid in self.projects:
            await self._project(gid)
        return _person(me) or "unknown user"

    async def workflow(self, project_ref: str) -> Workflow:
        return Workflow(statuses=[(OPEN, "todo"), (COMPLETED, "done")],
                        transitions=[("complete", "Complete", OPEN, COMPLETED),
                                     ("reopen", "Reopen", COMPLETED, OPEN)])

    async def _delta(self, since: datetime | None) -> list[tuple[dict[str, Any], str]]:
        """Tasks modified at or after ``since`` in every mirrored project, once each, oldest
        modification first."""
        params: dict[str, Any] = {"opt_fields": TASK_FIELDS}
        if since is not None:
            # A second early: the cursor's own task is read again rather than one beside it
            # missed, whether Asana compares with > or >= (upserts make the re-read harmless).
            params["modified_since"] = (since - timedelta(seconds=1)).astimezone(UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        found: dict[str, tuple[dict[str, Any], str]] = {}
        for gid in self.projects:
            for task in await self._all("/tasks", {**params, "project": gid}):
                if (home := self._home(task)) is not None:
                    found.setdefault(str(task["gid"]), (task, home))
        return sorted(found.values(), key=lambda pair: (_when(pair[0]["modified_at"]),
                                                        str(pair[0]["gid"])))

    async def pages(self, *, since: datetime | None) -> AsyncGenerator[Page, None]:
        self._require_keys()  # before any request
        delta = await self._delta(since)
        pending = {str(task["gid"]) for task, _ in delta}
        # Subtasks yielded before their parent had no key for it; they ride along again.
        waiting: dict[str, list[Item]] = {}
        for start in range(0, len(delta), self._page_size):
            items: list[Item] = []
            for task, home in delta[start:start + self._page_size]:
                gid = str(task["gid"])
                pending.discard(gid)
                item = await self._item(task, home)
                parent = str((task.get("parent") or {}).get("gid", ""))
                if item.parent_key is None and parent in pending:
                    waiting.setdefault(parent, []).append(item)
                items.append(item)
                items.extend(dataclasses.replace(child, parent_key=item.key)
                             for child in waiting.pop(gid, []))
            yield Page(items)

    async def _item(self, task: Mapping[str, Any], project_key: str) -> Item:
        gid = str(task["gid"])
        number = self._number(gid, project_key)
        key = f"{project_key}-{number}"
        stories = await self._all(f"/tasks/{gid}/stories", {"opt_fields": STORY_FIELDS})
        completed = bool(task.get("completed"))
        status = COMPLETED if completed else OPEN
        tags = [t["name"] for t in task.get("tags") or [] if t.get("name")]
        parent = task.get("parent")
        return Item(
            source_id=gid, key=key, project_key=project_key, number=number,
            title=(task.get("name") or key)[:1000], description=task.get("notes") or None,
            type=type_for(tags, subtask=parent is not None, overrides=self._types),
            status=status, status_category=_CATEGORY[status],
            priority=priority_for(_priority_name(task), overrides=self._priorities),
            assignee=_person(task.get("assignee")), reporter=_person(task.get("created_by")),
            labels=tags, parent_key=self._known_key(parent and str(parent["gid"])),
            created=_when(task["created_at"]), updated=_when(task["modified_at"]),
            resolved=_when(task.get("completed_at")) if completed else None, due=_due(task),
            raw=task,
            comments=[_comment(s) for s in stories
                      if s.get("resource_subtype") == "comment_added" and s.get("text")],
            transitions=[
                Transition(from_status=moved[0], to_status=moved[1],
                           from_category=_CATEGORY[moved[0]], to_category=_CATEGORY[moved[1]],
                           actor=_person(s.get("created_by")), at=_when(s["created_at"]))
                for s in stories if (moved := _MOVES.get(s.get("resource_subtype", "")))],
            links=self._links(task),
        )

    def _links(self, task: Mapping[str, Any]) -> list[Link]:
        # Both ends carry a dependency: whichever is yielded second knows the other's key.
        sides = [(g, False) for g in _gids(task.get("dependencies"))]
        sides += [(g, True) for g in _gids(task.get("dependents"))]
        return [Link("blocks", key, outward) for gid, outward in sides
                if (key := self._known_key(gid)) is not None]

    async def _fetch_item(self, gid: str) -> Item:
        task = (await self._http.request("GET", f"/tasks/{gid}",
                                         params={"opt_fields": TASK_FIELDS}))["data"]
        home = self._home(task)
        if home is None:
            raise SourceError("not_found", f"Asana task {gid} is in no mirrored project")
        return await self._item(task, home)

    # --- writes ----------------------------------------------------------------------------
    async def _priority_value(self, project_ref: str, priority: str, *,
                              required: bool) -> dict[str, str | None]:
        """``custom_fields`` setting the project's Priority enum to ``priority``."""
        settings = (await self._project(project_ref)).get("custom_field_settings") or []
        for field in (s["custom_field"] for s in settings):
            if (field.get("name", "").strip().lower() == "priority"
                    and field.get("resource_subtype") == "enum"):
                options = [o for o in field.get("enum_options") or [] if o.get("enabled", True)]
                option = next((o["gid"] for o in options
                               if priority_for(o["name"], overrides=self._priorities)
                               == priority), None)
                if option is None and priority != "none":
                    raise SourceError("unsupported", f"the Priority field of Asana project "
                                      f"{project_ref} has no option for {priority}")
                return {str(field["gid"]): option}
        if required and priority != "none":
            raise SourceError("unsupported", f"Asana project {project_ref} has no Priority "
                                             "field; its tasks have no priority")
        return {}

    async def _tag_gids(self, project_ref: str, names: Iterable[str]) -> list[str]:
        """The workspace's tags of these names, created when missing."""
        workspace = (await self._project(project_ref))["workspace"]["gid"]
        path = f"/workspaces/{workspace}/tags"
        existing = {t["name"]: str(t["gid"]) for t in await self._all(path,
                                                                      {"opt_fields": "name"})}
        gids: list[str] = []
        for name in dict.fromkeys(names):
            if name not in existing:
                created = await self._http.request("POST", path, json={"data": {"name": name}})
                existing[name] = str(created["data"]["gid"])
            gids.append(existing[name])
        return gids

    @writes
    async def create(self, project_ref: str, draft: Draft) -> Item:
        if project_ref not in self.projects:
            raise SourceError("config", f"Asana project {project_ref} is not mirrored")
        self._require_keys()
        self._remember(draft.parent)
        data: dict[str, Any] = {"name": draft.title, "notes": draft.description or "",
                                "projects": [project_ref]}
        if draft.assignee:
            data["assignee"] = draft.assignee
        if draft.due:
            data["due_on"] = draft.due.isoformat()
        if draft.parent:
            data["parent"] = draft.parent.source_id
        if fields := await self._priority_value(project_ref, draft.priority, required=False):
            data["custom_fields"] = fields
        tags = [*draft.labels, *([draft.type] if draft.type not in ("task", "subtask") else [])]
        if tags:
            data["tags"] = await self._tag_gids(project_ref, tags)
        created = await self._http.request("POST", "/tasks", json={"data": data})
        return await self._fetch_item(str(created["data"]["gid"]))

    @writes
    async def update(self, ref: Ref, changes: Mapping[str, Any]) -> Item:
        self._remember(ref, changes.get("parent"))
        data: dict[str, Any] = {}
        if "title" in changes:
            data["name"] = changes["title"]
        if "description" in changes:
            data["notes"] = changes["description"] or ""
        if "assignee" in changes:
            data["assignee"] = changes["assignee"]
        if "due" in changes:
            data["due_on"] = changes["due"].isoformat() if changes["due"] else None
        if "priority" in changes:
            data["custom_fields"] = await self._priority_value(
                ref.project_ref, changes["priority"], required=True)
        if data:
            await self._http.request("PUT", f"/tasks/{ref.source_id}", json={"data": data})
        if "labels" in changes:
            await self._set_tags(ref, changes["labels"])
        if "parent" in changes:
            parent = changes["parent"]
            await self._http.request("POST", f"/tasks/{ref.source_id}/setParent", json={
                "data": {"parent": parent.source_id if parent else None}}, idempotent=True)
        return await self._fetch_item(ref.source_id)

    async def _set_tags(self, ref: Ref, labels: Iterable[str]) -> None:
        task = (await self._http.request("GET", f"/tasks/{ref.source_id}",
                                         params={"opt_fields": "tags.name"}))["data"]
        current = {t["name"]: str(t["gid"]) for t in task.get("tags") or []}
        wanted = [name for name in dict.fromkeys(labels) if name not in current]
        moves = [("addTag", gid) for gid in await self._tag_gids(ref.project_ref, wanted)]
        moves += [("removeTag", gid) for name, gid in current.items() if name not in labels]
        for action, gid in moves:
            # Adding or removing a tag twice leaves the task as once: safe to retry.
            await self._http.request("POST", f"/tasks/{ref.source_id}/{action}",
                                     json={"data": {"tag": gid}}, idempotent=True)

    @writes
    async def transition(self, ref: Ref, status: str) -> Item:
        wanted = next((s for s in (OPEN, COMPLETED) if s.lower() == status.strip().lower()), None)
        if wanted is None:
            raise SourceError("unsupported", f"Asana tasks are {OPEN} or {COMPLETED}, "
                                             f"not {status!r}")
        self._remember(ref)
        await self._http.request("PUT", f"/tasks/{ref.source_id}",
                                 json={"data": {"completed": wanted == COMPLETED}})
        return await self._fetch_item(ref.source_id)

    @writes
    async def comment(self, ref: Ref, body: str) -> Comment:
        answer = await self._http.request("POST", f"/tasks/{ref.source_id}/stories",
                                          json={"data": {"text": body}})
        return _comment(answer["data"])

    @writes
    async def link(self, outward: Ref, inward: Ref, link_type: str) -> bool:
        if link_type != "blocks":
            return False  # Asana's only task-to-task link is a dependency
        # "outward blocks inward": inward depends on outward. Adding it twice is harmless.
        await self._http.request("POST", f"/tasks/{inward.source_id}/addDependencies",
                                 json={"data": {"dependencies": [outward.source_id]}},
                                 idempotent=True)
        return True


ADAPTER = AsanaAdapter
