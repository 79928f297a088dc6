"""Change notifications: who hears that the tool or prompt list changed, or that a resource was
updated.

Two kinds of listener take them. In the stateless era (2026-07-28) a ``subscriptions/listen``
stream, opened with a filter of the types it wants (nothing else reaches it); in the handshake eras
a session's GET stream (list changes, and updates of the URIs it subscribed to). A resource update
names its tenant and reaches that tenant's listeners only: a resource reads tenant data, so
another tenant must not even learn that it changed. A list change reaches every listener whose key
may see the tools or prompts of the scope that changed.

The hub is per process: it tells the listeners and session streams its process holds. Where
sessions are shared through Redis, every change is also relayed to the other processes (their
hubs ``receive`` it), so a listener hears the changes any process makes; and the process where
a change is made ``announce``s it into the Redis streams of the sessions that should hear it,
whichever process holds their stream (or held it, and was killed), so no hub posts to a shared
session itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..auth import Principal
from .jsonrpc import INVALID_PARAMS, RpcError
from .sessions import Session, SessionState

__all__ = ["SUBSCRIPTION_ID_META", "ChangeFilter", "ChangeHub", "ListenLimitError", "Listener"]

SUBSCRIPTION_ID_META = "io.modelcontextprotocol/subscriptionId"
# At most this many resource URIs on one listen stream (as resources/subscribe on a session).
MAX_RESOURCE_SUBSCRIPTIONS = 100
# A listener that stops reading loses what is past this many waiting messages (the oldest stay:
# a list change repeated says nothing new).
MAX_WAITING = 256

TOOLS_CHANGED = "notifications/tools/list_changed"
PROMPTS_CHANGED = "notifications/prompts/list_changed"
RESOURCES_CHANGED = "notifications/resources/list_changed"
RESOURCE_UPDATED = "notifications/resources/updated"


class ListenLimitError(Exception):
    """Too many listen streams, in all, for one tenant or for one key."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChangeFilter:
    """The notification types a ``subscriptions/listen`` stream opted in to."""

    tools: bool = False
    prompts: bool = False
    resources_list: bool = False
    resources: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, params: dict[str, Any]) -> ChangeFilter:
        """The filter of a listen request's ``notifications``; -32602 when it is malformed."""
        wanted = params.get("notifications")
        if not isinstance(wanted, dict):
            raise RpcError(INVALID_PARAMS, 'subscriptions/listen needs a "notifications" object')
        for name in ("toolsListChanged", "promptsListChanged", "resourcesListChanged"):
            if not isinstance(wanted.get(name, False), bool):
                raise RpcError(INVALID_PARAMS, f"notifications.{name} must be a boolean")
        uris = wanted.get("resourceSubscriptions", [])
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise RpcError(INVALID_PARAMS,
                           "notifications.resourceSubscriptions must be an array of URIs")
        if len(set(uris)) > MAX_RESOURCE_SUBSCRIPTIONS:
            raise RpcError(INVALID_PARAMS, f"a listen stream may subscribe to at most "
                                           f"{MAX_RESOURCE_SUBSCRIPTIONS} resources")
        return cls(tools=wanted.get("toolsListChanged", False),
                   prompts=wanted.get("promptsListChanged", False),
                   resources_list=wanted.get("resourcesListChanged", False),
                   resources=frozenset(uris))

    def narrowed(self, *, tools: bool, prompts: bool, resources_list: bool,
                 readable: Callable[[str], bool]) -> ChangeFilter:
        """What the server agrees to: the types it sends, the URIs the key may read."""
        return ChangeFilter(tools=self.tools and tools, prompts=self.prompts and prompts,
                            resources_list=self.resources_list and resources_list,
                            resources=frozenset(u for u in self.resources if readable(u)))

    def wire(self) -> dict[str, Any]:
        """The filter as the acknowledgment states it: the types not honoured left out."""
        wire: dict[str, Any] = {}
        if self.tools:
            wire["toolsListChanged"] = True
        if self.prompts:
            wire["promptsListChanged"] = True
        if self.resources_list:
            wire["resourcesListChanged"] = True
        if self.resources:
            wire["resourceSubscriptions"] = sorted(self.resources)
        return wire


