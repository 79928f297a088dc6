"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from aiohttp import web

from ..api.sessions import ConsoleSessions
from ..auth import Authenticator, Principal
from ..config import Settings
from ..credentials import BearerCheck
from ..db import Database
from ..explorer import Explorer
from ..oauth import TokenVerifier
from ..oauth.authorization import AuthorizationClient
from ..oauth.identity import IdentityMapper
from ..protocol.dispatcher import Dispatcher
from ..protocol.sessions import SessionStore
from ..protocol.tasks import TaskRunner
from ..ratelimit import RateLimiter
from ..replica import Replica
from ..sources.access import SourceAccess
from ..task_store import TaskStore
from ..tasks import BackgroundTasks
from ..tracing import Tracer
from .metrics import Metrics
from .shutdown import ShutdownClock

__all__ = [
    "AUTHENTICATOR",
    "BACKGROUND",
    "BEARER",
    "CONSOLE_OAUTH",
    "CONSOLE_SESSIONS",
    "CORS_ORIGIN",
    "DATABASE",
    "DISPATCHER",
    "EXPLORER",
    "HEAD_MIGRATIONS",
    "IDENTITIES",
    "KEY_STILL_VALID",
    "METRICS",
    "PRINCIPAL",
    "RATE_LIMITER",
    "REDIS",
    "REPLICA",
    "REQUEST_ID",
    "SESSIONS",
    "SETTINGS",
    "SHUTDOWN",
    "TASK_RUNNER",
    "TASK_STORE",
    "TEMPLATES",
    "TOKEN_VERIFIER",
    "TRACER",
]

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
DATABASE = web.AppKey("database", Database)
REPLICA = web.AppKey("replica", Replica)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
# The one verification of bearer credentials (API keys, OAuth tokens), for /mcp and /api/v1 alike.
BEARER = web.AppKey("bearer", BearerCheck)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
HEAD_MIGRATIONS = web.AppKey("head_migrations", tuple)
REDIS = web.AppKey("redis", redis.Redis)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
EXPLORER = web.AppKey("explorer", Explorer)
SESSIONS = web.AppKey("sessions", SessionStore)
BACKGROUND = web.AppKey("background", BackgroundTasks)
TEMPLATES = web.AppKey("templates", list)
SOURCES = web.AppKey("sources", SourceAccess)
SHUTDOWN = web.AppKey("shutdown", ShutdownClock)
TASK_RUNNER = web.AppKey("task_runner", TaskRunner)
# The tasks' store, shared by MCP's tasks and the admin API's (a sync started from the console).
TASK_STORE = web.AppKey("task_store", TaskStore)
# The web console's sessions (api/sessions.py), for the API's cookie auth and the console.
CONSOLE_SESSIONS = web.AppKey("console_sessions", ConsoleSessions)
# The console's OAuth client (CONSOLE_OAUTH_CLIENT_ID set); absent: the console offers keys only.
CONSOLE_OAUTH = web.AppKey("console_oauth", AuthorizationClient)
# Present when OAuth is configured (OAUTH_ISSUERS).
TOKEN_VERIFIER = web.AppKey("token_verifier", TokenVerifier)
IDENTITIES = web.AppKey("identities", IdentityMapper)
# The process's tracer, set first at start-up (server/tracing.py); None: tracing is off.
TRACER = web.AppKey[Tracer | None]("tracer")

PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
# The request's Origin once origin_guard has allowed it: its answer may be read by that page.
CORS_ORIGIN = web.RequestKey("cors_origin", str)
# Whether the credential that opened a long-lived stream still authenticates (set by
# authenticate, asked by the streams): a revoked or expired key's streams end, not only its next
# requests, and so do an OAuth token's once its exp has passed.
KEY_STILL_VALID = web.RequestKey[Callable[[], Awaitable[bool]]]("key_still_valid")
