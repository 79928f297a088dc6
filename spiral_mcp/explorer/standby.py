"""The explorer on the hot standby (REPLICA_DATABASE_URL): its pool there and its tenant binding.

A standby writes nothing, so the primary's binding (a row of explorer_support.bindings, see
migration 0003) cannot be made there: an explorer transaction on the standby is bound with a
proof instead (migration 0016), which the runtime role asks the standby for once per tenant and
this process keeps. Everything else the explorer does works on a standby as it is: the memory
limit set as each connection opens (COPY TO PROGRAM writes no data), the capped cursor reads,
DISCARD ALL, and ending an abandoned backend, which the runtime role does on the standby, where
that backend lives (``Replica.database``).
"""

from __future__ import annotations

import uuid

import asyncpg

from ..db import Database
from ..queries import Queries
from ..replica import Replica

__all__ = ["Standby", "StandbyRefused"]

# Tenants whose proof is kept; past it the cache starts over (a proof is one round trip).
_MAX_PROOFS = 10_000


# What a standby that has not replayed migration 0016 yet answers.
_NOT_MIGRATED = (asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError,
                 asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError)


class StandbyRefused(Exception):
    """The standby refused the binding (a proof out of date, or a standby that has not replayed
    the migration yet): this call is served by the primary instead."""


class Standby:
    """The explorer role's pool on the standby (``database``) and the standby's ``replica``."""

    def __init__(self, database: Database, replica: Replica) -> None:
        self.database = database
        self.replica = replica
        self._proofs: dict[uuid.UUID, str] = {}

    async def bind(self, conn: asyncpg.Connection, queries: Queries, tenant_id: uuid.UUID
                   ) -> asyncpg.Record:
        """Open the transaction on ``conn`` bound to the tenant; its start (``alive_at``) and
        its server's (``server_started``) come back."""
        proof = self._proofs.get(tenant_id)
        if proof is None:
            try:
                async with self.replica.database.connection() as runtime:
                    proof = await queries.explorer_replica_proof(runtime,
                                                                 tenant_id=str(tenant_id))
            except _NOT_MIGRATED as exc:
                raise StandbyRefused(str(exc)) from exc
            if proof is None:
                raise StandbyRefused("the standby has no binding secret yet")
            if len(self._proofs) >= _MAX_PROOFS:
                self._proofs.clear()
            self._proofs[tenant_id] = proof
        await queries.explorer_begin_replica(conn)
        try:
            return await queries.explorer_bind_replica(conn, tenant_id=str(tenant_id),
                                                       proof=proof)
        except asyncpg.InvalidAuthorizationSpecificationError as exc:
            self._proofs.pop(tenant_id, None)  # the secret changed: ask again next time
            raise StandbyRefused(str(exc)) from exc
        except _NOT_MIGRATED as exc:
            raise StandbyRefused(str(exc)) from exc
