"""JSON over HTTP for the token verifier: small, quick, and failures with a name.

Everything an authorization server sends is bounded in size and time, and redirects are not
followed (a metadata or key document answers where it is asked). A transport failure is a
:class:`ServiceError` with code CONNECTION_ERROR, so the HTTP layer answers 503 rather than
blaming the client's token; :class:`FailureMemory` keeps a failure for a few seconds so that a
broken issuer is not asked again by every request.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from ..errors import ErrorCode, ServiceError

__all__ = ["Answer", "FailureMemory", "Fetcher", "basic_authorization", "unusable"]

# Metadata and key sets are a few KiB; this is generous and still bounds memory.
MAX_DOCUMENT_BYTES = 512 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=3.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: its status, and its body decoded as JSON (``None`` if it was not JSON)."""

    status: int
    data: Any

    @property
    def json_object(self) -> dict[str, Any] | None:
        return self.data if self.status == 200 and isinstance(self.data, dict) else None


class Fetcher:
    """Sends the verifier's requests, on a session it owns or is given."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned = session is None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession belongs to the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    async def get(self, url: str, *, what: str) -> Answer:
        return await self._send("GET", url, what=what)

    async def post_form(
        self, url: str, form: Mapping[str, str], *, authorization: str | None, what: str
    ) -> Answer:
        """A form POST; ``authorization`` None for a public client (it names itself in the
        form)."""
        headers = {} if authorization is None else {"Authorization": authorization}
        return await self._send("POST", url, what=what, data=dict(form), headers=headers)

    async def _send(
        self, method: str, url: str, *, what: str, headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Answer:
        try:
            async with self._client().request(
                method, url, timeout=TIMEOUT, allow_redirects=False,
                headers={"Accept": "application/json", **(headers or {})}, **kwargs,
            ) as response:
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise unusable(what, "its answer is too large")
                status = response.status
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            reason = "it did not answer in time" if isinstance(exc, TimeoutError) \
                else f"it could not be reached ({type(exc).__name__})"
            raise unusable(what, reason) from None
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        return Answer(status, data)

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
        self._session = None


def basic_authorization(client_id: str, secret: str) -> str:
    """HTTP Basic client authentication at an authorization server."""
    # RFC 6749 section 2.3.1: both halves are form-encoded before going into Basic auth (a
    # secret with ":" would otherwise split in the wrong place).
    credentials = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def unusable(what: str, reason: str) -> ServiceError:
    """The CONNECTION_ERROR for a party that failed or answered something unusable."""
    return ServiceError(ErrorCode.CONNECTION_ERROR, f"{what} could not be used: {reason}")


class FailureMemory:
    """The last failure of one remote party, repeated without asking it again for a while."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._failure: tuple[float, ServiceError] | None = None

    def check(self) -> None:
        """Raise the remembered failure while it is fresh."""
        if self._failure is not None:
            at, error = self._failure
            left = self._seconds - (time.monotonic() - at)
            if left > 0:
                raise ServiceError(error.code, error.message, retry_after=round(left, 1))
            self._failure = None

    def remember(self, error: ServiceError) -> None:
        error.retry_after = self._seconds
        self._failure = (time.monotonic(), error)

    def forget(self) -> None:
        self._failure = None
