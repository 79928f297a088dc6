"""A tenant's source instances as its admin manages them (the admin API): read, added, changed and
removed with the checks of the CLI's ``source`` commands (sources/manage.py), never a credential
out. Each function runs in the caller's tenant transaction (row-level security shows that
tenant's instances only); another tenant's instance, like none, is :class:`AdminNotFound`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from ..queries import Queries
from ..sources import manage
from ..sources.base import SourceAdminError
from ..sources.networks import SourceNetworks
from ..sources.secrets import SecretBox
from ..sources.sync import lock_key
from .errors import AdminError, AdminNotFound
from .runs import latest_runs

__all__ = ["InstanceBusy", "create_instance", "delete_instance", "get_instance",
           "instance_view", "list_instances", "update_instance"]


class InstanceBusy(AdminError):
    """A sync of the instance runs: the change waits for it (CONFLICT)."""


def instance_view(row: asyncpg.Record, last_run: dict[str, Any] | None) -> dict[str, Any]:
    """An instance as its admin sees it: where it syncs from, its mappings and rate, its last
    run; whether credentials are stored, never them."""
    config = orjson.loads(row["config"]) if row["config"] else {}
    adapter = manage.adapter_class(row["kind"])
    return {
        "instance_id": row["instance_id"], "kind": row["kind"], "name": row["name"],
        "base_url": row["base_url"], "projects": config.get("projects", {}),
        "mappings": {key: config[key] for key in adapter.overrides if key in config},
        "rate": manage.rate_of(config, adapter), "has_credentials": row["has_credentials"],
        "last_synced_at": row["last_synced_at"], "created_at": row["created_at"],
        "cursor": orjson.loads(row["sync_cursor"]) if row["sync_cursor"] else None,
        "last_run": last_run,
    }


async def list_instances(conn: asyncpg.Connection, queries: Queries) -> list[dict[str, Any]]:
    latest = await latest_runs(conn, queries)
    return [instance_view(row, latest.get(row["instance_id"]))
            for row in await queries.source_list(conn)]


async def _row(conn: asyncpg.Connection, queries: Queries,
               instance_id: uuid.UUID) -> asyncpg.Record:
    row = await queries.source_read(conn, instance_id=instance_id)
    if row is None:
        raise AdminNotFound(f"no source instance with id {instance_id}")
    return row


async def get_instance(conn: asyncpg.Connection, queries: Queries,
                       instance_id: uuid.UUID) -> dict[str, Any]:
    row = await _row(conn, queries, instance_id)
    return instance_view(row, (await latest_runs(conn, queries)).get(instance_id))


# The CLI's options as the API's body names them, in the checks' messages.
_FIELDS = {"--base-url": "base_url", "--project": "projects", "--rate": "rate",
           "--unmap": "unmap", "--map": "map", "--email": "email"}


def _refused(exc: SourceAdminError) -> AdminError:
    """A check of the CLI's, said in the API's words: bad input, one line."""
    message = str(exc)
    for option, field in _FIELDS.items():
        message = message.replace(option, field)
    return AdminError(message)


def _checked(call: Any) -> Any:
    try:
        return call()
    except SourceAdminError as exc:
        raise _refused(exc) from None


async def create_instance(
    conn: asyncpg.Connection, queries: Queries, box: SecretBox, *, tenant_id: uuid.UUID,
    kind: str, name: str, base_url: str | None, token: str, email: str | None,
    projects: Mapping[str, str], rate: str | None, mappings: Sequence[str],
    networks: SourceNetworks | None = None,
) -> dict[str, Any]:
    """Add an instance, checked as ``spiral-mcp source add`` checks it (its address public or
    in ``networks``, SOURCE_PRIVATE_NETWORKS); the new instance."""
    adapter = _checked(lambda: manage.adapter_class(kind))
    project_map = _checked(lambda: manage.parse_project_map(
        [f"{ref}={key}" for ref, key in projects.items()], adapter))
    overrides = _checked(lambda: manage.parse_overrides(mappings, adapter))
    requests = None if rate is None else _checked(lambda: manage.parse_rate(rate, adapter))
    try:
        instance_id = await manage.add_source(
            conn, queries, box, tenant_id=tenant_id, kind=kind, name=name, base_url=base_url,
            projects=project_map, token=token, email=email, overrides=overrides, rate=requests,
            networks=networks)
    except SourceAdminError as exc:
        raise _refused(exc) from None
    return await get_instance(conn, queries, instance_id)


async def update_instance(
    conn: asyncpg.Connection, queries: Queries, instance_id: uuid.UUID, *,
    tenant_id: uuid.UUID, name: str | None = None, rate: str | None = None,
    mapped: Sequence[str] = (), unmapped: Sequence[str] = (),
    projects: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Rename, set the request rate (``default``: the kind's), set or remove mapping
    overrides, or map further source projects; all checked before any is made. A project
    already mapped keeps its local key (its items carry it)."""
    row = await _row(conn, queries, instance_id)
    if name is not None:
        if not 1 <= len(name.strip()) <= 200:
            raise AdminError("a source name has 1 to 200 characters")
        try:
            await queries.source_rename(conn, instance_id=instance_id, name=name.strip())
        except asyncpg.UniqueViolationError:
            raise AdminError(f"the tenant already has a source named {name.strip()!r}") from None
    if projects is not None:
        await _add_projects(conn, queries, row, projects)
    if mapped or unmapped or rate is not None:
        try:
            await manage.change_overrides(conn, queries, instance_id, tenant_id=tenant_id,
                                          mapped=mapped, unmapped=unmapped, rate=rate)
        except SourceAdminError as exc:
            raise _refused(exc) from None
    return await get_instance(conn, queries, instance_id)


async def _add_projects(conn: asyncpg.Connection, queries: Queries, row: asyncpg.Record,
                        projects: Mapping[str, str]) -> None:
    adapter = manage.adapter_class(row["kind"])
    config = orjson.loads(await queries.source_config_for_update(
        conn, instance_id=row["instance_id"]))
    held: dict[str, str] = config.get("projects", {})
    for ref, key in projects.items():
        if ref in held and held[ref] != key:
            raise AdminError(f"projects: {ref} is mapped to {held[ref]} already; a mapped "
                             "project keeps its key (remove the source and add it again to "
                             "remap it)")
    merged = _checked(lambda: manage.parse_project_map(
        [f"{ref}={key}" for ref, key in {**held, **projects}.items()], adapter))
    await queries.source_set_config(conn, instance_id=row["instance_id"],
                                    config=orjson.dumps({**config, "projects": merged}).decode())


async def delete_instance(conn: asyncpg.Connection, queries: Queries,
                          instance_id: uuid.UUID) -> dict[str, Any]:
    """Remove an instance and its history; its projects and items stay, as local data. Refused
    while a sync of it runs (its lock is held); the removed instance."""
    gone = await get_instance(conn, queries, instance_id)
    if not await queries.source_try_xact_lock(conn, lock_key=lock_key(instance_id)):
        raise InstanceBusy(f"a sync of source {instance_id} is running; cancel it or wait for it "
                           "to end, then remove the source")
    await queries.source_delete(conn, instance_id=instance_id)
    return gone
