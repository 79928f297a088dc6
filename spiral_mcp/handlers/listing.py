"""What ``tools/list`` shows of a tool, and the result envelope's schemas.

The tool list is what every conversation pays for before its first call, so a listing says
each thing once:

- ``inputSchema``: the tool's input schema as the server validates arguments with it (nothing
  stripped: SEP-1613), written in the forms every major client accepts
  (``tests/test_tool_listing.py`` walks them), its descriptions short and never repeating the
  tool's;
- ``outputSchema``: the result envelope (DESIGN.md) as every tool shares it, an object with
  ``success``: the server's instructions describe the envelope and its error codes once for all
  tools, and the complete schema of each tool's results (:func:`envelope_schema` around its
  ``<name>.output.json``) is the resource ``spiral://tools/{name}/output-schema``. The tests hold
  every real result to both;
- ``annotations``: readOnlyHint and openWorldHint always (their defaults are not what most of
  these tools do), destructiveHint and idempotentHint for a tool that writes (the specification
  gives them no meaning otherwise);
- ``icons``: the toolset's icon.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ErrorCode
from ..icons import icons

__all__ = ["OUTPUT_LISTING", "envelope_schema", "listing"]


def envelope_schema(data_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The complete schema of a tool's results: the envelope of DESIGN.md around its data."""
    return {
        "type": "object",
        "oneOf": [
            {
                "properties": {
                    "success": {"const": True},
                    "data": data_schema,
                    "tenant_id": {"type": "string"},
                    "timing_ms": {"type": "number"},
                    "replayed": {"type": "boolean"},
                },
                "required": ["success", "data", "tenant_id", "timing_ms"],
            },
            {
                "properties": {
                    "success": {"const": False},
                    "error": {
                        "type": "object",
                        "properties": {
                            "code": {"enum": [str(c) for c in ErrorCode]},
                            "message": {"type": "string"},
                            "details": {"type": "array"},
                            "retry_after": {"type": ["number", "null"]},
                        },
                        "required": ["code", "message", "details", "retry_after"],
                    },
                },
                "required": ["success", "error"],
            },
        ],
    }


# The listed output schema of every tool: what all of them have in common, the envelope. Every
# result that the complete schema of a tool accepts, this accepts too.
OUTPUT_LISTING: dict[str, Any] = {"type": "object", "required": ["success"]}


def listing(*, name: str, title: str, description: str, input_schema: Mapping[str, Any],
            data_schema: Mapping[str, Any], read_only: bool, destructive: bool,
            idempotent: bool, open_world: bool, icon: str) -> dict[str, Any]:
    """One tool's entry in tools/list."""
    annotations: dict[str, bool] = {"readOnlyHint": read_only}
    if not read_only:
        # Meaningful only for a tool that changes something (the specification's words).
        annotations |= {"destructiveHint": destructive, "idempotentHint": idempotent}
    annotations["openWorldHint"] = open_world
    entry: dict[str, Any] = {
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": dict(input_schema),
        "outputSchema": OUTPUT_LISTING,
        "annotations": annotations,
    }
    if found := icons(icon):
        entry["icons"] = list(found)
    return entry
