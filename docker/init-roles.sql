-- Roles and database for spiral-mcp. The postgres image runs this once, on an empty data
-- directory (/docker-entrypoint-initdb.d), through psql as the superuser. Passwords come from the
-- container's environment through psql's \getenv (psql 15+), never from this file.
\set ON_ERROR_STOP on
\getenv owner_password SPIRAL_OWNER_PASSWORD
\getenv app_password SPIRAL_APP_PASSWORD
\getenv explorer_password SPIRAL_EXPLORER_PASSWORD

-- The owner: owns the database, hence its public schema, and through migrations every table.
-- Not a superuser: FORCE ROW LEVEL SECURITY binds it too (except the registry's admin policy).
CREATE ROLE spiral_owner LOGIN PASSWORD :'owner_password'
    NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;

-- The runtime role serves every request. The server refuses to start if it is a superuser, has
-- BYPASSRLS or owns a tenant table; migrations give it only the grants it needs.
CREATE ROLE spiral_app LOGIN PASSWORD :'app_password'
    NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;

-- The explorer role runs tenants' read-only SQL; the same limits.
CREATE ROLE spiral_explorer LOGIN PASSWORD :'explorer_password'
    NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;

CREATE DATABASE spiral OWNER spiral_owner;
-- Only the three roles may connect (PUBLIC gets CONNECT and TEMP on a new database by default).
REVOKE ALL ON DATABASE spiral FROM PUBLIC;
GRANT CONNECT ON DATABASE spiral TO spiral_app, spiral_explorer;
