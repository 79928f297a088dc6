"""``Mcp-Param-<name>`` request headers (2026-07-28, SEP-2243): a tool parameter annotated with
``x-mcp-header`` travels in a header too, so that a gateway can route or limit on it without
reading the body. The server reads the body, so it must hold the two to the same value: a header
that is missing, malformed or different is refused with HeaderMismatch (-32020, HTTP 400), or a
gateway's decision and ours would rest on different values (streamable-http.mdx, Server Behavior
for Custom Headers and Server Validation).
"""

from __future__ import annotations

import base64
import binascii
import decimal
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..schema_types import HeaderParam
from .jsonrpc import HEADER_MISMATCH, RpcError

__all__ = ["check_param_headers", "decoded_header"]

_PREFIX, _SUFFIX = "=?base64?", "?="
# A header value as RFC 9110 allows it: visible ASCII, space and tab.
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def decoded_header(raw: str) -> str | None:
    """A header's value, its ``=?base64?…?=`` form decoded; None when it holds characters a
    header may not, or its Base64 is malformed (bad padding, a character outside the alphabet,
    not UTF-8). A value with only the prefix or only the suffix is literal."""
    if not _FIELD_VALUE.fullmatch(raw):
        return None
    value = raw.strip(" \t")  # the optional whitespace around a field value is not part of it
    if not (value.startswith(_PREFIX) and value.endswith(_SUFFIX)
            and len(value) >= len(_PREFIX) + len(_SUFFIX)):
        return value
    encoded = value[len(_PREFIX):-len(_SUFFIX)]
    if not _BASE64.fullmatch(encoded):
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _body_value(arguments: Any, path: tuple[str, ...]) -> Any:
    value = arguments
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def _same(header: str, value: Any, json_type: str) -> bool:
    if json_type == "boolean":
        return isinstance(value, bool) and header == ("true" if value else "false")
    if json_type == "integer":
        # Numerically, as the specification asks: "42.0" and 42 are the same integer. Decimal,
        # not float: two integers past 2**53 are not equal because their floats are.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        try:
            return decimal.Decimal(header) == value
        except decimal.InvalidOperation:
            return False
    return isinstance(value, str) and header == value


def check_param_headers(headers: Mapping[str, str], params: Iterable[HeaderParam],
                        arguments: Any) -> RpcError | None:
    """The HeaderMismatch a request earns for its ``Mcp-Param-*`` headers, or None."""
    for param in params:
        name = f"Mcp-Param-{param.header}"
        value = _body_value(arguments, param.path)
        raw = headers.get(name)
        if value is None:
            # No value, no header expected; one sent anyway must at least be well formed.
            if raw is not None and decoded_header(raw) is None:
                return RpcError(HEADER_MISMATCH, f"{name} header is malformed")
            continue
        if raw is None:
            return RpcError(HEADER_MISMATCH, f"{name} header is missing; the body gives "
                                             f"{'.'.join(param.path)}")
        header = decoded_header(raw)
        if header is None:
            return RpcError(HEADER_MISMATCH, f"{name} header holds invalid characters or "
                                             "malformed Base64")
        if not _same(header, value, param.json_type):
            return RpcError(HEADER_MISMATCH, f"{name} header does not match the body's "
                                             f"{'.'.join(param.path)}")
    return None
