-- name: set_tenant!
-- params: tenant_id
-- Scope the current transaction to one tenant; row-level security reads this setting.
SELECT set_config('app.tenant_id', $1, true)

-- name: migrations_applied$
-- params: migration_ids
-- How many of the given migrations are recorded as applied (readiness: is the schema at head?).
SELECT count(*) FROM _yoyo_migration WHERE migration_id = ANY($1::text[])