@dataclasses.dataclass(eq=False, kw_only=True)
class Listener:
    """One open ``subscriptions/listen`` stream: its caller, its filter, what waits to be sent.
    ``None`` in the queue ends the stream (the server closes it)."""

    principal: Principal
    subscription_id: Any
    filter: ChangeFilter
    queue: asyncio.Queue[dict[str, Any] | None] = dataclasses.field(
        default_factory=asyncio.Queue)

    def tagged(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A notification of this stream, carrying its subscription id as every one must."""
        return {"jsonrpc": "2.0", "method": method,
                "params": {**(params or {}),
                           "_meta": {SUBSCRIPTION_ID_META: self.subscription_id}}}

    def offer(self, method: str, params: dict[str, Any] | None = None) -> None:
        if self.queue.qsize() < MAX_WAITING:
            self.queue.put_nowait(self.tagged(method, params))


class ChangeHub:
    """The process's listeners, capped like sessions: in all, per tenant and per key."""

    def __init__(self, *, max_listeners: int, max_per_tenant: int, max_per_key: int,
                 sessions: Callable[[], Iterable[Session]] = tuple,
                 showing: Callable[[frozenset[str]], Iterable[str]] = lambda kinds: ()) -> None:
        self._max = max_listeners
        self._max_per_tenant = max_per_tenant
        self._max_per_key = max_per_key
        self._sessions = sessions
        # The URIs of the resources that show data of these kinds (ResourceRegistry.showing).
        self._showing = showing
        self._listeners: set[Listener] = set()
        # Tells the other processes of a change, and posts it to the shared sessions' streams
        # (both set by a shared session store).
        self.relay: Callable[[dict[str, Any]], None] | None = None
        self.announce: Callable[[dict[str, Any]], None] | None = None

    def _relay(self, change: dict[str, Any]) -> None:
        if self.relay is not None:
            self.relay(change)
        if self.announce is not None:
            self.announce(change)

    def listen(self, principal: Principal, subscription_id: Any,
               change_filter: ChangeFilter) -> Listener:
        """A new listener; ListenLimitError at a cap (a listen stream is never evicted: the
        client holds it open on purpose)."""
        if len(self._listeners) >= self._max:
            raise ListenLimitError("the server has as many listen streams open as it allows")
        if sum(1 for x in self._listeners if x.principal.tenant_id == principal.tenant_id) \
                >= self._max_per_tenant:
            raise ListenLimitError("this tenant has as many listen streams open as it allows")
        if sum(1 for x in self._listeners if x.principal.key_id == principal.key_id) \
                >= self._max_per_key:
            raise ListenLimitError("this API key (or user) has as many listen streams open as it "
                                   "allows")
        listener = Listener(principal=principal, subscription_id=subscription_id,
                            filter=change_filter)
        self._listeners.add(listener)
        return listener

    def stop(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def close_all(self) -> None:
        """Shutdown: every listen stream ends gracefully (its request answered)."""
        for listener in self._listeners:
            listener.queue.put_nowait(None)

    def count(self) -> int:
        return len(self._listeners)

    def tools_changed(self, scope: str) -> None:
        """The tool list changed for keys holding ``scope``."""
        self.receive({"kind": "tools", "scope": scope})
        self._relay({"kind": "tools", "scope": scope})

    def prompts_changed(self, scope: str) -> None:
        self.receive({"kind": "prompts", "scope": scope})
        self._relay({"kind": "prompts", "scope": scope})

    def resource_updated(self, tenant_id: uuid.UUID, uri: str) -> None:
        """``uri`` changed in ``tenant_id``'s data: its subscribers in that tenant hear of it."""
        change = {"kind": "resource", "tenant": str(tenant_id), "uris": [uri]}
        self.receive(change)
        self._relay(change)

    def data_changed(self, tenant_id: uuid.UUID, kinds: frozenset[str]) -> None:
        """A committed change of ``tenant_id``'s data of these kinds (spiral_mcp/changed_data):
        each resource showing any of them is announced once."""
        uris = list(self._showing(kinds))
        if uris:
            change = {"kind": "resource", "tenant": str(tenant_id), "uris": uris}
            self.receive(change)
            self._relay(change)

    def receive(self, change: dict[str, Any]) -> None:
        """Tell this process's listeners and streams of a change, made here or (relayed by the
        shared session store) by another process."""
        kind = change.get("kind")
        if kind == "tools":
            self._list_changed(TOOLS_CHANGED, change["scope"], lambda f: f.tools)
        elif kind == "prompts":
            self._list_changed(PROMPTS_CHANGED, change["scope"], lambda f: f.prompts)
        elif kind == "resource":
            tenant_id = uuid.UUID(change["tenant"])
            for uri in change["uris"]:
                self._resource_updated(tenant_id, uri)

    def _list_changed(self, method: str, scope: str,
                      wanted: Callable[[ChangeFilter], bool]) -> None:
        for listener in self._listeners:
            if wanted(listener.filter) and scope in listener.principal.scopes:
                listener.offer(method)
        for session in self._streaming_sessions():
            if scope in session.scopes:
                session.post({"jsonrpc": "2.0", "method": method})

    def _resource_updated(self, tenant_id: uuid.UUID, uri: str) -> None:
        for listener in self._listeners:
            if listener.principal.tenant_id == tenant_id and uri in listener.filter.resources:
                listener.offer(RESOURCE_UPDATED, {"uri": uri})
        for session in self._streaming_sessions():
            if session.tenant_id == tenant_id:
                session.offer_update(uri, {"jsonrpc": "2.0", "method": RESOURCE_UPDATED,
                                           "params": {"uri": uri}})

    def _streaming_sessions(self) -> Iterable[Session]:
        # Only a session whose GET stream is open: its outbox would otherwise grow unread. Shared
        # sessions hear a change from the process that made it (``announce``): posting here too
        # would tell them twice.
        if self.announce is not None:
            return ()
        return (s for s in self._sessions()
                if s.state is SessionState.READY and s.stream_open)
