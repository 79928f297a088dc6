"""What a JSON Schema's ``type`` says a value is, for the places that bind or use the value.

JSON Schema counts ``5.0`` as an integer, so a validated argument may still be a float where a
handler slices a list, compares an id or binds an ``int`` parameter. :func:`integral_floats` makes
such values ints once, after validation (the tool registry does it for every tool).
"""

from __future__ import annotations

from typing import Any

__all__ = ["accepts", "integral_floats"]


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
