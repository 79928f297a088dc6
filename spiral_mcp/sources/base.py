"""The adapter interface, the normalised item it yields, and a polite HTTP client.

Every adapter turns one source's wire format into :class:`Item` pages ordered by update time; the
sync never sees a source's JSON. The client is where politeness lives: timeouts, a request rate
per instance, and retries with exponential backoff and full jitter on 429 and 5xx answers that
honour ``Retry-After``. Its failures are :class:`SourceError` with a one-line message.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import email.utils
import functools
import random
import re
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson

from . import networks as source_networks
from .credential_echo import credential_texts, without_credentials

__all__ = ["CATEGORIES", "PRIORITIES", "TYPES", "Adapter", "Answer", "Comment", "Draft",
           "HttpClient", "Item", "Link", "Page", "Ref", "SourceAdminError", "SourceError",
           "Transition", "Workflow", "writes"]


# The store's values, which an instance's mapping overrides must name.
CATEGORIES = frozenset({"todo", "in_progress", "blocked", "in_review", "done", "cancelled"})
PRIORITIES = frozenset({"critical", "high", "medium", "low", "none"})
TYPES = frozenset({"epic", "story", "task", "bug", "subtask", "feature"})


class SourceError(Exception):
    """A source could not be asked or refused; ``kind`` names the failure for callers.
    ``ambiguous``: a write that may have been carried out all the same (its answer was lost, or
    was a 5xx, or a later request of the same write failed), so a retry could make the change
    twice."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 ambiguous: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.ambiguous = ambiguous


class SourceAdminError(ValueError):
    """An operator's source request that cannot be carried out; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    from_status: str | None
    to_status: str
    from_category: str | None
    to_category: str
    actor: str | None
    at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Comment:
    source_id: str
    author: str | None
    body: str
    created: datetime
    updated: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    """A link as the source states it, seen from the item that carries it: ``link_type`` is one
    of the store's (blocks, relates, duplicates, clones); ``outward`` means "this item <type>
    other_key" (False: "other_key <type> this item"). ``other_key`` is already a local key."""

    link_type: str
    other_key: str
    outward: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """A work item in the store's terms; ``key`` is already mapped to the local project."""

    source_id: str
    key: str
    project_key: str
    number: int
    title: str
    description: str | None
    type: str
    status: str
    status_category: str
    priority: str
    assignee: str | None
    reporter: str | None
    labels: list[str]
    parent_key: str | None
    created: datetime
    updated: datetime
    resolved: datetime | None
    due: datetime | None
    raw: Mapping[str, Any]
    comments: list[Comment] = dataclasses.field(default_factory=list)
    transitions: list[Transition] = dataclasses.field(default_factory=list)
    links: list[Link] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]


@dataclasses.dataclass(frozen=True, slots=True)
class Workflow:
    """A mirrored project's workflow in the store's terms. ``statuses`` are (name, category) with
    the initial status first; ``transitions`` are (id, name, from status, to status)."""

    statuses: list[tuple[str, str]]
    transitions: list[tuple[str, str, str, str]]


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """An item as its source knows it, for writes: the source's id, the local key and the
    source project reference (Jira project key, GitHub owner/repo, Asana project gid)."""

    source_id: str
    key: str
    project_ref: str
    # Its parent, when the store holds one from the same source: a source the store numbers
    # (Asana) can name the parent in its answer only by a key it was told.
    parent: Ref | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """A new item in the store's terms, for :meth:`Adapter.create`."""

    title: str
    description: str | None
    type: str
    priority: str
    assignee: str | None
    labels: list[str]
    due: date | None
    parent: Ref | None


