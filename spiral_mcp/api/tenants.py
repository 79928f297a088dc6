"""Tenants, for operators (OPERATOR_API=on): list, create, look at, suspend, resume, delete with
all its data, and every tenant's usage.

Each runs on the owner role's pool of the operator path (server/operators.py), through the same
domain functions as the CLI (spiral_mcp.admin.tenants), and leaves a row in operator_audit: the
reads too, since an operator reading across tenants is what the audit is there to show. A tenant
admin is refused at the door (PERMISSION_DENIED "this route is for operators").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ..admin import operators, tenants
from ..errors import ErrorCode, ServiceError
from .operator_access import OwnerOperators, operator_of
from .routing import OPERATOR, ApiCall, ApiRoutes
from .state import OPERATORS

__all__ = ["routes"]

routes = ApiRoutes()

Work = Callable[[asyncpg.Connection, operators.Operator], Awaitable[Any]]


async def _audited(call: ApiCall, action: str, work: Work, *,
                   arguments: dict[str, Any] | None = None, record: bool = False) -> Any:
    """``work`` in a transaction on the owner's pool, its failure recorded apart. ``record``:
    the work's success is recorded here (a read); changes record their own, in their domain
    function."""
    access: OwnerOperators = call.request.config_dict[OPERATORS]
    operator = operator_of(call.admin)
    tenant_id = call.path.get("tenant_id")
    queries = access.database.queries

    async def run(conn: asyncpg.Connection) -> Any:
        result = await work(conn, operator)
        if record:
            await operators.record(conn, queries, operator, action, tenant_id=tenant_id,
                                   arguments=arguments)
        return result

    return await operators.audited(access.transaction, queries, operator, action,
                                   tenant_id=tenant_id, arguments=arguments, work=run)


def _queries(call: ApiCall) -> Any:
    return call.request.config_dict[OPERATORS].database.queries


@routes.operation("GET", "/tenants", summary="List every tenant", response="tenant_list",
                  role=OPERATOR)
async def list_tenants(call: ApiCall) -> dict[str, Any]:
    """Every tenant of the installation, oldest first, with whether it is suspended and its
    live keys."""
    queries = _queries(call)
    found = await _audited(call, "tenants.list",
                           lambda conn, _op: tenants.list_tenants(conn, queries), record=True)
    return {"tenants": found}


@routes.operation("POST", "/tenants", summary="Create a tenant", body="tenant_create",
                  response="tenant", status=201, role=OPERATOR)
async def create_tenant(call: ApiCall) -> dict[str, Any]:
    """A new tenant, with no key yet: its admin's first key is made with
    ``spiral-mcp apikey create``. Recorded in operator_audit and the tenant's own audit log."""
    queries = _queries(call)
    return await _audited(call, "tenants.create", lambda conn, op: tenants.add_tenant(
        conn, queries, op, call.body["name"]), arguments=call.body)


@routes.operation("GET", "/tenants/{tenant_id}", summary="Look at a tenant",
                  response="tenant_detail", role=OPERATOR)
async def get_tenant(call: ApiCall) -> dict[str, Any]:
    """A tenant with its live keys, source instances and calls of the last 24 hours."""
    queries = _queries(call)
    return await _audited(call, "tenants.get", lambda conn, _op: tenants.tenant_detail(
        conn, queries, call.path["tenant_id"]), record=True)


@routes.operation("POST", "/tenants/{tenant_id}/suspend", summary="Suspend a tenant",
                  response="tenant", role=OPERATOR)
async def suspend_tenant(call: ApiCall) -> dict[str, Any]:
    """Its API keys and OAuth tokens are refused (within AUTH_CACHE_TTL) with a message saying
    so, and its sources are no longer synced in the background, until it is resumed."""
    queries = _queries(call)
    return await _audited(call, "tenants.suspend", lambda conn, op: tenants.suspend_tenant(
        conn, queries, op, call.path["tenant_id"]))


@routes.operation("POST", "/tenants/{tenant_id}/resume", summary="Resume a suspended tenant",
                  response="tenant", role=OPERATOR)
async def resume_tenant(call: ApiCall) -> dict[str, Any]:
    """Its keys and OAuth tokens work again (within AUTH_CACHE_TTL)."""
    queries = _queries(call)
    return await _audited(call, "tenants.resume", lambda conn, op: tenants.resume_tenant(
        conn, queries, op, call.path["tenant_id"]))


@routes.operation("DELETE", "/tenants/{tenant_id}", summary="Delete a tenant and all its data",
                  body="tenant_delete", response="tenant_deleted", role=OPERATOR)
async def delete_tenant(call: ApiCall) -> dict[str, Any]:
    """Every row of the tenant in one transaction, once the body's ``confirm`` is its exact
    name (else 400 saying what to send); the rows deleted per table."""
    queries = _queries(call)
    confirm = call.body.get("confirm")
    return await _audited(call, "tenants.delete", lambda conn, op: tenants.delete_tenant(
        conn, queries, op, call.path["tenant_id"], confirm=confirm), arguments=call.body)


def _moment(call: ApiCall, name: str, default: datetime) -> datetime:
    raw = call.query.get(name)
    if raw is None:
        return default
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ServiceError(ErrorCode.VALIDATION_ERROR,
                           f"{name} must be an ISO 8601 time with a time zone, such as "
                           f"2026-01-31T00:00:00Z; got {raw[:64]!r}")
    return moment


@routes.operation("GET", "/usage/tenants", summary="Every tenant's usage over a window",
                  query="tenant_usage_query", response="tenant_usage", role=OPERATOR)
async def tenant_usage(call: ApiCall) -> dict[str, Any]:
    """Calls, errors and p50/p95 duration (ms) per tenant from its audit log, over
    [since, until) (default: the last 24 hours)."""
    queries = _queries(call)

    async def usage(conn: asyncpg.Connection, _op: operators.Operator) -> dict[str, Any]:
        until = _moment(call, "until", datetime.now(UTC))
        since = _moment(call, "since", until - timedelta(hours=24))
        return {"since": since, "until": until, "tenants": await tenants.usage_by_tenant(
            conn, queries, since=since, until=until)}

    return await _audited(call, "usage.tenants", usage, arguments=dict(call.query), record=True)
