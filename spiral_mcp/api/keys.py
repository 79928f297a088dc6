"""API keys of the caller's tenant: list, create (the secret in the 201 only), read, revoke.

Everything runs in the caller's tenant transaction: another tenant's key id is not found. Each
change writes its audit row in the same transaction; the secret is never audited or logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .. import admin
from ..errors import ErrorCode, ServiceError
from ..server.keys import AUTHENTICATOR
from .routing import ApiCall, ApiRoutes

__all__ = ["MAX_LIVE_KEYS", "routes"]

routes = ApiRoutes()

# Live keys a tenant may hold: far more than people and bots need, few enough that an admin key
# in a loop cannot grow the key table (and every list of it) without end.
MAX_LIVE_KEYS = 500


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
    if at <= datetime.now(UTC):
        raise ServiceError(ErrorCode.VALIDATION_ERROR,
                           f"expires_at {value!r} is in the past; a new key must expire later")
    return at


@routes.operation("GET", "/keys", summary="List the tenant's API keys", response="key_list")
async def list_keys(call: ApiCall) -> dict[str, Any]:
    """Every key of the tenant, revoked and expired ones included, oldest first; never a hash
    or a secret."""
    async with call.tenant(readonly=True) as conn:
        keys = await admin.list_keys(conn, call.queries, call.admin.tenant_id)
    return {"keys": keys}


@routes.operation("POST", "/keys", summary="Create an API key", body="key_create",
                  response="key_created", status=201)
async def create_key(call: ApiCall) -> dict[str, Any]:
    """The new key and its secret. The secret is in this answer only: it is stored as a hash,
    and no list, read or audit row shows it."""
    body = call.body
    expires_at = _expiry(body.get("expires_at"))
    async with call.tenant(readonly=False) as conn:
        # Checked before the insert: two creations at once may pass it together, a few over
        # at most (each spends the caller's write budget).
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
    return {"key": key, "secret": secret}


@routes.operation("GET", "/keys/{key_id}", summary="Read an API key", response="key")
async def get_key(call: ApiCall) -> dict[str, Any]:
    """One key of the tenant (never its hash or secret)."""
    async with call.tenant(readonly=True) as conn:
        return await admin.get_key(conn, call.queries, call.path["key_id"])


@routes.operation("DELETE", "/keys/{key_id}", summary="Revoke an API key", response="key")
async def revoke_key(call: ApiCall) -> dict[str, Any]:
    """The key, revoked: it stops authenticating (at once in this process, within
    AUTH_CACHE_TTL in others), and its console sessions end at once. Revoking a revoked key is
    a CONFLICT."""
    key_id = call.path["key_id"]
    async with call.tenant(readonly=False) as conn:
        before = await admin.get_key(conn, call.queries, key_id)
        if before["state"] == "revoked":
            raise ServiceError(ErrorCode.CONFLICT, f"key {key_id} is already revoked")
        await admin.revoke_api_key(conn, call.queries, key_id)
        after = await admin.get_key(conn, call.queries, key_id)
        await call.audit(conn, "keys.revoke", arguments={"key_id": key_id}, before=before,
                         after=after)
    call.request.config_dict[AUTHENTICATOR].forget(call.admin.tenant_id, key_id)
    return after
