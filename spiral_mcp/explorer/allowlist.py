"""What an explorer query may name besides the explorer views: functions, types, node kinds.

Everything here is an allowlist: a function, type or parse-tree node that is not listed is
refused. Each entry is a pure computation over its arguments: no file, network, lock, session
setting, sleep, catalog lookup by name or large object is reachable from this list.
"""

from __future__ import annotations

__all__ = [
    "FUNCTIONS", "MAX_VALUE_BYTES", "NODES", "OUT_COLUMNS", "SQL_VALUE_FUNCTIONS", "TYPES",
    "WRAPPED",
]

_AGGREGATES = {
    "count", "sum", "avg", "min", "max", "string_agg", "array_agg", "bool_and", "bool_or",
    "every", "bit_and", "bit_or", "jsonb_agg", "jsonb_object_agg", "json_agg", "json_object_agg",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr",
    "covar_pop", "covar_samp", "regr_slope", "regr_intercept", "regr_r2", "regr_count",
    "regr_avgx", "regr_avgy", "regr_sxx", "regr_syy", "regr_sxy", "any_value",
    # ordered-set and hypothetical-set aggregates (WITHIN GROUP)
    "percentile_cont", "percentile_disc", "mode",
}
_WINDOW = {
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
}
_DATE_TIME = {
    "now", "date_trunc", "date_part", "extract", "age", "make_interval", "make_date",
    "make_time", "make_timestamp", "make_timestamptz", "to_char", "to_date", "to_timestamp",
    "justify_days", "justify_hours", "justify_interval", "isfinite", "date_bin", "timezone",
    "overlaps", "statement_timestamp", "transaction_timestamp", "clock_timestamp",
    "date_add", "date_subtract",
}
_STRING = {
    "lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length",
    "substring", "substr", "btrim", "ltrim", "rtrim", "replace", "split_part", "concat",
    "concat_ws", "left", "right", "position", "strpos", "starts_with", "reverse", "translate",
    "overlay", "format", "md5", "sha256", "repeat", "lpad", "rpad",
    "encode", "decode", "ascii", "chr", "to_hex", "normalize", "is_normalized",
    "regexp_replace", "regexp_match", "regexp_matches", "regexp_like", "regexp_count",
    "regexp_instr", "regexp_substr", "regexp_split_to_array", "regexp_split_to_table",
    "similar_to_escape", "string_to_array", "string_to_table", "array_to_string",
    "unistr", "casefold",
}
_MATH = {
    "round", "trunc", "floor", "ceil", "ceiling", "abs", "sign", "mod", "div", "power", "pow",
    "sqrt", "cbrt", "exp", "ln", "log", "log10", "greatest", "least", "width_bucket", "random",
    "pi", "degrees", "radians", "gcd", "lcm", "scale", "min_scale", "trim_scale",
}
_CONDITIONAL = {"coalesce", "nullif", "num_nulls", "num_nonnulls"}
_JSON = {
    "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length", "jsonb_each",
    "jsonb_each_text", "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_object_keys",
    "jsonb_typeof", "jsonb_build_object", "jsonb_build_array", "jsonb_strip_nulls",
    "jsonb_set", "jsonb_insert", "jsonb_to_record", "jsonb_to_recordset",
    "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array",
    "jsonb_path_query_first", "to_jsonb", "to_json", "row_to_json", "json_build_object",
    "json_build_array", "json_array_elements", "json_array_elements_text", "json_each",
    "json_each_text", "json_extract_path", "json_extract_path_text", "json_object_keys",
    "json_typeof", "json_array_length",
}
_ARRAY = {
    "unnest", "array_length", "cardinality", "array_position", "array_positions",
    "array_append", "array_prepend", "array_cat", "array_remove", "array_replace",
    "array_lower", "array_upper", "array_ndims", "array_dims", "trim_array", "array_reverse",
    "array_sort",
}
# Bounded by the validator when its arguments are literals, by the statement timeout otherwise.
_SERIES = {"generate_series"}

# Not here on purpose: jsonb_pretty (its output grows with the square of the nesting depth: 20 kB
# of brackets made 100 MB), quote_literal, quote_ident and quote_nullable (each doubles quotes, so
# nesting them doubles a value again and again; they only build SQL text, which nothing runs here).

