"""Tenants, and what an operator does to them: create, list, look at, suspend, resume, delete
with all its data, and compare their usage.

Run as the owner role, which sees every tenant's registry row (its owner_admin policy) but every
other tenant table only under the tenant's context, like any role: so each step that reads or
writes a tenant's data sets that tenant first. Every change is a row of operator_audit, and of
the tenant's own audit log when the tenant lives on. No function opens a transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from ..queries import Queries
from .errors import AdminError, AdminNotFound, rows_as_dicts
from .operators import Operator, record

__all__ = [
    "TenantNotFound",
    "add_tenant",
    "create_tenant",
    "delete_tenant",
    "list_tenants",
    "resume_tenant",
    "suspend_tenant",
    "tenant_detail",
    "usage_by_tenant",
]


class TenantNotFound(AdminNotFound):
    """No tenant has that id."""

    def __init__(self, tenant_id: uuid.UUID) -> None:
        super().__init__(f"no tenant with id {tenant_id}")


async def create_tenant(conn: asyncpg.Connection, queries: Queries, name: str) -> uuid.UUID:
    """A new tenant, with no key and nothing recorded (first start, tests); operators create
    tenants with :func:`add_tenant`."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise AdminError("a tenant name has 1 to 200 characters")
    return await queries.create_tenant(conn, name=name)


def _tenant(row: asyncpg.Record) -> dict[str, Any]:
    return {"tenant_id": row["tenant_id"], "name": row["name"], "created_at": row["created_at"],
            "suspended": row["suspended_at"] is not None, "suspended_at": row["suspended_at"]}


async def _tenant_audit(conn: asyncpg.Connection, queries: Queries, operator: Operator,
                        tenant_id: uuid.UUID, action: str, *, arguments: dict[str, Any],
                        after: dict[str, Any]) -> None:
    """The row the tenant's own audit log keeps of what an operator did to it."""
    await queries.set_tenant(conn, tenant_id=str(tenant_id))
    await queries.insert_audit(
        conn, tenant_id=tenant_id, key_id=None, actor=operator.actor, tool=f"admin:{action}",
        arguments=arguments, outcome="ok", error_code=None, duration_ms=None, request_id=None,
        before=None, after=after)


async def list_tenants(conn: asyncpg.Connection, queries: Queries) -> list[dict[str, Any]]:
    """Every tenant, with whether it is suspended and how many live keys it has."""
    return [{**row, "suspended": row["suspended_at"] is not None}
            for row in rows_as_dicts(await queries.list_tenants(conn))]


async def tenant_detail(conn: asyncpg.Connection, queries: Queries,
                        tenant_id: uuid.UUID) -> dict[str, Any]:
    """A tenant with its live keys, source instances and calls of the last 24 hours."""
    row = await queries.get_tenant(conn, tenant_id=tenant_id)
    if row is None:
        raise TenantNotFound(tenant_id)
    await queries.set_tenant(conn, tenant_id=str(tenant_id))
    figures = await queries.tenant_figures(conn, tenant_id=tenant_id)
    return {**_tenant(row), "keys": figures["keys"], "instances": figures["instances"],
            "calls_24h": figures["calls_24h"]}


async def add_tenant(conn: asyncpg.Connection, queries: Queries, operator: Operator,
                     name: str) -> dict[str, Any]:
    """Create a tenant (no key: its admin's first key is made with ``apikey create``)."""
    tenant_id = await create_tenant(conn, queries, name)
    row = await queries.get_tenant(conn, tenant_id=tenant_id)
    tenant = _tenant(row)
    arguments = {"name": tenant["name"]}
    await _tenant_audit(conn, queries, operator, tenant_id, "tenants.create",
                        arguments=arguments, after={"name": tenant["name"]})
    await record(conn, queries, operator, "tenants.create", tenant_id=tenant_id,
                 arguments=arguments)
    return tenant


async def _set_suspended(conn: asyncpg.Connection, queries: Queries, operator: Operator,
                         tenant_id: uuid.UUID, *, suspended: bool) -> dict[str, Any]:
    action = "tenants.suspend" if suspended else "tenants.resume"
    if await queries.lock_tenant(conn, tenant_id=tenant_id) is None:
        raise TenantNotFound(tenant_id)
    tenant = _tenant(await queries.set_tenant_suspended(conn, tenant_id=tenant_id,
                                                        suspended=suspended))
    after = {"suspended_at": tenant["suspended_at"]}
    await _tenant_audit(conn, queries, operator, tenant_id, action, arguments={}, after=after)
    await record(conn, queries, operator, action, tenant_id=tenant_id, detail=after)
    return tenant


async def suspend_tenant(conn: asyncpg.Connection, queries: Queries, operator: Operator,
                         tenant_id: uuid.UUID) -> dict[str, Any]:
    """Suspend a tenant: its keys and OAuth bindings stop authenticating (within
    AUTH_CACHE_TTL) and its sources are no longer synced in the background. Suspending a
    suspended tenant changes nothing but is recorded."""
    return await _set_suspended(conn, queries, operator, tenant_id, suspended=True)


async def resume_tenant(conn: asyncpg.Connection, queries: Queries, operator: Operator,
                        tenant_id: uuid.UUID) -> dict[str, Any]:
    """Undo a suspension (nothing to undo: recorded all the same)."""
    return await _set_suspended(conn, queries, operator, tenant_id, suspended=False)


async def delete_tenant(conn: asyncpg.Connection, queries: Queries, operator: Operator,
                        tenant_id: uuid.UUID, *, confirm: str | None) -> dict[str, Any]:
    """Delete a tenant and every row of it, once ``confirm`` is its exact name; the rows
    deleted per table."""
    row = await queries.lock_tenant(conn, tenant_id=tenant_id)
    if row is None:
        raise TenantNotFound(tenant_id)
    if confirm != row["name"]:
        raise AdminError(f"deleting tenant {tenant_id} removes all its data: confirm with its "
                         f"exact name, {row['name']!r}")
    deleted = await queries.delete_tenant_rows(conn, tenant_id=tenant_id)
    await record(conn, queries, operator, "tenants.delete", tenant_id=tenant_id,
                 arguments={"confirm": confirm}, detail={"deleted": deleted})
    return {"tenant_id": tenant_id, "name": row["name"], "deleted": deleted}


async def usage_by_tenant(conn: asyncpg.Connection, queries: Queries, *, since: datetime,
                          until: datetime) -> list[dict[str, Any]]:
    """Calls, errors and p50/p95 duration (ms) of every tenant over [since, until)."""
    if since >= until:
        raise AdminError("since must be before until")
    return rows_as_dicts(await queries.tenant_usage(conn, since=since, until=until))
