"""Protocol versions: the handshake eras negotiated by ``initialize`` and the stateless era."""

from __future__ import annotations

__all__ = [
    "BATCHING_VERSIONS",
    "CLIENT_CAPABILITIES_META",
    "DEFAULT_HEADERLESS_VERSION",
    "HANDSHAKE_VERSIONS",
    "LATEST_HANDSHAKE",
    "MODERN_VERSIONS",
    "PROTOCOL_VERSION_META",
    "SUPPORTED_VERSIONS",
    "negotiate",
]

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED_VERSIONS = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
# Only 2025-03-26 allows JSON-RPC batches on an MCP session (added then, removed in 2025-06-18).
BATCHING_VERSIONS = frozenset({"2025-03-26"})
# Where a stateless-era request carries its version and the client's capabilities (params._meta).
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
# A request without MCP-Protocol-Version is taken as this version (streamable HTTP rules).
DEFAULT_HEADERLESS_VERSION = "2025-03-26"


def negotiate(requested: object) -> str:
    """Echo a supported handshake version; otherwise offer the latest and let the client decide."""
    if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_HANDSHAKE