FUNCTIONS: frozenset[str] = frozenset(
    _AGGREGATES | _WINDOW | _DATE_TIME | _STRING | _MATH | _CONDITIONAL | _JSON | _ARRAY
    | _SERIES
)

# The largest value a function whose result size an argument sets may make (unless it is no
# larger than its input): the result's own cap, so nothing larger could be returned anyway.
MAX_VALUE_BYTES = 1 << 20

# Functions whose built-ins could make gigabytes from a few bytes of SQL (repeat('x', 900000000),
# nested replace(), a regexp_match pattern of a thousand groups, ...). Migration 0012 gives each
# a wrapper in schema explorer, first on the explorer's search_path, that refuses a result over
# MAX_VALUE_BYTES larger than its input; every signature of the built-in has one, so an
# unqualified call always resolves to the wrapper. The pg_catalog version must never run for the
# explorer: the query check refuses ``pg_catalog.<name>`` and allows ``explorer.<name>``.
WRAPPED: frozenset[str] = frozenset({
    "repeat", "lpad", "rpad", "replace", "regexp_replace", "regexp_match", "regexp_matches",
    "array_to_string", "array_replace",
})

# The allowed functions with OUT parameters, and their names: the columns such a function gives
# in FROM, and (two or more) the fields of the record it returns. The validator resolves
# ``item.column`` and ``(value).field`` against these; tests check them against pg_proc.
OUT_COLUMNS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("jsonb_each", "jsonb_each_text", "json_each", "json_each_text"),
                    ("key", "value")),
    **dict.fromkeys(("jsonb_array_elements", "jsonb_array_elements_text", "json_array_elements",
                     "json_array_elements_text"), ("value",)),
}

# Types a value may be cast to. Object-identifier types (regclass, regproc, regrole, ...) are
# absent on purpose: their input functions look names up in the catalogs.
TYPES: frozenset[str] = frozenset({
    "text", "varchar", "bpchar", "int2", "int4", "int8", "smallint", "integer", "int",
    "bigint", "numeric", "decimal", "float4", "float8", "real", "bool", "boolean", "date",
    "time", "timetz", "timestamp", "timestamptz", "interval", "uuid", "json", "jsonb",
    "jsonpath",
})

# CURRENT_DATE and the like; CURRENT_USER, SESSION_USER, CURRENT_ROLE, CURRENT_CATALOG and
# CURRENT_SCHEMA are not here: they describe the server, not the data.
SQL_VALUE_FUNCTIONS: frozenset[str] = frozenset({
    "SVFOP_CURRENT_DATE", "SVFOP_CURRENT_TIME", "SVFOP_CURRENT_TIME_N",
    "SVFOP_CURRENT_TIMESTAMP", "SVFOP_CURRENT_TIMESTAMP_N", "SVFOP_LOCALTIME",
    "SVFOP_LOCALTIME_N", "SVFOP_LOCALTIMESTAMP", "SVFOP_LOCALTIMESTAMP_N",
})

# Parse-tree nodes a query may contain. Anything else (other statements, SQL/JSON and XML
# constructs, table functions, TABLESAMPLE, parameters, ...) is refused by name.
NODES: frozenset[str] = frozenset({
    "SelectStmt", "ResTarget", "ColumnRef", "A_Star", "A_Const", "A_Expr", "BoolExpr",
    "FuncCall", "TypeCast", "TypeName", "RangeVar", "RangeSubselect", "RangeFunction",
    "JoinExpr", "SortBy", "WindowDef", "CommonTableExpr", "SubLink", "CaseExpr", "CaseWhen",
    "CoalesceExpr", "MinMaxExpr", "NullTest", "BooleanTest", "A_ArrayExpr", "A_Indirection",
    "A_Indices", "RowExpr", "GroupingSet", "GroupingFunc", "SQLValueFunction", "CollateClause",
    "NamedArgExpr", "ColumnDef", "List", "String", "Integer", "Float", "Boolean", "BitString",
    "Alias", "WithClause", "CTESearchClause", "CTECycleClause",
})
