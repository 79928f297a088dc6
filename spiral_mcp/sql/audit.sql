-- name: insert_audit!
-- params: tenant_id, key_id, actor, tool, arguments, outcome, error_code, duration_ms, request_id, before, after
-- One audit row, in the caller's transaction (writes: together with the change).
INSERT INTO audit_log (tenant_id, key_id, actor, tool, arguments, outcome, error_code,
                       duration_ms, request_id, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)

-- name: insert_audit_batch!
-- params: tenant_id, key_id, actor, tool, arguments, outcome, error_code, duration_ms, request_id, before, after
-- Many audit rows of one tenant in one statement.
INSERT INTO audit_log (tenant_id, key_id, actor, tool, arguments, outcome, error_code,
                       duration_ms, request_id, before, after)
SELECT $1, k, a, t, args, o, e, d, r, b, af
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[],
            $8::float8[], $9::text[], $10::jsonb[], $11::jsonb[])
     AS x(k, a, t, args, o, e, d, r, b, af)
