"""Operator actions on OAuth issuer bindings, run as the owner role (the CLI's connection).

A binding says which tenant an authorization server's tokens act in: the issuer whole, or one
value of a claim of its tokens (``org_id`` = ``acme``). The database refuses a binding that
conflicts with another (see migrations/0015_oauth.sql); its message, written for the operator,
is passed on as it is.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from ..admin import AdminError, rows_as_dicts
from ..queries import Queries

__all__ = ["bind", "check_claim", "list_bindings", "unbind"]


def check_claim(claim: str | None, value: str | None) -> tuple[str | None, str | None]:
    """The claim and value of a binding, both or neither; AdminError says what is wrong."""
    if (claim is None) != (value is None):
        raise AdminError("give --claim and --value together (or neither, to bind the issuer "
                         "whole)")
    if claim is None or value is None:
        return None, None
    if not 1 <= len(claim) <= 200 or claim != claim.strip():
        raise AdminError(f"a claim name has 1 to 200 characters and no surrounding spaces, "
                         f"got {claim!r}")
    if not 1 <= len(value) <= 1000:
        raise AdminError("a claim value has 1 to 1000 characters")
    return claim, value


def _describe(issuer: str, claim: str | None, value: str | None) -> str:
    return f"issuer {issuer}" if claim is None else f"claim {claim} = {value} of issuer {issuer}"


async def bind(conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID, issuer: str,
               claim: str | None = None, value: str | None = None) -> uuid.UUID:
    """Bind ``issuer`` (or one value of its ``claim``) to a tenant; the binding's id."""
    claim, value = check_claim(claim, value)
    if not await queries.tenant_exists(conn, tenant_id=tenant_id):
        raise AdminError(f"no tenant with id {tenant_id}")
    try:
        return await queries.oauth_bind(conn, tenant_id=tenant_id, issuer=issuer, claim=claim,
                                        claim_value=value)
    except asyncpg.UniqueViolationError as exc:  # oauth_binding_check: a conflicting binding
        raise AdminError(str(exc)) from None


async def unbind(conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
                 issuer: str, claim: str | None = None, value: str | None = None) -> None:
    claim, value = check_claim(claim, value)
    removed = await queries.oauth_unbind(conn, tenant_id=tenant_id, issuer=issuer, claim=claim,
                                         claim_value=value)
    if removed is None:
        raise AdminError(f"{_describe(issuer, claim, value)} is not bound to tenant {tenant_id} "
                         "(see spiral-mcp oauth list)")


async def list_bindings(conn: asyncpg.Connection, queries: Queries,
                        tenant_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    return rows_as_dicts(await queries.oauth_bindings(conn, tenant_id=tenant_id))
