-- The explorer's tenant binding on a hot standby (issue 20: heavy reads on a replica).
--
-- On the primary an explorer transaction binds its tenant by writing a row of the unlogged table
-- explorer_support.bindings, then turns read-only so nothing rebinds it (0003_explorer). A hot
-- standby refuses both: it writes nothing, and it cannot even read an unlogged table. There the
-- binding is a proof instead: explorer_support.replica_proof(tenant), a hash of the tenant and a
-- secret only the owner reads, which only the runtime role may ask for. The server asks for it
-- (as the runtime role, on the standby) and hands it to bind_replica() in the explorer's
-- transaction, which checks it and keeps it in the transaction's setting explorer.binding.
-- bound_tenant(), which the restrictive explorer_bound policies call, checks that setting's
-- proof again on a standby: SQL that changed the setting (set_config) without the secret binds
-- no tenant, so it reads no row, as on the primary. A standby replays this migration (the secret
-- included) from the primary, like every other.
--
-- Runs as the owner role.
-- depends: 0015_oauth

CREATE TABLE explorer_support.binding_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret   text NOT NULL
);
-- gen_random_uuid() draws from the server's strong random source: 244 random bits.
INSERT INTO explorer_support.binding_secret (secret)
VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
REVOKE ALL ON explorer_support.binding_secret FROM PUBLIC;

CREATE FUNCTION explorer_support.replica_proof(tenant uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(convert_to(s.secret || ':' || tenant::text, 'UTF8')), 'hex')
    FROM explorer_support.binding_secret s
$$;

-- Bind this (standby) transaction to a tenant whose proof the caller holds; read-only as on the
-- primary. A wrong proof is refused outright, so a server holding an outdated one (the secret
-- was changed) learns it at once instead of reading no rows.
CREATE FUNCTION explorer_support.bind_replica(tenant uuid, proof text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF proof IS DISTINCT FROM explorer_support.replica_proof(tenant) THEN
        RAISE EXCEPTION 'the explorer binding''s proof does not match this tenant'
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    PERFORM set_config('app.tenant_id', tenant::text, true);
    PERFORM set_config('explorer.binding', tenant::text || ':' || proof, true);
    PERFORM set_config('transaction_read_only', 'on', true);
END
$$;

-- The tenant bound to this transaction; NULL (no rows match) when there is none. Parallel unsafe
-- (the default) on purpose: a parallel worker has another backend pid. On a standby the bindings
-- table cannot be read (plpgsql plans that statement only when it runs it, on the primary).
CREATE OR REPLACE FUNCTION explorer_support.bound_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    binding text;
    tenant uuid;
BEGIN
    IF NOT pg_is_in_recovery() THEN
        RETURN (SELECT b.tenant_id FROM explorer_support.bindings b
                WHERE b.backend_pid = pg_backend_pid());
    END IF;
    binding := current_setting('explorer.binding', true);
    IF binding IS NULL OR binding !~
            '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{64}$' THEN
        RETURN NULL;
    END IF;
    tenant := split_part(binding, ':', 1)::uuid;
    IF split_part(binding, ':', 2) = explorer_support.replica_proof(tenant) THEN
        RETURN tenant;
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION explorer_support.replica_proof(uuid),
    explorer_support.bind_replica(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION explorer_support.bind_replica(uuid, text) TO spiral_explorer;
-- The proof: the runtime role only (never the explorer role, whose SQL it guards against).
GRANT USAGE ON SCHEMA explorer_support TO spiral_app;
GRANT EXECUTE ON FUNCTION explorer_support.replica_proof(uuid) TO spiral_app;
