"""Who calls the admin API: a tenant admin (an API key or OAuth token with the ``admin`` scope,
or a console session opened with one) or an operator; and the hook the operator path installs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..auth import Principal

__all__ = ["OPERATOR", "TENANT_ADMIN", "AdminPrincipal", "ConsoleSession", "OperatorAccess"]

TENANT_ADMIN = "tenant_admin"
OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console session (tenant or operator). ``session_hash`` is SHA-256 of the
    cookie value, the only form stored; ``csrf_token`` is what unsafe requests must echo."""

    session_hash: bytes
    csrf_token: str
    tenant_id: uuid.UUID | None
    key_id: uuid.UUID | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    role: str                         # TENANT_ADMIN | OPERATOR
    actor: str                        # for audit: the key's user or name, or "operator:<name>"
    tenant_id: uuid.UUID | None       # None for an operator
    principal: Principal | None       # the tenant principal: tasks, audit, rate limits
    operator_id: uuid.UUID | None = None
    session: ConsoleSession | None = None   # set when the console cookie authenticated the call

    @classmethod
    def tenant_admin(cls, principal: Principal, *,
                     session: ConsoleSession | None = None) -> AdminPrincipal:
        return cls(role=TENANT_ADMIN, actor=principal.user or principal.key_name,
                   tenant_id=principal.tenant_id, principal=principal, session=session)


class OperatorAccess(Protocol):
    """What the operator path provides (under the app key ``OPERATORS``)."""

    async def principal(self, secret: str) -> AdminPrincipal | None:
        """The operator an ``spo_...`` credential is, or None when it is not valid."""

    async def session(self, cookie: str) -> AdminPrincipal | None:
        """The operator of a live operator console session (cookie value ``os_...``), with
        ``session`` set, or None."""

    async def open_session(self, admin: AdminPrincipal) -> tuple[str, str]:
        """A console session for an operator signed in with its secret: (cookie value ``os_...``,
        CSRF token)."""

    async def end_session(self, cookie: str) -> None:
        """Sign-out of an operator's console session; nothing for one that is not there."""
