-- name: set_tenant!
-- params: tenant_id
-- Scope the current transaction to one tenant; row-level security reads this setting.
SELECT set_config('app.tenant_id', $1, true)

-- name: migrations_applied$
-- params: migration_ids
-- How many of the given migrations are recorded as applied (readiness: is the schema at head?).
SELECT count(*) FROM _yoyo_migration WHERE migration_id = ANY($1::text[])

-- name: take_work_ids$
-- params: tenant_id, count
-- The first of ``count`` new ids (consecutive from it) for the tenant's work items, moves,
-- comments and links, from its own counter (0011_tenant_ids): ids count nothing of another
-- tenant. The counter stays locked until the transaction ends, so take them before locking any
-- item, comment or link row (project rows may come first): the lock order in spiral_mcp.ids.
SELECT take_ids($1, 'work', $2)
