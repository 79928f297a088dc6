-- name: console_home^
-- params:
-- What the console's home counts for the transaction's tenant (row-level security scopes every
-- table to it): its name, its projects, its sync runs, and its tool calls of the last 24 hours
-- (the admin API's own changes, tool admin:*, are not tool calls).
SELECT (SELECT name FROM tenants) AS tenant_name,
       (SELECT count(*) FROM projects) AS projects,
       (SELECT count(*) FROM sync_runs) AS runs,
       (SELECT count(*) FROM audit_log
         WHERE at > now() - interval '24 hours' AND tool NOT LIKE 'admin:%') AS calls
