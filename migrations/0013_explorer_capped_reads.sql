-- What the server process reads of an explorer query (issue 16, section 3).
--
-- * open_rows and fetch_rows run the checked statement as a cursor: its planning (constant
--   folding) and execution happen inside them, so an error's text, which PostgreSQL fills with the
--   value it could not read ("invalid input syntax for type integer: <the value>", a JSON
--   token), reaches the server process capped; and rows are sent only while they fit the bytes
--   left of the result, so the server process never reads more than the result's cap.
-- * column_samples leaves out a column whose values are too long to be a code: those values were
--   sent only to be dropped.
-- depends: 0012_explorer_bounds

-- An error raised again with its code, and its message, detail and hint cut to 2000 characters:
-- PostgreSQL puts the value it could not read into the message, whatever its size.
CREATE FUNCTION explorer_support.raise_capped(state text, message text, detail text, hint text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = state,
        MESSAGE = CASE WHEN pg_catalog.length(message) > 2000
                       THEN pg_catalog.left(message, 2000) || '...' ELSE message END,
        DETAIL = pg_catalog.left(COALESCE(detail, ''), 2000),
        HINT = pg_catalog.left(COALESCE(hint, ''), 2000);
END
$$;

-- Plan and open `statement` as the cursor `portal` (the caller has prepared it already, so a
-- mistake in it was reported with its position). No SET search_path: the statement must resolve
-- names as the explorer does.
CREATE FUNCTION explorer_support.open_rows(portal refcursor, statement text) RETURNS refcursor
LANGUAGE plpgsql AS $$
DECLARE
    state text; message text; detail text; hint text;
BEGIN
    OPEN portal NO SCROLL FOR EXECUTE statement;
    RETURN portal;
EXCEPTION WHEN OTHERS THEN  -- never a cancel (query_canceled is not among OTHERS)
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
        detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    PERFORM explorer_support.raise_capped(state, message, detail, hint);
END
$$;

-- Up to `how_many` rows of the cursor, each as one record with its size as sent (its binary
-- form), while their sizes add up to at most `max_bytes`; the first row that does not fit comes
-- as (NULL, NULL) and ends the batch, unsent.
CREATE FUNCTION explorer_support.fetch_rows(portal refcursor, how_many integer, max_bytes bigint)
RETURNS TABLE (r record, bytes integer) LANGUAGE plpgsql AS $$
DECLARE
    found_row record;
    used bigint := 0;
    state text; message text; detail text; hint text;
BEGIN
    FOR i IN 1..how_many LOOP
        FETCH portal INTO found_row;
        EXIT WHEN NOT FOUND;
        bytes := pg_catalog.octet_length(pg_catalog.record_send(found_row));
        IF used + bytes > max_bytes THEN
            r := NULL;
            bytes := NULL;
            RETURN NEXT;
            RETURN;
        END IF;
        used := used + bytes;
        r := found_row;
        RETURN NEXT;
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
        detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    PERFORM explorer_support.raise_capped(state, message, detail, hint);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Samples: only of columns whose values are short enough to be codes
-- ---------------------------------------------------------------------------------------------

-- As 0003's column_samples, but a column with a value longer than max_length characters has no
-- sample (NULL): describe drops such columns, and their values need not be sent to be dropped.
CREATE FUNCTION explorer_support.column_samples(relation text, max_values integer,
                                               max_length integer)
RETURNS TABLE (column_name text, distinct_count bigint, sample jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
BEGIN
    FOR a IN SELECT att.attname FROM pg_attribute att
             JOIN pg_class c ON c.oid = att.attrelid
             WHERE c.relnamespace = 'explorer'::regnamespace AND c.relname = relation
               AND att.attnum > 0 AND NOT att.attisdropped
               AND att.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bool'::regtype)
             ORDER BY att.attnum
    LOOP
        column_name := a.attname;
        EXECUTE format(
            'SELECT count(DISTINCT %1$I), '
            'CASE WHEN count(DISTINCT %1$I) <= $1 AND max(length(%1$I::text)) <= $2 THEN ('
            '  SELECT jsonb_agg(jsonb_build_object(''value'', v, ''count'', n) ORDER BY n DESC, v)'
            '  FROM (SELECT %1$I AS v, count(*) AS n FROM explorer.%2$I'
            '        WHERE %1$I IS NOT NULL GROUP BY 1) s) END '
            'FROM explorer.%2$I', a.attname, relation)
            INTO distinct_count, sample USING max_values, max_length;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The explorer role runs these; nobody else needs them.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'explorer_support'::regnamespace
               AND p.proname IN ('raise_capped', 'open_rows', 'fetch_rows')
             UNION ALL
             SELECT 'explorer_support.column_samples(text, integer, integer)'::regprocedure
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO spiral_explorer', f);
    END LOOP;
END
$$;
