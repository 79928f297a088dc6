"""The product's icons: tiny SVG files, served inline as ``data:`` URIs in the ``icons`` field of
the server's, tools', resources' and prompts' descriptions (MCP 2025-11-25).

Inline, not by URL: a server over stdio has no URL, and a client would otherwise fetch from a
host it must decide to trust. Each icon is a few hundred bytes, because every tool's listing
carries its toolset's icon and the tool list is what every conversation pays for first.
"""

from __future__ import annotations

import base64
import functools
from importlib import resources
from typing import Any

__all__ = ["icons"]


@functools.cache
def icons(name: str) -> tuple[dict[str, Any], ...]:
    """The ``icons`` value for the icon ``name`` (a file ``<name>.svg`` here), or () when there
    is none (a fixture's toolset, say)."""
    path = resources.files(__name__) / f"{name}.svg"
    if not path.is_file():
        return ()
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    # No mimeType or sizes: the data: URI names its type, and an SVG scales to any size (the
    # specification's reading of an icon without sizes).
    return ({"src": f"data:image/svg+xml;base64,{data}"},)
