"""The headers every console answer carries, and whether a request came over TLS.

The console is a page of an admin's browser with an ambient credential (its cookie): the
headers keep other sites from framing it (clickjacking), from running script in it (CSP without
'unsafe-inline': an injected <script> or on*= attribute does nothing), from reading its
answers from a cache or a Referer sent elsewhere, and the browser from guessing a file's type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping

from aiohttp import web

__all__ = ["CSP", "security_headers"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

_ALWAYS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it a browser sends "Origin: null" with the console's own form posts
    # and fetches (Fetch: the Origin header follows the referrer policy for non-CORS requests),
    # and the same-origin checks would refuse them. same-origin sends nothing to other sites.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _apply(request: web.Request, headers: MutableMapping[str, str]) -> None:
    headers.update(_ALWAYS)
    # Pages hold tenant data and a CSRF token: never kept by a cache or the back button's
    # store; the package's static files may be revalidated.
    static = request.path.startswith("/admin/static/")
    headers["Cache-Control"] = "no-cache" if static else "no-store"


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _apply(request, exc.headers)
        raise
    _apply(request, response.headers)
    return response
