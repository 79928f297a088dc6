"""A compiler for a subset of Jira's query language (JQL) to SQL over ``work_items``.

``compile_jql('project = WEB AND status != Done ORDER BY priority DESC', user=..., now=...)``
gives a :class:`CompiledQuery`: an SQL boolean expression with ``$n`` placeholders, the values for
them, and the ORDER BY expressions. The pipeline is lexer -> parser (a syntax tree in
:mod:`.nodes`) -> compiler; every value travels as a bind parameter and every piece of SQL text
comes from fixed tables in :mod:`.compiler`. The values a tenant defines (projects, statuses) are
checked apart, against what the caller reads from the tenant's data (:mod:`.vocabulary`).
"""

from __future__ import annotations

from datetime import datetime

from spiral_mcp.jql.compiler import CompiledQuery, compile_query
from spiral_mcp.jql.errors import JqlError
from spiral_mcp.jql.names import FIELDS, FUNCTIONS
from spiral_mcp.jql.parser import MAX_DEPTH, parse_jql
from spiral_mcp.jql.vocabulary import KnownValues, check_known, named_values

__all__ = ["FIELDS", "FUNCTIONS", "MAX_DEPTH", "CompiledQuery", "JqlError", "KnownValues",
           "check_known", "compile_jql", "compile_query", "named_values", "parse_jql"]


def compile_jql(
    jql: str,
    *,
    user: str | None,
    now: datetime,
    first_param: int = 1,
    max_length: int = 2000,
    max_terms: int = 100,
    alias: str = "w",
) -> CompiledQuery:
    """Compile ``jql`` to a WHERE expression, its bind parameters and an ORDER BY list.

    ``user`` is the value of ``currentUser()`` (None when the API key acts for no user: using the
    function is then an error). ``now`` fixes the time every relative date and date function is
    resolved against (naive means UTC). Placeholders are numbered from ``first_param`` so the
    caller can put its own parameters first. Columns are qualified with ``alias`` (``""`` for
    unqualified names). An empty query, or one with only ORDER BY, gives ``where == "TRUE"``.

    Raises :class:`JqlError` (a ValueError) with the position, the text found and what was
    expected, for invalid syntax, unknown fields, operators or functions, bad values, a query
    longer than ``max_length`` characters, more than ``max_terms`` clauses or nesting deeper
    than ``MAX_DEPTH``.
    """
    query = parse_jql(jql, max_length=max_length, max_terms=max_terms)
    return compile_query(query, user=user, now=now, first_param=first_param, alias=alias)
