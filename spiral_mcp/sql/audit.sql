-- name: insert_audit!
-- params: tenant_id, key_id, actor, tool, arguments, outcome, error_code, duration_ms, request_id, before, after
-- One audit row, in the caller's transaction (writes: together with the change), its id the
-- tenant's next audit id (the trigger): the last thing a write does, as that counter stays
-- locked until the transaction ends.
INSERT INTO audit_log (tenant_id, key_id, actor, tool, arguments, outcome, error_code,
                       duration_ms, request_id, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)

-- name: insert_audit_batch!
-- params: tenant_id, key_id, actor, tool, arguments, outcome, error_code, duration_ms, request_id, before, after
-- Many audit rows of one tenant in one statement, with one block of ids from the tenant's audit
-- counter (a CTE with a volatile function runs once).
WITH block AS MATERIALIZED (SELECT take_ids($1, 'audit', cardinality($2::uuid[])) AS first)
INSERT INTO audit_log (tenant_id, id, key_id, actor, tool, arguments, outcome, error_code,
                       duration_ms, request_id, before, after)
SELECT $1, block.first + x.n - 1, k, a, t, args, o, e, d, r, b, af
FROM block, unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[],
                   $8::float8[], $9::text[], $10::jsonb[], $11::jsonb[]) WITH ORDINALITY
     AS x(k, a, t, args, o, e, d, r, b, af, n)
