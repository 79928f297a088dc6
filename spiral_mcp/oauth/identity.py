"""Who a verified access token is: the tenant it acts in and the principal its requests run as.

The tenant comes from the issuer bindings the operator made (``spiral-mcp oauth bind``, see
migrations/0015_oauth.sql), read through ``oauth_tenant()``: the runtime role cannot list them.
A token that maps to no tenant, or to more than one, is refused.

The principal's ``key_id`` is a principal id stable across the user's tokens, a UUID made from
the issuer, the subject and the tenant, so what is keyed by it (sessions, tasks, request states,
rate limits, audit rows) belongs to the user, not to one token. The tenant is part of it because
one user may reach two tenants (per value of a claim, with different tokens), and an API key's id,
which these places were made for, names one tenant only: a session the user opened in one tenant
is not found with a token of the other. Its scopes are the product scopes whose token
scope (OAUTH_SCOPE_MAP) the token carries. A token carrying none of them is still a principal,
with no scopes: it lists no tools, and a call is answered with a step-up challenge naming the
scope it needs (the client can then ask the user for more), rather than refused at the door where
the client could only start over.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from ..auth import OPERATOR_ACTOR, Principal
from ..config import Settings
from ..db import Database
from ..errors import ServiceError
from .claims import TokenRefused, VerifiedToken

__all__ = ["OAUTH_PRINCIPAL_NAMESPACE", "IdentityMapper", "principal_id"]

# Fixed for good: changing it would give every OAuth user new principal ids, orphaning their
# sessions, tasks and rate-limit history, and splitting their audit trail.
OAUTH_PRINCIPAL_NAMESPACE = uuid.UUID("7d3b3c52-5f0e-4c58-9a57-2f0d0f6b1e19")


# false, or "false" as some issuers (Amazon Cognito) write it.
_UNVERIFIED = (False, "false")


def principal_id(issuer: str, subject: str, tenant_id: uuid.UUID) -> uuid.UUID:
    """The user's principal id in a tenant: the same for every token of one subject at one
    issuer acting in that tenant, and different across issuers (a subject is unique only within
    its issuer) and tenants."""
    return uuid.uuid5(OAUTH_PRINCIPAL_NAMESPACE, f"{issuer}\n{subject}\n{tenant_id}")


def _digest(token: VerifiedToken) -> bytes:
    # The tenant depends on the issuer and the claims alone; a digest keeps the cache small
    # whatever the claims hold.
    claims = orjson.dumps(dict(token.claims), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(token.issuer.encode() + b"\n" + claims).digest()


class IdentityMapper:
    """Turns verified tokens into principals, trusting a tenant resolution for ``cache_ttl``
    seconds (AUTH_CACHE_TTL: a binding removed stops working within it, as a revoked key does).
    """

    def __init__(self, database: Database, settings: Settings, *,
                 cache_size: int = 10_000) -> None:
        self._db = database
        self._ttl = settings.auth_cache_ttl
        self._size = cache_size
        self._user_claims = settings.oauth_user_claims
        self._scope_map = settings.oauth_scope_map
        # By digest of issuer and claims: (when resolved, the tenant or why there is none).
        self._cache: OrderedDict[bytes, tuple[float, uuid.UUID | str]] = OrderedDict()
        # The principals made lately, by the id of the VerifiedToken they were made from (the
        # verifier hands out the same object for each request with one token): each request
        # with a token seen is spared the claims' digest and the principal id. The entry holds
        # the token, so its id cannot be another's while the entry lives.
        self._principals: OrderedDict[int, tuple[float, VerifiedToken, Principal]] = \
            OrderedDict()

    async def principal(self, token: VerifiedToken) -> Principal:
        """The principal ``token`` acts as; TokenRefused when it maps to no single tenant, a
        ServiceError when the database cannot be asked."""
        made = self._principals.get(id(token))
        if made is not None and made[1] is token and time.monotonic() - made[0] < self._ttl:
            self._principals.move_to_end(id(token))
            return made[2]
        tenant = await self._tenant(token)
        if isinstance(tenant, str):
            raise TokenRefused(tenant)
        principal = self._make(token, tenant)
        self._principals[id(token)] = (time.monotonic(), token, principal)
        self._principals.move_to_end(id(token))
        while len(self._principals) > self._size:
            self._principals.popitem(last=False)
        return principal

    def _make(self, token: VerifiedToken, tenant: uuid.UUID) -> Principal:
        return Principal(
            tenant_id=tenant, key_id=principal_id(token.issuer, token.subject, tenant),
            key_name=f"oauth:{token.subject}",
            scopes=frozenset(ours for ours, theirs in self._scope_map if theirs in token.scopes),
            user=self._user(token.claims), credential="oauth", expires_at=token.expires_at,
            still_valid=functools.partial(self._still_acts, token, tenant))

    async def _still_acts(self, token: VerifiedToken, tenant: uuid.UUID) -> bool:
        """Whether the user of ``token`` still acts in ``tenant``: its binding not removed (seen
        within AUTH_CACHE_TTL, as a revoked key is). Its exp is not asked here: a stream ends
        then, a task (the user's) goes on. Taken as so while the database cannot be asked: an
        outage must not end every stream and task at once."""
        try:
            return await self._tenant(token) == tenant
        except ServiceError:
            return True

    def _user(self, claims: Mapping[str, Any]) -> str | None:
        for name in self._user_claims:
            value = claims.get(name)
            # A claim its issuer says is unverified (OpenID's email_verified, phone_number_
            # verified) is only what the user typed: someone else's address would make them
            # the author of this user's writes.
            # One reading "operator:..." would pose as an operator in the audit log, as a
            # key's name and user may not (admin/keys.py): it names nobody either.
            if isinstance(value, str) and value.strip() \
                    and not value.strip().lower().startswith(OPERATOR_ACTOR) \
                    and claims.get(f"{name}_verified") not in _UNVERIFIED:
                return value
        return None

    async def _tenant(self, token: VerifiedToken) -> uuid.UUID | str:
        key = _digest(token)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            self._cache.move_to_end(key)
            return cached[1]
        async with self._db.connection() as conn:
            rows = await self._db.queries.oauth_tenant(conn, issuer=token.issuer,
                                                       claims=dict(token.claims))
        tenant = _resolution(token.issuer, rows)
        self._cache[key] = (time.monotonic(), tenant)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return tenant


def _resolution(issuer: str, rows: list[Any]) -> uuid.UUID | str:
    """The tenant of oauth_tenant()'s rows, or the sentence refusing the token."""
    if not rows:
        return (f"no tenant is bound to this token's issuer ({issuer}); the server's operator "
                "binds one with spiral-mcp oauth bind")
    claim = rows[0]["claim"]
    if len(rows) > 1:
        return (f"this token's {claim} claim names more than one tenant bound at its issuer "
                f"({issuer}); a token must name one")
    if rows[0]["tenant_id"] is None:
        return (f"no tenant is bound to this token's {claim} claim at its issuer ({issuer}); "
                "the server's operator binds one with spiral-mcp oauth bind")
    if rows[0]["suspended"]:
        return ("the tenant this token acts in is suspended by the server's operator; its "
                "tokens work again once an operator resumes it")
    return rows[0]["tenant_id"]
