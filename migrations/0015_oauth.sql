-- OAuth: which tenant an authorization server's tokens act in, and tasks made by OAuth users.
--
-- oauth_bindings maps an issuer to tenants, either whole (claim and claim_value null: every token
-- of the issuer is that tenant's) or per value of one claim of its tokens (claim 'org_id', value
-- 'acme' -> tenant A, value 'globex' -> tenant B). An issuer is bound one way only: never whole
-- and per claim at once, never per two claim names, never one value to two tenants; so a token
-- finds one tenant or none. The trigger oauth_binding_check keeps that: a unique index cannot,
-- as every unique key of a tenant table leads with tenant_id (DESIGN.md, invariant 1) and these
-- rules hold across tenants.
--
-- The runtime role gets no privilege on the table: a server must not list tenants or other
-- issuers' bindings. It resolves a verified token through oauth_tenant(issuer, claims), owned by
-- the owner (whose owner_admin policy sees every binding, as the operator's commands do), which
-- answers for that token alone.
--
-- A task was bound to the API key that created it by a foreign key; an OAuth user's principal id
-- is no key, so the key goes and the credential kind is recorded instead: a task made with an API
-- key stops once the key is revoked or expires (as before). One made by an OAuth user is the
-- user's, as the user's session is: it outlives the short-lived token it was started with (the
-- client refreshes that token, and reads the task with the next one), and ends as any task does.
-- Tasks now go with their tenant directly.
-- depends: 0014_tasks

CREATE TABLE oauth_bindings (
    tenant_id   uuid NOT NULL REFERENCES tenants ON DELETE CASCADE,
    binding_id  uuid NOT NULL DEFAULT gen_random_uuid(),
    issuer      text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 2000),
    claim       text CHECK (length(claim) BETWEEN 1 AND 200),
    claim_value text CHECK (length(claim_value) BETWEEN 1 AND 1000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, binding_id),
    CHECK ((claim IS NULL) = (claim_value IS NULL))
);
CREATE INDEX oauth_bindings_issuer ON oauth_bindings (issuer);

ALTER TABLE oauth_bindings ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_bindings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oauth_bindings
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
-- The operator's commands (oauth bind, unbind, list) and oauth_tenant() run as the owner and see
-- every tenant's bindings; no other role gets this.
CREATE POLICY owner_admin ON oauth_bindings TO CURRENT_USER USING (true) WITH CHECK (true);

-- Refuses a binding that would let a token match two ways, with a message for the operator.
-- Writers of one issuer's bindings queue on an advisory lock, and each check reads with a fresh
-- snapshot after taking it (READ COMMITTED), so two binds racing cannot both pass; a stronger
-- isolation level would read an older snapshot, so it is refused. It runs as the owner, so it
-- weighs every tenant's bindings whoever writes.
CREATE FUNCTION oauth_binding_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    other oauth_bindings;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'OAuth bindings are changed in READ COMMITTED transactions only';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('spiral-mcp oauth'), hashtext(NEW.issuer));
    SELECT * INTO other FROM oauth_bindings b
    WHERE b.issuer = NEW.issuer AND b.binding_id <> NEW.binding_id
      AND (NEW.claim IS NULL OR b.claim IS NULL OR b.claim <> NEW.claim
           OR b.claim_value = NEW.claim_value)
    ORDER BY b.created_at LIMIT 1;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF other.claim IS NULL AND NEW.claim IS NULL THEN
        RAISE unique_violation USING MESSAGE = format(
            'issuer %s is already bound whole to tenant %s', NEW.issuer, other.tenant_id);
    ELSIF other.claim IS NULL THEN
        RAISE unique_violation USING MESSAGE = format(
            'issuer %s is bound whole to tenant %s; an issuer is bound whole or per claim '
            'value, never both (unbind it first)', NEW.issuer, other.tenant_id);
    ELSIF NEW.claim IS NULL THEN
        RAISE unique_violation USING MESSAGE = format(
            'issuer %s is bound per value of claim %s; an issuer is bound whole or per claim '
            'value, never both (unbind those first)', NEW.issuer, other.claim);
    ELSIF other.claim <> NEW.claim THEN
        RAISE unique_violation USING MESSAGE = format(
            'issuer %s is bound per value of claim %s; all of an issuer''s bindings use one '
            'claim, so a token cannot match two tenants', NEW.issuer, other.claim);
    ELSE
        RAISE unique_violation USING MESSAGE = format(
            'claim %s = %s of issuer %s is already bound to tenant %s', NEW.claim,
            NEW.claim_value, NEW.issuer, other.tenant_id);
    END IF;
END
$$;

CREATE TRIGGER oauth_binding_check BEFORE INSERT OR UPDATE ON oauth_bindings
    FOR EACH ROW EXECUTE FUNCTION oauth_binding_check();

-- The tenant of a verified token: rows (tenant_id, claim), where claim names the claim the
-- issuer is bound by (null when bound whole). No row: the issuer is bound nowhere. One row with a
-- null tenant_id: the issuer is bound per claim and the token's value of it is bound to no
-- tenant (or the token has none). More than one row: the token's claim is a list whose values
-- are bound to different tenants, which the caller refuses as ambiguous. A claim value matches
-- when it is a string, number or boolean equal to the bound value as text, or a list holding
-- one.
CREATE FUNCTION oauth_tenant(token_issuer text, token_claims jsonb)
RETURNS TABLE (tenant_id uuid, claim text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bound_claim text;
    presented jsonb;
BEGIN
    SELECT b.claim INTO bound_claim FROM oauth_bindings b WHERE b.issuer = token_issuer LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF bound_claim IS NULL THEN
        RETURN QUERY SELECT b.tenant_id, NULL::text FROM oauth_bindings b
                     WHERE b.issuer = token_issuer AND b.claim IS NULL;
        RETURN;
    END IF;
    presented := token_claims -> bound_claim;
    IF jsonb_typeof(presented) IS DISTINCT FROM 'array' THEN
        presented := jsonb_build_array(presented);
    END IF;
    RETURN QUERY
        SELECT DISTINCT b.tenant_id, bound_claim FROM oauth_bindings b
        WHERE b.issuer = token_issuer AND b.claim = bound_claim
          AND b.claim_value IN (SELECT v #>> '{}' FROM jsonb_array_elements(presented) AS v
                                WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean'))
        ORDER BY b.tenant_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::uuid, bound_claim;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION oauth_tenant(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth_tenant(text, jsonb) TO spiral_app;

ALTER TABLE tasks DROP CONSTRAINT tasks_tenant_id_key_id_fkey;
ALTER TABLE tasks ADD FOREIGN KEY (tenant_id) REFERENCES tenants ON DELETE CASCADE;
ALTER TABLE tasks ADD COLUMN credential text NOT NULL DEFAULT 'api_key'
    CONSTRAINT tasks_credential CHECK (credential IN ('api_key', 'oauth'));
