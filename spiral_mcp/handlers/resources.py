"""MCP resources: content a client reads by URI (``resources/list``, ``resources/templates/list``,
``resources/read``, ``resources/subscribe``).

The product ships its own (``guides.py``); whoever builds the app may register others instead
(the conformance harness does), and the server declares the ``resources`` capability only when
there are some. A resource's URI may be a template whose ``{name}`` parts each match one path
segment (RFC 6570, level 1).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..auth import Principal
from ..icons import icons
from ..protocol.jsonrpc import RpcError
from .context import ToolContext

__all__ = ["RESOURCE_NOT_FOUND", "Resource", "ResourceRegistry"]

# The specification's code for a URI that names no resource.
RESOURCE_NOT_FOUND = -32002

# The resource's contents, each {"uri", "mimeType", "text" | "blob"}, given the template's values.
Reader = Callable[[ToolContext, dict[str, str]], Awaitable[list[dict[str, Any]]]]

_TEMPLATE_PART = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    uri: str                  # a URI, or a URI template with {name} parts
    name: str
    description: str
    read: Reader
    title: str | None = None
    mime_type: str | None = None
    scope: str = "read"       # the API-key scope a caller needs to see and read it
    icon: str | None = None   # an icon of spiral_mcp/icons
    share: str | None = None  # the kind of slow work a read is, run in the tenant's share of it
    # The key's rate budget a read draws on: a read doing a tool's work draws on that tool's
    # (an explorer view's samples on the query budget, as explorer_describe_table does).
    call_class: str = "read"
    # How long a client may take a read as fresh (ttlMs, 2026-07-28 on): tenant data moves with
    # every write, so a minute unless the resource knows better (a static reference: longer;
    # one that announces its changes with ctx.resource_updated may too).
    ttl_ms: int = 60_000
    # The kinds of tenant data it shows (spiral_mcp/changed_data): a committed change of one of
    # them is announced to its subscribers (notifications/resources/updated). Empty: it does not
    # change while the server runs. Only a direct resource is announced (a template has no URI).
    changed_by: frozenset[str] = frozenset()

    @property
    def is_template(self) -> bool:
        return _TEMPLATE_PART.search(self.uri) is not None

    def listing(self) -> dict[str, Any]:
        entry = {"uriTemplate" if self.is_template else "uri": self.uri, "name": self.name,
                 "description": self.description}
        if self.title is not None:
            entry["title"] = self.title
        if self.mime_type is not None:
            entry["mimeType"] = self.mime_type
        if self.icon is not None and (found := icons(self.icon)):
            entry["icons"] = list(found)
        return entry


def _pattern(template: str) -> re.Pattern[str]:
    names = _TEMPLATE_PART.findall(template)
    if len(set(names)) < len(names):
        raise ValueError(f"a variable appears twice in the URI template {template}")
    if "}{" in template:
        raise ValueError(f"two variables touch in the URI template {template}")
    parts, last = [], 0
    for part in _TEMPLATE_PART.finditer(template):
        parts += [re.escape(template[last:part.start()]), f"(?P<{part.group(1)}>[^/?#]+)"]
        last = part.end()
    return re.compile("".join(parts) + re.escape(template[last:]))


class ResourceRegistry:
    def __init__(self, resources: Iterable[Resource] = ()) -> None:
        self._direct: dict[str, Resource] = {}
        self._templates: list[tuple[Resource, re.Pattern[str]]] = []
        for resource in resources:
            if resource.is_template:
                self._templates.append((resource, _pattern(resource.uri)))
            elif self._direct.setdefault(resource.uri, resource) is not resource:
                raise ValueError(f"two resources have the URI {resource.uri}")

    def __bool__(self) -> bool:
        return bool(self._direct or self._templates)

    def listed(self, principal: Principal) -> list[dict[str, Any]]:
        """The direct resources this key may read, by URI."""
        return [r.listing() for uri, r in sorted(self._direct.items())
                if r.scope in principal.scopes]

    def templates(self, principal: Principal) -> list[dict[str, Any]]:
        return [r.listing() for r, _ in self._templates if r.scope in principal.scopes]

    def find(self, uri: str, principal: Principal) -> tuple[Resource, dict[str, str]]:
        """The resource ``uri`` names and its template's values; RESOURCE_NOT_FOUND when none
        does, or the key may not read it (the same answer: it learns nothing)."""
        resource = self._direct.get(uri)
        if resource is not None:
            # Never on to the templates: one might match this URI under a lesser scope.
            if resource.scope in principal.scopes:
                return resource, {}
            raise RpcError(RESOURCE_NOT_FOUND, f"resource not found: {uri}", {"uri": uri})
        for resource, pattern in self._templates:
            if resource.scope in principal.scopes and (match := pattern.fullmatch(uri)):
                return resource, match.groupdict()
        raise RpcError(RESOURCE_NOT_FOUND, f"resource not found: {uri}", {"uri": uri})

    def scope_needed(self, uri: str, principal: Principal) -> str | None:
        """The scope reading ``uri`` needs that ``principal`` lacks; None when it may read it,
        or no resource has that URI (as :meth:`find` decides: a direct resource first, then
        the first template matching under a scope the principal has)."""
        resource = self._direct.get(uri)
        if resource is not None:
            return resource.scope if resource.scope not in principal.scopes else None
        needed = None
        for resource, pattern in self._templates:
            if pattern.fullmatch(uri):
                if resource.scope in principal.scopes:
                    return None
                needed = needed or resource.scope
        return needed

    def showing(self, kinds: Iterable[str]) -> list[str]:
        """The URIs of the direct resources that show data of any of ``kinds``."""
        kinds = frozenset(kinds)
        return [uri for uri, r in sorted(self._direct.items()) if r.changed_by & kinds]

    def readable(self, uri: str, principal: Principal) -> bool:
        """Whether ``uri`` names a resource this key may read."""
        try:
            self.find(uri, principal)
        except RpcError:
            return False
        return True

    def template(self, template: Any, principal: Principal) -> Resource | None:
        """The resource template ``template`` (for completion), if this key may read it."""
        for resource, _ in self._templates:
            if resource.uri == template and resource.scope in principal.scopes:
                return resource
        return None
