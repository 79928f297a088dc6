"""What a JSON Schema's ``type`` says a value is, for the places that bind or use the value, and
which schema forms every client accepts.

JSON Schema counts ``5.0`` as an integer, so a validated argument may still be a float where a
handler slices a list, compares an id or binds an ``int`` parameter. :func:`integral_floats` makes
such values ints once, after validation (the tool registry does it for every tool).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

__all__ = ["HeaderParam", "accepts", "header_params", "integral_floats", "portable_problems"]


def accepts(schema: Any, json_type: str) -> bool:
    """Whether ``schema`` (or one of its anyOf/oneOf branches) allows values of ``json_type``."""
    if not isinstance(schema, dict):
        return False
    declared = schema.get("type")
    if declared == json_type or (isinstance(declared, list) and json_type in declared):
        return True
    return any(accepts(branch, json_type)
               for key in ("anyOf", "oneOf") for branch in schema.get(key, ()))


def integral_floats(value: Any, schema: Any) -> Any:
    """``value`` (valid against ``schema``) with every integral float the schema types as an
    integer, and not as a number, made an int; the containers on the way are copied, never
    changed. Follows ``properties`` and ``items``, the keywords the tools' schemas nest with."""
    if isinstance(value, float):
        if value.is_integer() and accepts(schema, "integer") and not accepts(schema, "number"):
            return int(value)
        return value
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and isinstance(properties := schema.get("properties"), dict):
        return {name: integral_floats(item, properties[name]) if name in properties else item
                for name, item in value.items()}
    if isinstance(value, list) and isinstance(items := schema.get("items"), dict):
        return [integral_floats(item, items) for item in value]
    return value


# The input-schema forms every major client accepts, Gemini's function declarations (an
# OpenAPI 3.0 subset) the narrowest of them: one type per schema and never "null" (optional means
# not required; "" clears a field), no $ref/$defs/oneOf/allOf/not/if/const (an enum of one value
# instead), an array always with typed items, anyOf only of typed branches. additionalProperties
# (false only) stays: JSON Schema's validators and OpenAI's strict mode want it, and Gemini's
# clients drop it (gemini-cli strips it from MCP schemas); SEP-1613 says never strip it.
_TYPES = frozenset({"object", "string", "integer", "number", "boolean", "array"})
_KEYWORDS = frozenset({
    "type", "description", "title", "default", "enum", "format", "properties", "required",
    "additionalProperties", "items", "anyOf", "minimum", "maximum", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "minProperties", "maxProperties",
})


def portable_problems(schema: Any, path: str = "") -> list[str]:
    """Where ``schema`` (an input schema) leaves the forms every client accepts, each as
    'path: what'; none for a portable schema."""
    if not isinstance(schema, dict):
        return [f"{path or '/'}: a schema must be an object"]
    problems = [f"{path}/{k}: keyword not every client accepts" for k in schema
                if k not in _KEYWORDS]
    if "anyOf" in schema:
        branches = schema["anyOf"]
        problems += [f"{path}/anyOf/{i}: a branch needs one type" for i, b in enumerate(branches)
                     if not isinstance(b, dict) or b.get("type") not in _TYPES]
        problems += [p for i, b in enumerate(branches)
                     for p in portable_problems(b, f"{path}/anyOf/{i}")]
        if "type" in schema:
            problems.append(f"{path}: type beside anyOf")
        return problems
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        problems.append(f"{path or '/'}: type must be one of {sorted(_TYPES)}, not {kind!r}")
    if "enum" in schema and (kind != "string" or not all(
            isinstance(v, str) for v in schema["enum"])):
        problems.append(f"{path}/enum: an enum is of strings, on a string")
    if schema.get("additionalProperties", False) is not False:
        problems.append(f"{path}/additionalProperties: only false")
    if kind == "array":
        if not isinstance(schema.get("items"), dict):
            problems.append(f"{path}: an array needs items")
        else:
            problems += portable_problems(schema["items"], f"{path}/items")
    for name, sub in schema.get("properties", {}).items():
        problems += portable_problems(sub, f"{path}/properties/{name}")
    if set(schema.get("required", ())) - set(schema.get("properties", {})):
        problems.append(f"{path}/required: names a property not declared")
    return problems


@dataclasses.dataclass(frozen=True, slots=True)
class HeaderParam:
    """A tool parameter mirrored into an ``Mcp-Param-<header>`` request header (``x-mcp-header``,
    2026-07-28): where it sits in the arguments and its JSON type."""

    header: str
    path: tuple[str, ...]
    json_type: str  # "string", "integer" or "boolean"


# RFC 9110's tchar: the characters of an HTTP field name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_TYPES = frozenset({"string", "integer", "boolean"})


def header_params(schema: dict[str, Any]) -> tuple[HeaderParam, ...]:
    """The ``x-mcp-header`` annotations of a tool's input schema; ValueError for one the
    specification forbids (not a token, repeated, on a non-primitive or number, or not reachable
    from the root through ``properties`` alone), since clients drop such a tool."""
    found: list[HeaderParam] = []

    def walk(node: Any, path: tuple[str, ...], reachable: bool) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, path, False)
            return
        if not isinstance(node, dict):
            return
        if "x-mcp-header" in node:
            header = node["x-mcp-header"]
            where = "/".join(path) or "(root)"
            if not reachable or not path:
                raise ValueError(f"x-mcp-header at {where} is not reached through properties "
                                 "alone")
            if not isinstance(header, str) or not _TOKEN.fullmatch(header):
                raise ValueError(f"x-mcp-header at {where} is not an HTTP field-name token")
            if node.get("type") not in _HEADER_TYPES:
                raise ValueError(f"x-mcp-header at {where} is on a {node.get('type')!r}, not "
                                 "a string, integer or boolean")
            found.append(HeaderParam(header, path, node["type"]))
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for name, child in value.items():
                    walk(child, (*path, name), reachable)
            elif key != "x-mcp-header":
                walk(value, path, False)

    walk(schema, (), True)
    names = [p.header.lower() for p in found]
    if len(set(names)) < len(names):
        raise ValueError("two x-mcp-header annotations name the same header")
    return tuple(found)
