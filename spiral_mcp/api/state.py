"""Typed keys of what the API application and each of its requests carry.

The parent application's resources (database, settings, bearer check, task runner) are read
through ``request.config_dict`` with the keys of ``server/keys.py``.
"""

from __future__ import annotations

from aiohttp import web

from .principal import AdminPrincipal, OperatorAccess
from .schemas import SchemaBook

__all__ = ["ADMIN_PRINCIPAL", "OPERATORS", "SCHEMAS"]

SCHEMAS = web.AppKey("api_schemas", SchemaBook)
# Installed by the operator path (OPERATOR_API=on) on the parent application: verifies operator
# credentials (``spo_...``) and operator console sessions. Absent: operator access is off.
OPERATORS = web.AppKey("operators", OperatorAccess)

# Who is calling, set by api/auth.py for every route but the public ones.
ADMIN_PRINCIPAL = web.RequestKey("admin_principal", AdminPrincipal)
