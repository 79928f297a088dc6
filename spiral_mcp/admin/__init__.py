"""Admin actions on tenants and keys: domain functions shared by the CLI (as the owner role) and
the admin API (as the runtime role, in the caller's tenant transaction). Each takes
``(conn, queries, ...)``, never opens a transaction of its own and knows nothing of HTTP."""

from __future__ import annotations

from .errors import AdminError, AdminNotFound, rows_as_dicts
from .keys import create_api_key, get_key, key_page, parse_scopes, revoke_api_key
from .tenants import create_tenant

__all__ = ["AdminError", "AdminNotFound", "create_api_key", "create_tenant", "get_key",
           "key_page", "parse_scopes", "revoke_api_key", "rows_as_dicts"]
