-- Functions whose result size an argument sets (issue 16, section 3): repeat(x, n), lpad/rpad to
-- n, replace() with a longer text, regexp_replace() and its back references, regexp_match() with
-- many groups, array_to_string() with a long separator, array_replace() with a larger element.
-- One call of such a built-in could make gigabytes from a few bytes of SQL, and nesting
-- multiplies again (nested replace() calls are even folded into one constant by the planner).
-- Each has a wrapper here, in schema explorer, which comes first on the explorer's search_path,
-- so an unqualified call resolves to it (same argument types: the earlier schema wins). A wrapper
-- works out the size of the result from its arguments before it calls the built-in and refuses
-- a result over 1 MiB that is also larger than its input
-- (spiral_mcp.explorer.allowlist.MAX_VALUE_BYTES): a wrapped call never grows a value past 1 MiB.
-- The query check refuses pg_catalog.<name> for these (allowlist.WRAPPED).
--
-- What no wrapper bounds (values doubled through subqueries, aggregates over many rows, hash
-- tables) is bounded by the memory limit each explorer backend gets as its connection opens
-- (provisioning: roles.EXPLORER_MEMORY_LIMIT).
--
-- Wrappers are plpgsql, IMMUTABLE/STABLE and STRICT as the built-in is, owned by the owner and
-- run as the caller. Their bodies call every function qualified (pg_catalog.replace, never
-- replace, which is the wrapper itself); operators resolve on the caller's search_path, where
-- schema explorer has none and nobody but the owner can create one.
-- depends: 0011_tenant_ids

-- Refuse a result of `result_bytes` that is over 1 MiB and larger than the input it was made from.
CREATE FUNCTION explorer_support.check_growth(fn text, result_bytes numeric, input_bytes numeric)
RETURNS void LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF result_bytes > GREATEST(1048576, input_bytes) THEN
        RAISE EXCEPTION '% would make a value of % bytes', fn, result_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = 'In explorer queries a function may make a value of at most 1048576 '
                           'bytes (1 MiB), or one no larger than its input.',
                  HINT = 'Work on fewer or shorter values, or aggregate in SQL.';
    END IF;
END
$$;

