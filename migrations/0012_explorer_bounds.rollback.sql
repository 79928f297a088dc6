-- Undo 0012_explorer_bounds: the size-checked wrappers.
DROP FUNCTION explorer.repeat(text, integer), explorer.lpad(text, integer),
    explorer.lpad(text, integer, text), explorer.rpad(text, integer),
    explorer.rpad(text, integer, text), explorer.replace(text, text, text),
    explorer.regexp_replace(text, text, text), explorer.regexp_replace(text, text, text, text),
    explorer.regexp_replace(text, text, text, integer),
    explorer.regexp_replace(text, text, text, integer, integer),
    explorer.regexp_replace(text, text, text, integer, integer, text),
    explorer.regexp_match(text, text), explorer.regexp_match(text, text, text),
    explorer.regexp_matches(text, text), explorer.regexp_matches(text, text, text),
    explorer.array_to_string(anyarray, text), explorer.array_to_string(anyarray, text, text),
    explorer.array_replace(anycompatiblearray, anycompatible, anycompatible);
DROP FUNCTION explorer_support.check_growth(text, numeric, numeric),
    explorer_support.check_pad(text, text, integer, text),
    explorer_support.check_regexp_replace(text, text, text, text, boolean, boolean),
    explorer_support.check_regexp_match(text, text, text, text),
    explorer_support.check_array_to_string(anyarray, text, text);
