"""API keys of the caller's tenant: list, create (the secret in the 201 only), read, revoke.

Everything runs in the caller's tenant transaction: another tenant's key id is not found. Each
change writes its audit row in the same transaction; the secret is never audited or logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from .. import admin
from ..admin.keys import KEY_PAGE_DEFAULT
from ..errors import ErrorCode, ServiceError
from ..server.keys import AUTHENTICATOR
from .routing import ApiCall, ApiRoutes

__all__ = ["LAST_ADMIN_KEY", "MAX_LIVE_KEYS", "routes"]

routes = ApiRoutes()

# Live keys a tenant may hold: far more than people and bots need, few enough that an admin key
# in a loop cannot grow the key table (and every list of it) without end.
MAX_LIVE_KEYS = 500
LAST_ADMIN_KEY = ("this is the tenant's last admin key (no other lasts as long); create another "
                  "admin key first")


def _expiry(value: str | None) -> datetime | None:
    """``expires_at`` of a new key: None, or an aware time in the future."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ServiceError(ErrorCode.VALIDATION_ERROR,
                           f"expires_at {value!r} is not an ISO 8601 date and time, such as "
                           "2030-01-31T12:00:00Z") from None
    if at.tzinfo is None:
        raise ServiceError(ErrorCode.VALIDATION_ERROR,
                           f"expires_at {value!r} needs a time zone, such as Z or +02:00")
    try:
        # In UTC, as it is stored: a far-west offset on 9999-12-31 is year 10000 (a 500 if
        # it got to the database driver).
        at = at.astimezone(UTC)
    except OverflowError:
        raise ServiceError(ErrorCode.VALIDATION_ERROR,
                           f"expires_at {value!r} is after 9999-12-31T23:59:59Z, the latest a "
                           "key may expire") from None
    if at <= datetime.now(UTC):
        raise ServiceError(ErrorCode.VALIDATION_ERROR,
                           f"expires_at {value!r} is in the past; a new key must expire later")
    return at


@routes.operation("GET", "/keys", summary="List the tenant's API keys", query="key_query",
                  response="key_list")
async def list_keys(call: ApiCall) -> dict[str, Any]:
    """The tenant's keys in one state (live unless asked: revoked, expired or all), newest
    first, in keyset pages: follow next_cursor with the same state. Never a hash or a
    secret."""
    query = call.query
    async with call.tenant(readonly=True) as conn:
        return await admin.key_page(conn, call.queries, state=query.get("state", "live"),
                                    limit=query.get("limit", KEY_PAGE_DEFAULT),
                                    cursor=query.get("cursor"))


@routes.operation("POST", "/keys", summary="Create an API key", body="key_create",
                  response="key_created", status=201, audit="keys.create")
async def create_key(call: ApiCall) -> dict[str, Any]:
    """The new key and its secret. The secret is in this answer only: it is stored as a hash,
    and no list, read or audit row shows it. A key made with a key that expires expires no
    later than it (without expires_at: when it does, and ``note`` says so); a tenant admin may
    make keys acting for any user of its tenant (the audit row names who made it)."""
    body = call.body
    expires_at = _expiry(body.get("expires_at"))
    note = None
    async with call.tenant(readonly=False) as conn:
        maker_expiry = await _maker_expiry(call, conn)
        if maker_expiry is not None:
            if expires_at is None:
                expires_at = maker_expiry
                note = (f"expires_at is {maker_expiry.isoformat()}, when the key that made it "
                        "expires: a key may not outlive the key that made it")
            elif expires_at > maker_expiry:
                raise ServiceError(ErrorCode.VALIDATION_ERROR,
                                   f"expires_at {body['expires_at']!r} is after "
                                   f"{maker_expiry.isoformat()}, when the key that makes it "
                                   "expires: a key may not outlive the key that made it")
        # Creations of one tenant wait for each other here, so the count below is exact.
        await call.queries.lock_tenant_keys(conn, tenant_id=call.admin.tenant_id)
        if await call.queries.count_live_keys(conn) >= MAX_LIVE_KEYS:
            raise ServiceError(ErrorCode.CONFLICT,
                               f"this tenant has {MAX_LIVE_KEYS} live keys, the most it may "
                               "have; revoke one first")
        key_id, secret = await admin.create_api_key(
            conn, call.queries, tenant_id=call.admin.tenant_id, name=body["name"],
            scopes=body["scopes"], user=body.get("user"), expires_at=expires_at)
        key = await admin.get_key(conn, call.queries, key_id)
        await call.audit(conn, "keys.create", arguments=body, after=key)
    call.headers["Location"] = f"/api/v1/keys/{key_id}"
    return {"key": key, "secret": secret, "note": note}


async def _maker_expiry(call: ApiCall, conn: asyncpg.Connection) -> datetime | None:
    """When the API key making a key (by bearer or through its console session) expires;
    None for a key that never does and for an OAuth user, whose short-lived token is renewed
    as the user signs in again and so bounds nothing."""
    principal = call.tenant_principal
    if principal.credential != "api_key":
        return None
    maker = await admin.get_key(conn, call.queries, principal.key_id)
    return maker["expires_at"]


@routes.operation("GET", "/keys/{key_id}", summary="Read an API key", response="key")
async def get_key(call: ApiCall) -> dict[str, Any]:
    """One key of the tenant (never its hash or secret)."""
    async with call.tenant(readonly=True) as conn:
        return await admin.get_key(conn, call.queries, call.path["key_id"])


@routes.operation("DELETE", "/keys/{key_id}", summary="Revoke an API key", response="key",
                  audit="keys.revoke")
async def revoke_key(call: ApiCall) -> dict[str, Any]:
    """The key, revoked: it stops authenticating (at once in this process, within
    AUTH_CACHE_TTL in others), and its console sessions end at once. Revoking a revoked key,
    or the tenant's last admin key (no other live admin key lasts as long: nobody could
    manage the tenant once it is gone), is a
    CONFLICT."""
    key_id = call.path["key_id"]
    async with call.tenant(readonly=False) as conn:
        # Revocations of one tenant wait for each other: two admins revoking the last two
        # admin keys at once cannot both pass the count.
        await call.queries.lock_tenant_keys(conn, tenant_id=call.admin.tenant_id)
        before = await admin.get_key(conn, call.queries, key_id)
        if before["state"] == "revoked":
            raise ServiceError(ErrorCode.CONFLICT, f"key {key_id} is already revoked")
        # An admin key expiring tomorrow does not stand in for one that never expires.
        if (before["state"] == "live" and "admin" in before["scopes"]
                and not await call.queries.another_admin_key_lasts(conn, key_id=key_id)):
            raise ServiceError(ErrorCode.CONFLICT, LAST_ADMIN_KEY)
        await admin.revoke_api_key(conn, call.queries, key_id)
        after = await admin.get_key(conn, call.queries, key_id)
        await call.audit(conn, "keys.revoke", arguments={"key_id": key_id}, before=before,
                         after=after)
    call.request.config_dict[AUTHENTICATOR].forget(call.admin.tenant_id, key_id)
    return after
