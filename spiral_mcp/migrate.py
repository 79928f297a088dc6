"""Schema migrations: yoyo SQL files shipped in ``spiral_mcp.migrations``, each with a rollback.

yoyo is synchronous (psycopg 3); callers in the event loop run these functions in a thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yoyo import get_backend, read_migrations
from yoyo.backends.base import DatabaseBackend
from yoyo.migrations import MigrationList

__all__ = ["MigrationStatus", "apply", "head_ids", "migrations_dir", "rollback", "status"]

# The table yoyo records applied migrations in; the runtime role may read it to check the head.
MIGRATION_TABLE = "_yoyo_migration"


def migrations_dir() -> Path:
    """The folder of migration files: inside an installed package (setup.cfg maps the top-level
    ``migrations/`` there), or at the root of a source tree."""
    package = Path(__file__).resolve().parent
    installed = package / "migrations"
    return installed if installed.is_dir() else package.parent / "migrations"


def _migrations() -> MigrationList:
    return read_migrations(str(migrations_dir()))


def head_ids() -> tuple[str, ...]:
    """Ids of every migration this version of the code expects, in order."""
    return tuple(m.id for m in _migrations())


def _yoyo_uri(url: str) -> str:
    # yoyo picks its driver from the scheme: psycopg 3, not psycopg2.
    _, rest = url.split("://", 1)
    return "postgresql+psycopg://" + rest


@contextmanager
def _backend(url: str) -> Iterator[DatabaseBackend]:
    backend = get_backend(_yoyo_uri(url))
    try:
        yield backend
    finally:
        backend.connection.close()


@dataclasses.dataclass(frozen=True, slots=True)
class MigrationStatus:
    applied: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return not self.pending


def status(url: str) -> MigrationStatus:
    migrations = _migrations()
    with _backend(url) as backend:
        pending = {m.id for m in backend.to_apply(migrations)}
    return MigrationStatus(
        applied=tuple(m.id for m in migrations if m.id not in pending),
        pending=tuple(m.id for m in migrations if m.id in pending),
    )


def apply(url: str) -> tuple[str, ...]:
    """Apply every pending migration under yoyo's lock; return the ids applied."""
    with _backend(url) as backend, backend.lock():
        pending = backend.to_apply(_migrations())
        backend.apply_migrations(pending)
    return tuple(m.id for m in pending)


def rollback(url: str, *, count: int = 1) -> tuple[str, ...]:
    """Roll back the ``count`` most recently applied migrations; return their ids."""
    with _backend(url) as backend, backend.lock():
        applied = backend.to_rollback(_migrations())[:count]
        backend.rollback_migrations(applied)
    return tuple(m.id for m in applied)
