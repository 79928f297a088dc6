"""The web console's sessions, kept in PostgreSQL (``console_sessions``, migration 0017), and the
cookie and CSRF rules that go with them.

A tenant session's cookie value reads ``cs_<tenant id hex><secret>``: carrying the tenant lets
the lookup run in that tenant's transaction, under row-level security, as API keys do; only its
SHA-256 is stored. A session lasts CONSOLE_SESSION_TTL at most and ends after
CONSOLE_SESSION_IDLE without a request, and at once when its key is revoked, expires or loses
the admin scope (the lookup joins the key). A session opened by OAuth sign-in (0021) belongs to
the user (the principal id MCP gives it) instead: it ends no later than the token's exp, and at
once when the issuer's binding stops naming its tenant. Operator sessions (``os_...``) belong
to the operator path (api/principal.py ``OperatorAccess``).

The console builds /admin/login and /admin/logout on :class:`ConsoleSessions` (``create``,
``end``) and :func:`set_session_cookie` / :func:`clear_session_cookie`; api/auth.py finds the
session of each request and checks :func:`csrf_problem` on unsafe methods.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth import Principal
from ..db import Database
from ..oauth import VerifiedToken
from .principal import AdminPrincipal, ConsoleSession

__all__ = ["MAX_SESSIONS_PER_KEY", "OPERATOR_SESSION_PREFIX", "SESSION_PREFIX", "UNSAFE_METHODS",
           "ConsoleSessions", "came_over_tls", "clear_session_cookie", "cookie_name",
           "csrf_problem", "same_origin", "session_cookie", "set_session_cookie"]

SESSION_PREFIX = "cs_"
OPERATOR_SESSION_PREFIX = "os_"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_COOKIE = "spiral_console"
# The __Host- prefix makes a browser refuse the cookie unless it is Secure, for Path=/ and set
# by this very host (no Domain): a sibling subdomain cannot plant or shadow it.
_TLS_COOKIE = "__Host-spiral_console"
_SECRET_CHARS = 43  # base64url of 32 bytes, unpadded
_COOKIE_LENGTH = len(SESSION_PREFIX) + 32 + _SECRET_CHARS
# Sessions one key may have open (browsers, devices); a new sign-in past it ends the oldest, so
# signing in in a loop cannot grow the table.
MAX_SESSIONS_PER_KEY = 20
# last_seen_at is written at most this often: a page's burst of requests costs one write.
_TOUCH_SECONDS = 30.0


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _tenant_of(cookie: str) -> uuid.UUID | None:
    if len(cookie) != _COOKIE_LENGTH or not cookie.startswith(SESSION_PREFIX):
        return None
    try:
        return uuid.UUID(hex=cookie[len(SESSION_PREFIX):len(SESSION_PREFIX) + 32])
    except ValueError:
        return None


class ConsoleSessions:
    """Create, find and end tenant console sessions; each call is one tenant transaction."""

    def __init__(self, database: Database, *, ttl: float, idle: float) -> None:
        self._db = database
        self._queries = database.queries
        self.ttl = ttl
        self.idle = idle

    async def create(self, admin: AdminPrincipal) -> tuple[str, str]:
        """A new session for a tenant admin signed in with an API key: (cookie value, CSRF
        token); the key's oldest sessions past MAX_SESSIONS_PER_KEY end."""
        principal = admin.principal
        if admin.tenant_id is None or principal is None or principal.credential != "api_key":
            raise ValueError("a key's console session is opened with a tenant admin's API key")
        return await self._open(admin.tenant_id, functools.partial(
            self._queries.create_console_session, key_id=principal.key_id,
            ttl_seconds=self.ttl), owner_id=principal.key_id)

    async def create_for_user(self, admin: AdminPrincipal,
                              token: VerifiedToken) -> tuple[str, str, float]:
        """A new session for a tenant admin signed in with OAuth, ``token`` being the access
        token its principal was mapped from: (cookie value, CSRF token, seconds it lasts:
        CONSOLE_SESSION_TTL, or less, as it ends no later than the token's exp)."""
        principal = admin.principal
        if admin.tenant_id is None or principal is None or principal.credential != "oauth":
            raise ValueError("a user's console session is opened with an OAuth tenant admin")
        lifetime = min(self.ttl, token.expires_at - time.time())
        if lifetime <= 0:
            raise ValueError("the access token has expired")
        cookie, csrf = await self._open(admin.tenant_id, functools.partial(
            self._queries.create_user_console_session, principal_id=principal.key_id,
            oauth_issuer=token.issuer, oauth_subject=token.subject,
            oauth_claims=dict(token.claims), acts_as=principal.user,
            scopes=sorted(principal.scopes), ttl_seconds=lifetime), owner_id=principal.key_id)
        return cookie, csrf, lifetime

    async def _open(self, tenant_id: uuid.UUID, insert: Callable[..., Awaitable[None]], *,
                    owner_id: uuid.UUID) -> tuple[str, str]:
        """A new session of the tenant, its row written by ``insert`` (a create query with
        the session's own columns bound): (cookie value, CSRF token). The tenant's sessions
        that can no longer be used are deleted on the way, and the oldest of ``owner_id`` (the
        key, or the OAuth user's principal id) past MAX_SESSIONS_PER_KEY: a user signing in
        in a loop cannot grow the table either."""
        cookie, csrf = _new_session(tenant_id)
        async with self._db.tenant(tenant_id) as conn:
            await self._queries.reap_console_sessions(conn, idle_seconds=self.idle)
            await insert(conn, tenant_id=tenant_id, session_hash=_hash(cookie), csrf_token=csrf)
            await self._queries.trim_console_sessions(conn, owner_id=owner_id,
                                                      keep=MAX_SESSIONS_PER_KEY)
        return cookie, csrf

    async def admin(self, cookie: str) -> AdminPrincipal | None:
        """The tenant admin of a live session, with ``session`` set; None for a malformed,
        unknown, ended, expired or idle one, or one whose key no longer may administer.
        Raises CONNECTION_ERROR when the database cannot be asked."""
        tenant_id = _tenant_of(cookie)
        if tenant_id is None:
            return None
        session_hash = _hash(cookie)
        async with self._db.tenant(tenant_id) as conn:
            row = await self._queries.find_console_session(
                conn, session_hash=session_hash, idle_seconds=self.idle)
            if row is None:
                return None
            await self._queries.touch_console_session(conn, session_hash=session_hash,
                                                      every_seconds=_TOUCH_SECONDS)
        session = ConsoleSession(
            session_hash=session_hash, csrf_token=row["csrf_token"], tenant_id=tenant_id,
            key_id=row["key_id"], created_at=row["created_at"],
            last_seen_at=row["last_seen_at"], expires_at=row["expires_at"])
        user = row["key_id"] is None
        # An OAuth user's session acts as the user's principal id, as MCP's requests do.
        principal = Principal(tenant_id=tenant_id,
                              key_id=row["principal_id"] if user else row["key_id"],
                              key_name=row["key_name"], scopes=frozenset(row["scopes"]),
                              user=row["acts_as"], credential="oauth" if user else "api_key",
                              expires_at=row["expires_at"].timestamp() if user else None)
        return AdminPrincipal.tenant_admin(principal, session=session)

    async def find(self, cookie: str) -> ConsoleSession | None:
        """The live session of ``cookie``, or None (as :meth:`admin`)."""
        admin = await self.admin(cookie)
        return None if admin is None else admin.session

    async def end(self, cookie: str) -> None:
        """Sign-out: the session is gone (nothing happens for one that is not there)."""
        tenant_id = _tenant_of(cookie)
        if tenant_id is None:
            return
        async with self._db.tenant(tenant_id) as conn:
            await self._queries.end_console_session(conn, session_hash=_hash(cookie))