class Adapter(abc.ABC):
    """One source instance, read and written through its API.

    An adapter module names its class in ``ADAPTER``; :func:`spiral_mcp.sources.manage.
    make_adapter` finds it by the instance's kind. Writes return the item as the source answered
    it, so the store is updated from the source, never from the request; each is marked
    :func:`writes`, so a failure after the source accepted part of it says so.
    """

    kind: str
    #: What a source project reference looks like (``--project REF=LOCALKEY``), and an example.
    ref_pattern: re.Pattern[str]
    ref_example: str
    #: The API's address when the operator gives none (None: a base URL is required).
    default_base_url: str | None = None
    #: The instance config's mapping overrides (``--map KEY:NAME=VALUE``): each key, with the
    #: values a source name may map to.
    overrides: Mapping[str, frozenset[str]] = {}
    #: Whether the source numbers its items (Jira keys, GitHub issue numbers). When it does not
    #: (Asana), the store hands out the numbers: see :meth:`use_keys`.
    numbers_items: bool = True
    #: Requests a second an instance keeps to unless its config's ``rate`` says otherwise, from
    #: the source's published limits; ``rate_basis`` says which.
    default_rate: float = 10.0
    rate_basis: str = ""
    #: Every request goes through it: timeouts, rate and retries are the client's.
    _http: HttpClient

    @classmethod
    @abc.abstractmethod
    def from_instance(cls, base_url: str, credentials: Mapping[str, str],
                      config: Mapping[str, Any], **client_options: Any) -> Adapter:
        """The adapter of one stored instance: its decrypted credentials (``token``, and for
        Jira Cloud ``email``) and its config (``projects``: ref → local key, overrides)."""

    @abc.abstractmethod
    async def check(self) -> str:
        """Prove reachability and credentials; return who we are signed in as."""

    @abc.abstractmethod
    def pages(self, *, since: datetime | None) -> AsyncGenerator[Page, None]:
        """Items updated at or after ``since`` (all when None), oldest update first, with their
        comments and transitions complete."""

    def use_keys(self, stored: Iterable[tuple[str, str, int]],
                 next_numbers: Mapping[str, int]) -> None:
        """The store's keys of this source's items (source id, project key, number) and each
        mirrored project's next free number, for sources whose items have no numbers (Asana);
        sources that number their items themselves ignore it."""
        return None

    @abc.abstractmethod
    async def workflow(self, project_ref: str) -> Workflow:
        """The statuses and moves of a mirrored project, for the store's workflow tables."""

    @abc.abstractmethod
    async def create(self, project_ref: str, draft: Draft) -> Item:
        """Create the item at the source; the created item as the source now has it."""

    @abc.abstractmethod
    async def update(self, ref: Ref, changes: Mapping[str, Any]) -> Item:
        """Change fields: keys among title, description, priority, assignee, labels, due
        (a date or None) and parent (a Ref or None)."""

    @abc.abstractmethod
    async def transition(self, ref: Ref, status: str) -> Item:
        """Move the item to the status named ``status`` (a status of :meth:`workflow`)."""

    @abc.abstractmethod
    async def comment(self, ref: Ref, body: str) -> Comment:
        """Add a Markdown comment; the comment as stored at the source."""

    @abc.abstractmethod
    async def link(self, outward: Ref, inward: Ref, link_type: str) -> bool:
        """Record "outward <link_type> inward" at the source; False when the source has no such
        link (the store then keeps it locally)."""

    @property
    def requests(self) -> int:
        """Requests sent so far, retries included."""
        return self._http.requests

    @property
    def rate(self) -> float:
        """The requests a second this adapter keeps to."""
        return self._http.rate

    async def close(self) -> None:
        """Release the HTTP session."""
        await self._http.close()


