"""Cursor paging of the list methods (tools/list, prompts/list, resources/list, …).

A cursor is opaque to the client: the list's kind and an offset, so a cursor of one list is
refused by another.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .jsonrpc import INVALID_PARAMS, RpcError

__all__ = ["PAGE_SIZE", "page"]

PAGE_SIZE = 50


def _encode_cursor(kind: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{offset}".encode()).decode()


def _decode_cursor(kind: str, cursor: Any) -> int:
    try:
        prefix, _, offset = base64.urlsafe_b64decode(str(cursor).encode()).decode().partition(":")
        if prefix != kind or not offset.isdigit():
            raise ValueError
        return int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RpcError(INVALID_PARAMS, "invalid cursor") from None


def page(kind: str, items: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """One page of a list method's ``items`` under ``kind``, from the params' cursor on."""
    offset = _decode_cursor(kind, params["cursor"]) if params.get("cursor") is not None else 0
    if offset > len(items):
        raise RpcError(INVALID_PARAMS, "invalid cursor")
    result: dict[str, Any] = {kind: items[offset:offset + PAGE_SIZE]}
    if offset + PAGE_SIZE < len(items):
        result["nextCursor"] = _encode_cursor(kind, offset + PAGE_SIZE)
    return result