def _new_session(tenant_id: uuid.UUID) -> tuple[str, str]:
    """A new session's cookie value and CSRF token."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{SESSION_PREFIX}{tenant_id.hex}{secret}", secrets.token_urlsafe(32)


def came_over_tls(request: web.Request) -> bool:
    """Whether the browser reached this server over https: directly, or through a proxy that
    ended TLS and says so (``X-Forwarded-Proto: https``). Believing the header only ever makes
    the cookie stricter (Secure, ``__Host-``): a client that forges it over plain HTTP gets a
    cookie its own browser will not send back."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def cookie_name(request: web.Request) -> str:
    """The session cookie's name: ``__Host-spiral_console`` over TLS, else ``spiral_console``."""
    return _TLS_COOKIE if came_over_tls(request) else _COOKIE


def session_cookie(request: web.Request) -> str | None:
    """The session cookie the request carries, if any."""
    return request.cookies.get(cookie_name(request))


def set_session_cookie(response: web.StreamResponse, request: web.Request, value: str, *,
                       max_age: float) -> None:
    """Set the session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's
    page sends it: CSRF's first wall), Secure over TLS, Path=/."""
    response.set_cookie(cookie_name(request), value, max_age=int(max_age), path="/",
                        httponly=True, secure=came_over_tls(request), samesite="Strict")


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(cookie_name(request), path="/", secure=came_over_tls(request),
                        httponly=True, samesite="Strict")


def same_origin(request: web.Request, origin: str) -> bool:
    """Whether a browser's ``Origin`` is this server as the request reached it."""
    scheme = "https" if came_over_tls(request) else request.scheme
    return origin == f"{scheme}://{request.host}"


def csrf_problem(request: web.Request, session: ConsoleSession, *,
                 form_token: str | None = None) -> str | None:
    """Why an unsafe request authenticated by the session cookie must be refused, or None.

    Defends against cross-site request forgery: a page elsewhere can make a browser send the
    cookie (were SameSite not honoured) but can neither read the session's token nor set a
    foreign Origin to ours.
    """
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(request, origin):
        return f"cross-origin request refused: Origin {origin!r} is not this server"
    token = request.headers.get("X-CSRF-Token") or form_token
    if not token:
        return ("the CSRF token is missing: send the session's token in the X-CSRF-Token "
                "header (or the form field csrf_token)")
    # Constant-time: how long a refusal takes tells nothing of the token.
    if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
        return "the CSRF token does not match this session; reload the page and try again"
    return None