_A = TypeVar("_A", bound=Adapter)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def writes(method: Callable[Concatenate[_A, _P], Awaitable[_R]],
           ) -> Callable[Concatenate[_A, _P], Awaitable[_R]]:
    """Marks an adapter method as one write at the source, however many requests it takes (see
    :meth:`HttpClient.write`)."""

    @functools.wraps(method)
    async def write(adapter: _A, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with adapter._http.write():
            return await method(adapter, *args, **kwargs)

    return write


def _retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _error_text(body: bytes) -> str:
    """The source's own words, short: Atlassian's errorMessages/errors, GitHub's message/errors,
    Asana's errors[].message; else the body's start."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        messages = data.get("errorMessages") or [data.get("message")]
        errors = data.get("errors")
        if isinstance(errors, dict):
            messages = [*messages, *(f"{k}: {v}" for k, v in errors.items())]
        elif isinstance(errors, list):
            messages = [*messages, *map(_error_entry, errors)]
        text = "; ".join(str(m) for m in messages if m)
    else:
        text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:200]


def _error_entry(entry: Any) -> Any:
    # GitHub's 422 entries often carry no message, only what was wrong with which field.
    if not isinstance(entry, dict):
        return entry
    return entry.get("message") or " ".join(
        f"{k}={entry[k]}" for k in ("resource", "field", "code", "value") if k in entry)


def _rate_limit_wait(status: int, headers: Mapping[str, str], body: bytes, *,
                     now: float) -> float | None:
    """Seconds a refusal for rate asks us to wait (0: it names no time); None when the answer is
    no such refusal. As GitHub's "Rate limits for the REST API" says: ``Retry-After`` when
    given; else, with ``X-RateLimit-Remaining: 0``, until the epoch ``X-RateLimit-Reset``; else,
    for a secondary rate limit (a 403 or 429 saying so), at least a minute. Any 429 is one. Its
    GraphQL API refuses with a 200 too, whose ``errors`` say ``RATE_LIMITED`` or name a secondary
    rate limit (see :func:`_graphql_refusal`)."""
    if status == 200:
        if not _graphql_refusal(body):
            return None
    elif status not in (403, 429):
        return None
    retry_after = _retry_after(headers.get("Retry-After"), now=now)
    if retry_after is not None:
        return retry_after
    if headers.get("X-RateLimit-Remaining") == "0":
        reset = headers.get("X-RateLimit-Reset", "")
        return max(0.0, float(reset) - now) if reset.isdigit() else 60.0
    if b"secondary rate limit" in body.lower():
        return 60.0
    return 0.0 if status == 429 else None


def _graphql_refusal(body: bytes) -> bool:
    """Whether a 200 is GitHub's GraphQL API refusing for rate: an ``errors`` entry of type
    ``RATE_LIMITED``, or one saying "secondary rate limit" (never what an issue's text says:
    that is under ``data``)."""
    lowered = body.lower()
    if b"rate_limited" not in lowered and b"secondary rate limit" not in lowered:
        return False  # most answers: no parsing
    try:
        errors = orjson.loads(body).get("errors")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return any(isinstance(e, dict) and (e.get("type") == "RATE_LIMITED" or "secondary rate limit"
                                        in str(e.get("message", "")).lower())
               for e in errors or [])


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: its status, headers and decoded JSON."""

    status: int
    headers: Mapping[str, str]
    data: Any


class HttpClient:
    """JSON over HTTP to one source instance, at most ``rate`` requests per second (a request
    starts ``1 / rate`` seconds after the one before it at the earliest). ``sleep`` waits out
    backoffs and what a source asks (tests pass one that only records)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        rate: float = 10.0,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        networks: source_networks.SourceNetworks | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            parts = urlsplit(self.base_url)
            self._origin = f"{parts.scheme}://{parts.netloc}"
            host = parts.hostname or ""
        except ValueError:  # nothing can be sent there: fetch says so
            self._origin = self.base_url
            host = ""
        # Where it may connect: a literal host is checked here, a name by the resolver at each
        # connection (never following redirects, each request connects to this origin only).
        allowed = source_networks.chosen(networks)
        self._refused = source_networks.refused_literal(host, allowed)
        self._resolver = source_networks.GuardedResolver(allowed)
        # What of the credentials an answer may echo back, taken out of every body it reads.
        self._credentials = credential_texts(headers or {})
        self._session = aiohttp.ClientSession(
            headers={"Accept": "application/json", **(headers or {})},
            connector=aiohttp.TCPConnector(resolver=self._resolver),
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0)),
            # Redirects could carry basic auth to another host; a source answers directly.
            raise_for_status=False,
        )
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        # A source asking for more than this is treated as down rather than waited for.
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self.rate = rate
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next_slot = 0.0
        self._slot_lock = asyncio.Lock()
        self.requests = 0
        # Requests that may change something (any method but GET and HEAD) the source took.
        self._accepted = 0

    async def close(self) -> None:
        await self._session.close()
        await self._resolver.close()  # the connector closes only a resolver of its own

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write of several requests (the write and reading it back, or several writes).
        Once the source has accepted one of them, a failure after it is ambiguous: the change
        may be there, and a retry could make it twice."""
        accepted = self._accepted
        try:
            yield
        except SourceError as exc:
            if exc.ambiguous or self._accepted == accepted:
                raise
            raise SourceError(exc.kind, f"the change may have reached {self.base_url} (it "
                                        f"accepted a request of it), but then: {exc}",
                              status=exc.status, ambiguous=True) from None

    async def _take_slot(self) -> None:
        async with self._slot_lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    def _delay(self, attempt: int, asked: float) -> float:
        # Full jitter: many syncs backing off together do not retry in lock step.
        backoff = random.uniform(0, min(self._max_backoff, self._backoff * 2**attempt))  # noqa: S311
        return max(backoff, asked)

    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
        json: Any = None, idempotent: bool | None = None,
    ) -> Any:
        """The decoded JSON answer, retrying what is worth retrying; else SourceError."""
        return (await self.fetch(method, path, params=params, json=json,
                                 idempotent=idempotent)).data

    async def fetch(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
        json: Any = None, idempotent: bool | None = None,
    ) -> Answer:
        """Like :meth:`request`, with the status and headers. ``path`` may be a whole URL on
        the same host (GitHub Enterprise's GraphQL endpoint beside its REST base). A request
        that is not ``idempotent`` (by default: POST) is retried only when the source refused it
        for rate, never after a 5xx or a lost connection, which may have carried it out."""
        if idempotent is None:
            idempotent = method != "POST"
        url = path if path.startswith(self._origin + "/") else f"{self.base_url}{path}"
        if self._refused is not None:
            raise SourceError("private_address", self._refused)
        for attempt in range(self._retries + 1):
            await self._take_slot()
            self.requests += 1
            try:
                async with self._session.request(
                    method, url, params=params, json=json, allow_redirects=False,
                ) as response:
                    body = without_credentials(await response.read(), self._credentials)
                    status = response.status
                    headers = response.headers.copy()
            except aiohttp.ClientConnectorDNSError as exc:
                if isinstance(exc.os_error, source_networks.PrivateAddress):
                    raise SourceError("private_address", str(exc.os_error)) from None
                raise SourceError("dns", f"cannot resolve the host of {self.base_url}") from None
            except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError,
                    ssl.SSLError) as exc:
                raise SourceError("tls", f"TLS failed with {self.base_url}: "
                                         f"{_first_line(exc)}") from None
            except aiohttp.ClientConnectorError:
                raise SourceError("unreachable",
                                  f"cannot connect to {self.base_url} (connection refused "
                                  "or host unreachable)") from None
            except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError):
                # Nothing was sent: the base URL is not one aiohttp can send to.
                raise SourceError("unreachable", f"cannot send to {self.base_url}: not a "
                                                 "usable http(s) URL") from None
            except (TimeoutError, aiohttp.ClientError) as exc:
                # It may have been sent, and carried out: only one that may be repeated is.
                if attempt < self._retries and idempotent:
                    await self._sleep(self._delay(attempt, 0.0))
                    continue
                raise _lost(self.base_url, exc, idempotent=idempotent) from None
            now = time.time()
            limited = _rate_limit_wait(status, headers, body, now=now)
            if limited is None and status < 500:
                return self._answer(method, status, headers, body)
            # A refusal for rate says nothing was done; a 5xx to a create may have created it.
            kind = "server" if limited is None else "rate_limited"
            ambiguous = limited is None and not idempotent
            asked = limited or _retry_after(headers.get("Retry-After"), now=now) or 0.0
            if asked > self._max_retry_after and not ambiguous:
                raise self._too_long(kind, status, body, asked, now=now)
            if ambiguous or attempt == self._retries:
                raise SourceError(kind, f"{self.base_url} answered {status} after "
                                        f"{attempt + 1} attempts: {_error_text(body)}",
                                  status=status, ambiguous=ambiguous)
            await self._sleep(self._delay(attempt, asked))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _answer(self, method: str, status: int, headers: Mapping[str, str],
                body: bytes) -> Answer:
        if status >= 300:
            raise _status_error(self.base_url, status, body)
        if method not in ("GET", "HEAD"):
            self._accepted += 1
        try:
            return Answer(status, headers, orjson.loads(body) if body else None)
        except orjson.JSONDecodeError:
            raise SourceError("bad_response",
                              f"{self.base_url} answered something that is not JSON "
                              f"(is the base URL right?)", status=status) from None

    def _too_long(self, kind: str, status: int, body: bytes, asked: float, *,
                  now: float) -> SourceError:
        # Waiting less than asked only spends a request; longer than this, the source is down.
        until = datetime.fromtimestamp(now + asked, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return SourceError(kind, f"{self.base_url} answered {status} and asks to wait until "
                                 f"{until} ({asked:.0f} s, more than the "
                                 f"{self._max_retry_after:g} s we wait): {_error_text(body)}",
                           status=status)


def _lost(base_url: str, exc: BaseException, *, idempotent: bool) -> SourceError:
    """A request whose answer never came: ambiguous unless it may be repeated or was never
    sent (a connect timeout)."""
    sent = not isinstance(exc, aiohttp.ConnectionTimeoutError)
    if isinstance(exc, TimeoutError):
        return SourceError("timeout", f"{base_url} did not answer in time",
                           ambiguous=sent and not idempotent)
    return SourceError("unreachable", f"{base_url} dropped the connection "
                                      f"({_first_line(exc)})", ambiguous=not idempotent)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _status_error(base_url: str, status: int, body: bytes) -> SourceError:
    detail = _error_text(body)
    suffix = f": {detail}" if detail else ""
    match status:
        case 401:
            return SourceError("auth", f"{base_url} refused the credentials (401); check the "
                                       f"account and API token{suffix}", status=status)
        case 403:
            return SourceError("forbidden", f"{base_url} denied access (403); the account "
                                            f"lacks permission{suffix}", status=status)
        case 404:
            return SourceError("not_found", f"{base_url} has no such resource (404); check the "
                                            f"base URL and project keys{suffix}", status=status)
        case _ if 300 <= status < 400:
            return SourceError("bad_response", f"{base_url} redirected ({status}); use the "
                                               "final URL as the base URL", status=status)
        case _:
            return SourceError("bad_response", f"{base_url} answered {status}{suffix}",
                               status=status)