CREATE FUNCTION explorer.repeat(string text, count integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_growth(
        'repeat', pg_catalog.octet_length(string)::numeric * count, pg_catalog.octet_length(string));
    RETURN pg_catalog.repeat(string, count);
END
$$;

-- The padded result has `length` characters, each of at most 4 bytes, and no wider than the
-- fill's widest; a shorter `length` cuts the string.
CREATE FUNCTION explorer_support.check_pad(fn text, string text, length integer, fill text)
RETURNS void LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF length > pg_catalog.length(string) THEN
        PERFORM explorer_support.check_growth(fn, pg_catalog.octet_length(string)
            + (length - pg_catalog.length(string))::numeric
              * LEAST(4, pg_catalog.octet_length(fill)), pg_catalog.octet_length(string));
    END IF;
END
$$;

CREATE FUNCTION explorer.lpad(string text, length integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_pad('lpad', string, length, ' ');
    RETURN pg_catalog.lpad(string, length);
END
$$;

CREATE FUNCTION explorer.lpad(string text, length integer, fill text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_pad('lpad', string, length, fill);
    RETURN pg_catalog.lpad(string, length, fill);
END
$$;

CREATE FUNCTION explorer.rpad(string text, length integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_pad('rpad', string, length, ' ');
    RETURN pg_catalog.rpad(string, length);
END
$$;

CREATE FUNCTION explorer.rpad(string text, length integer, fill text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_pad('rpad', string, length, fill);
    RETURN pg_catalog.rpad(string, length, fill);
END
$$;

-- Growth only when `replacement` is longer than `search`: then the matches are counted (by
-- removing them, which makes nothing larger than the string) and the exact size checked.
CREATE FUNCTION explorer.replace(string text, search text, replacement text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    size constant bigint := pg_catalog.octet_length(string);
    growth constant bigint := pg_catalog.octet_length(replacement) - pg_catalog.octet_length(search);
    matches bigint;
BEGIN
    IF growth > 0 AND search <> ''
       AND size + size / pg_catalog.octet_length(search) * growth > 1048576 THEN
        matches := (size - pg_catalog.octet_length(pg_catalog.replace(string, search, '')))
                   / pg_catalog.octet_length(search);
        PERFORM explorer_support.check_growth('replace', size + matches * growth, size);
    END IF;
    RETURN pg_catalog.replace(string, search, replacement);
END
$$;

-- regexp_replace: each replaced match becomes the replacement, whose back references (\1..\9,
-- \&) each copy at most the match. The first bound needs no matching; beyond 1 MiB the matches
-- are counted and measured by replacing them with '' and with one byte (neither makes anything
-- larger than the source). `every`: every match from the start is replaced ('g', or N = 0 at
-- start 1), so the bytes outside the matches are known; `one`: only one match is (no 'g', N > 0).
CREATE FUNCTION explorer_support.check_regexp_replace(source text, pattern text,
                                                      replacement text, flags text,
                                                      every boolean, one boolean)
RETURNS void LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    size constant numeric := pg_catalog.octet_length(source);
    refs constant numeric := pg_catalog.octet_length(replacement)
        - pg_catalog.octet_length(pg_catalog.replace(replacement, E'\\', ''));
    global constant text := pg_catalog.replace(flags, 'g', '') || 'g';
    kept numeric;
    matches numeric;
BEGIN
    IF size + (size + 1) * (pg_catalog.octet_length(replacement) + refs * size) <= 1048576 THEN
        RETURN;
    END IF;
    kept := pg_catalog.octet_length(pg_catalog.regexp_replace(source, pattern, '', global));
    matches := pg_catalog.octet_length(pg_catalog.regexp_replace(source, pattern, 'x', global))
               - kept;
    IF one THEN
        matches := LEAST(matches, 1);
    END IF;
    PERFORM explorer_support.check_growth('regexp_replace',
        CASE WHEN every THEN kept ELSE size END
        + matches * pg_catalog.octet_length(replacement) + refs * (size - kept), size);
END
$$;

CREATE FUNCTION explorer.regexp_replace(source text, pattern text, replacement text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_regexp_replace(source, pattern, replacement, '', false, true);
    RETURN pg_catalog.regexp_replace(source, pattern, replacement);
END
$$;

CREATE FUNCTION explorer.regexp_replace(source text, pattern text, replacement text, flags text)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_regexp_replace(source, pattern, replacement, flags,
        pg_catalog.strpos(flags, 'g') > 0, pg_catalog.strpos(flags, 'g') = 0);
    RETURN pg_catalog.regexp_replace(source, pattern, replacement, flags);
END
$$;

CREATE FUNCTION explorer.regexp_replace(source text, pattern text, replacement text,
                                        start integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_regexp_replace(source, pattern, replacement, '', false, true);
    RETURN pg_catalog.regexp_replace(source, pattern, replacement, start);
END
$$;

CREATE FUNCTION explorer.regexp_replace(source text, pattern text, replacement text,
                                        start integer, n integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_regexp_replace(source, pattern, replacement, '',
                                                  n = 0 AND start = 1, n > 0);
    RETURN pg_catalog.regexp_replace(source, pattern, replacement, start, n);
END
$$;

CREATE FUNCTION explorer.regexp_replace(source text, pattern text, replacement text,
                                        start integer, n integer, flags text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_regexp_replace(source, pattern, replacement, flags,
        (n = 0 OR pg_catalog.strpos(flags, 'g') > 0) AND start = 1,
        n > 0 AND pg_catalog.strpos(flags, 'g') = 0);
    RETURN pg_catalog.regexp_replace(source, pattern, replacement, start, n, flags);
END
$$;

-- regexp_match(es): each array holds one text per capture group, each at most its match; a
-- pattern has no more groups than "(" (nested groups copy the same text again). Beyond 1 MiB the
-- matched bytes are measured (by removing the matches) and the arrays' size checked.
CREATE FUNCTION explorer_support.check_regexp_match(fn text, string text, pattern text,
                                                    flags text)
RETURNS void LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    size constant numeric := pg_catalog.octet_length(string);
    groups constant numeric := GREATEST(1, pg_catalog.octet_length(pattern)
        - pg_catalog.octet_length(pg_catalog.replace(pattern, '(', '')));
    matched numeric;
BEGIN
    IF groups = 1 OR groups * (size + 8) <= 1048576 THEN
        RETURN;
    END IF;
    -- The same flags: 'g' (regexp_matches) measures every match, else the first.
    matched := size - pg_catalog.octet_length(pg_catalog.regexp_replace(string, pattern, '', flags));
    PERFORM explorer_support.check_growth(fn, groups * (matched + 8), size);
END
$$;

CREATE FUNCTION explorer.regexp_match(string text, pattern text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_regexp_match('regexp_match', string, pattern, '');
    RETURN pg_catalog.regexp_match(string, pattern);
END
$$;

CREATE FUNCTION explorer.regexp_match(string text, pattern text, flags text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_regexp_match('regexp_match', string, pattern, flags);
    RETURN pg_catalog.regexp_match(string, pattern, flags);
END
$$;

CREATE FUNCTION explorer.regexp_matches(string text, pattern text) RETURNS SETOF text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE ROWS 1 AS $$
BEGIN
    PERFORM explorer_support.check_regexp_match('regexp_matches', string, pattern, '');
    RETURN QUERY SELECT pg_catalog.regexp_matches(string, pattern);
END
$$;

CREATE FUNCTION explorer.regexp_matches(string text, pattern text, flags text)
RETURNS SETOF text[] LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE ROWS 10 AS $$
BEGIN
    PERFORM explorer_support.check_regexp_match('regexp_matches', string, pattern, flags);
    RETURN QUERY SELECT pg_catalog.regexp_matches(string, pattern, flags);
END
$$;

-- array_to_string: the elements' text (at most the array's own text) plus a separator between
-- elements and null_string for each NULL; the array's text is measured only when something is
-- added.
CREATE FUNCTION explorer_support.check_array_to_string(items anyarray, separator text,
                                                       null_string text)
RETURNS void LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    count constant numeric := COALESCE(pg_catalog.cardinality(items), 0);
    added constant numeric := GREATEST(count - 1, 0) * pg_catalog.octet_length(separator)
        + count * COALESCE(pg_catalog.octet_length(null_string), 0);
    size numeric;
BEGIN
    IF added > 0 THEN
        size := pg_catalog.octet_length(items::text);
        PERFORM explorer_support.check_growth('array_to_string', size + added, size);
    END IF;
END
$$;

CREATE FUNCTION explorer.array_to_string(items anyarray, separator text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM explorer_support.check_array_to_string(items, separator, NULL);
    RETURN pg_catalog.array_to_string(items, separator);
END
$$;

-- Not strict, as the built-in: a NULL null_string means NULLs are left out.
CREATE FUNCTION explorer.array_to_string(items anyarray, separator text, null_string text)
RETURNS text LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF items IS NOT NULL AND separator IS NOT NULL THEN
        PERFORM explorer_support.check_array_to_string(items, separator, null_string);
    END IF;
    RETURN pg_catalog.array_to_string(items, separator, null_string);
END
$$;

-- array_replace: each element equal to `search` becomes `replacement`; growth only when the
-- replacement is larger (8 bytes more for an element's header and alignment).
CREATE FUNCTION explorer.array_replace(items anycompatiblearray, search anycompatible,
                                       replacement anycompatible) RETURNS anycompatiblearray
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    growth constant numeric := COALESCE(pg_catalog.pg_column_size(replacement), 0) + 8
        - COALESCE(pg_catalog.pg_column_size(search), 0);
    matches numeric;
BEGIN
    IF items IS NOT NULL AND growth > 8 THEN
        SELECT pg_catalog.count(*) INTO matches
        FROM pg_catalog.unnest(items) AS e(item) WHERE e.item IS NOT DISTINCT FROM search;
        PERFORM explorer_support.check_growth('array_replace',
            pg_catalog.pg_column_size(items) + matches * growth, pg_catalog.pg_column_size(items));
    END IF;
    RETURN pg_catalog.array_replace(items, search, replacement);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Privileges: the explorer role runs these, nobody else needs them
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'explorer'::regnamespace
                OR (p.pronamespace = 'explorer_support'::regnamespace
                    AND p.proname IN ('check_growth', 'check_pad', 'check_regexp_replace',
                                      'check_regexp_match', 'check_array_to_string'))
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO spiral_explorer', f);
    END LOOP;
END
$$;
