"""The data explorer: read-only SQL over the curated ``explorer`` schema, checked then run safely.

``validator`` refuses everything but one SELECT over the explorer views with allowlisted functions;
``runner`` runs what passes as the explorer role in a read-only transaction bound to the tenant;
``catalog`` describes the schema; ``results`` turns rows into JSON.
"""

from __future__ import annotations

from .catalog import Catalog
from .runner import Explorer, create_explorer_pool
from .validator import CheckedQuery, QueryValidator

__all__ = ["Catalog", "CheckedQuery", "Explorer", "QueryValidator", "create_explorer_pool"]
