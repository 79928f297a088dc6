"""Protocol versions: the handshake eras negotiated by ``initialize`` and the stateless era, whose
every request names its version and the client's capabilities in ``params._meta``."""

from __future__ import annotations

from typing import Any

from .jsonrpc import INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION, RpcError

__all__ = [
    "BATCHING_VERSIONS",
    "CLIENT_CAPABILITIES_META",
    "DEFAULT_HEADERLESS_VERSION",
    "HANDSHAKE_VERSIONS",
    "LATEST_HANDSHAKE",
    "MODERN_VERSIONS",
    "PROTOCOL_VERSION_META",
    "SUPPORTED_VERSIONS",
    "VERSION_HEADER",
    "check_stateless_version",
    "missing_stateless_meta",
    "negotiate",
    "unsupported",
]

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED_VERSIONS = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
# Only 2025-03-26 allows JSON-RPC batches on an MCP session (added then, removed in 2025-06-18).
BATCHING_VERSIONS = frozenset({"2025-03-26"})
# Where a stateless-era request carries its version and the client's capabilities (params._meta).
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
# The HTTP header naming the protocol version of a request to /mcp.
VERSION_HEADER = "MCP-Protocol-Version"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
# A request without MCP-Protocol-Version is taken as this version (streamable HTTP rules).
DEFAULT_HEADERLESS_VERSION = "2025-03-26"


def negotiate(requested: object) -> str:
    """Echo a supported handshake version; otherwise offer the latest and let the client decide."""
    if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_HANDSHAKE


def unsupported(requested: Any) -> RpcError:
    """-32022, naming the stateless versions this server speaks."""
    return RpcError(UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol version: {requested}",
                    {"supported": list(MODERN_VERSIONS), "requested": requested})


def missing_stateless_meta(params: dict[str, Any]) -> RpcError | None:
    """-32602 unless ``params._meta`` carries the protocol version and the client capabilities."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or PROTOCOL_VERSION_META not in meta \
            or CLIENT_CAPABILITIES_META not in meta:
        return RpcError(INVALID_PARAMS, f"params._meta must carry {PROTOCOL_VERSION_META!r} and "
                                        f"{CLIENT_CAPABILITIES_META!r}")
    return None


def check_stateless_version(version: Any) -> RpcError | None:
    """-32602 for a version that is not a string, -32022 for one this server does not speak as
    a stateless version; None for a stateless version it does."""
    if not isinstance(version, str):
        return RpcError(INVALID_PARAMS, "the protocol version must be a string")
    if version not in MODERN_VERSIONS:
        return unsupported(version)
    return None
