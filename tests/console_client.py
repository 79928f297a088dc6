"""Signing in to the console from a test's HTTP client, as a browser does: the session cookie
is carried by hand (aiohttp's jar keeps no cookie of a bare IP address) and the CSRF token is
read from the page's <meta> tag."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

from aiohttp.test_utils import TestClient

__all__ = ["ConsoleUser", "csrf_token_of", "session_cookie", "sign_in"]

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def session_cookie(set_cookie: str) -> tuple[str, str, SimpleCookie]:
    """The console cookie of a Set-Cookie header: (name, value, the parsed cookie)."""
    parsed: SimpleCookie = SimpleCookie()
    parsed.load(set_cookie)
    (name, morsel), = parsed.items()
    return name, morsel.value, parsed


def csrf_token_of(html: str) -> str:
    match = _CSRF_META.search(html)
    assert match is not None, "the page has no csrf-token meta tag"
    return match.group(1)


class ConsoleUser:
    """A signed-in console session: its cookie, its CSRF token, and calls made with them."""

    def __init__(self, client: TestClient, cookie_name: str, cookie: str, csrf: str,
                 set_cookie: str) -> None:
        self.client = client
        self.cookie_name = cookie_name
        self.cookie = cookie
        self.csrf = csrf
        self.set_cookie = set_cookie

    @property
    def cookies(self) -> dict[str, str]:
        return {"Cookie": f"{self.cookie_name}={self.cookie}"}

    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def page(self, path: str, **kwargs: Any) -> tuple[int, str]:
        response = await self.client.get(path, headers=self.cookies, allow_redirects=False,
                                         **kwargs)
        return response.status, await response.text()

    async def api(self, method: str, path: str, *, csrf: str | None = "", json: Any = None,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """A call to /api/v1 as console.js makes it: the cookie, the same Origin, and the
        session's CSRF token (``csrf=None`` sends none, a string other than "" sends that)."""
        sent = {**self.cookies, "Origin": self.origin(), **(headers or {})}
        if csrf is not None:
            sent["X-CSRF-Token"] = csrf or self.csrf
        response = await self.client.request(method, "/api/v1" + path, json=json,
                                              headers=sent)
        return response.status, await response.json()


async def sign_in(client: TestClient, credential: str, **headers: str) -> ConsoleUser:
    """Sign in with ``credential`` through the sign-in form; the session."""
    origin = str(client.make_url("")).rstrip("/")
    if headers.get("X-Forwarded-Proto") == "https":  # as a TLS-ending proxy's browser sees it
        origin = origin.replace("http://", "https://", 1)
    response = await client.post("/admin/login", data={"credential": credential},
                                 headers={"Origin": origin, **headers}, allow_redirects=False)
    assert response.status == 303, await response.text()
    set_cookie = response.headers["Set-Cookie"]
    name, value, _ = session_cookie(set_cookie)
    home = response.headers["Location"]
    page = await client.get(home, headers={"Cookie": f"{name}={value}", **headers},
                            allow_redirects=False)
    assert page.status == 200, (home, page.status)
    return ConsoleUser(client, name, value, csrf_token_of(await page.text()), set_cookie)
