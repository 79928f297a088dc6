"""The adapter interface, the normalised item it yields, and a polite HTTP client.

Every adapter turns one source's wire format into :class:`Item` pages ordered by update time; the
sync never sees a source's JSON. The client is where politeness lives: timeouts, a request rate
per instance, and retries with exponential backoff and full jitter on 429 and 5xx answers that
honour ``Retry-After``. Its failures are :class:`SourceError` with a one-line message.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import email.utils
import random
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

__all__ = ["Adapter", "Comment", "HttpClient", "Item", "Page", "SourceError", "Transition"]


class SourceError(Exception):
    """A source could not be asked or refused; ``kind`` names the failure for callers."""

    def __init__(self, kind: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


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


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]


class Adapter(abc.ABC):
    """One source instance, read through its API."""

    kind: str

    @abc.abstractmethod
    async def check(self) -> str:
        """Prove reachability and credentials; return who we are signed in as."""

    @abc.abstractmethod
    def pages(self, *, since: datetime | None) -> AsyncIterator[Page]:
        """Items updated at or after ``since`` (all when None), oldest update first, with their
        comments and transitions complete."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the HTTP session."""


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
    """The source's own words, short: Atlassian's errorMessages/message, else the body's start."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        messages = data.get("errorMessages") or [data.get("message")]
        errors = data.get("errors")
        if isinstance(errors, dict):
            messages = [*messages, *(f"{k}: {v}" for k, v in errors.items())]
        text = "; ".join(str(m) for m in messages if m)
    else:
        text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:200]


class HttpClient:
    """JSON over HTTP to one source instance, at most ``rate`` requests per second."""

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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers={"Accept": "application/json", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0)),
            # Redirects could carry basic auth to another host; a source answers directly.
            raise_for_status=False,
        )
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        # A source asking for more than this is treated as down rather than waited for.
        self._max_retry_after = max_retry_after
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next_slot = 0.0
        self._slot_lock = asyncio.Lock()
        self.requests = 0

    async def close(self) -> None:
        await self._session.close()

    async def _take_slot(self) -> None:
        async with self._slot_lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter: many syncs backing off together do not retry in lock step.
        backoff = random.uniform(0, min(self._max_backoff, self._backoff * 2**attempt))  # noqa: S311
        return max(backoff, min(retry_after, self._max_retry_after)) if retry_after else backoff

    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """The decoded JSON answer, retrying what is worth retrying; else SourceError."""
        url = f"{self.base_url}{path}"
        for attempt in range(self._retries + 1):
            await self._take_slot()
            self.requests += 1
            try:
                async with self._session.request(
                    method, url, params=params, json=json, allow_redirects=False,
                ) as response:
                    body = await response.read()
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"),
                                               now=time.time())
            except aiohttp.ClientConnectorDNSError:
                raise SourceError("dns", f"cannot resolve the host of {self.base_url}") from None
            except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError,
                    ssl.SSLError) as exc:
                raise SourceError("tls", f"TLS failed with {self.base_url}: "
                                         f"{_first_line(exc)}") from None
            except aiohttp.ClientConnectorError:
                raise SourceError("unreachable",
                                  f"cannot connect to {self.base_url} (connection refused "
                                  "or host unreachable)") from None
            except (TimeoutError, aiohttp.ServerDisconnectedError,
                    aiohttp.ClientPayloadError) as exc:
                if attempt < self._retries:
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                kind = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
                raise SourceError(kind, f"{self.base_url} did not answer in time" if
                                  kind == "timeout" else f"{self.base_url} dropped the "
                                  "connection") from None
            if status == 429 or status >= 500:
                if attempt < self._retries:
                    await asyncio.sleep(self._delay(attempt, retry_after))
                    continue
                kind = "rate_limited" if status == 429 else "server"
                raise SourceError(kind, f"{self.base_url} answered {status} after "
                                        f"{attempt + 1} attempts: {_error_text(body)}",
                                  status=status)
            if status >= 300:
                raise _status_error(self.base_url, status, body)
            try:
                return orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                raise SourceError("bad_response",
                                  f"{self.base_url} answered something that is not JSON "
                                  f"(is the base URL right?)", status=status) from None
        raise AssertionError("unreachable")  # the loop returns or raises


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _status_error(base_url: str, status: int, body: bytes) -> SourceError:
    detail = _error_text(body)
    suffix = f": {detail}" if detail else ""
    match status:
        case 401:
            return SourceError("auth", f"{base_url} refused the credentials (401); check the "
                                       f"email and API token{suffix}", status=status)
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
