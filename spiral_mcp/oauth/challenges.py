"""What this server tells OAuth clients about itself: its Protected Resource Metadata (RFC 9728)
and the Bearer challenges (RFC 6750) of its 401 and 403 answers, all built from the settings.

A client with no token follows the challenge's ``resource_metadata`` to the metadata document,
finds the authorization servers there, and asks for the ``scope`` the challenge names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings

__all__ = ["METADATA_PATH", "STARTING_SCOPES", "bearer_challenge", "metadata",
           "metadata_paths", "metadata_url", "token_scopes"]

METADATA_PATH = "/.well-known/oauth-protected-resource"
# What a client is told to ask for first: enough to search, read, write and query; admin is
# asked for when a call needs it (a step-up), so no client holds it without need.
STARTING_SCOPES = ("read", "write", "query")
# RFC 6750 section 3: an error_description holds printable ASCII but for '"' and '\'.
_UNQUOTABLE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def _resource(settings: Settings) -> str:
    if settings.oauth_resource is None:
        raise ValueError("OAuth is not configured (OAUTH_RESOURCE is unset)")
    return settings.oauth_resource


def metadata_paths(settings: Settings) -> tuple[str, ...]:
    """The paths the metadata document is served at: the well-known path, and the well-known
    path followed by the resource's own path (RFC 9728 section 3.1), as clients look there."""
    path = urlsplit(_resource(settings)).path.rstrip("/")
    return (METADATA_PATH, METADATA_PATH + path) if path else (METADATA_PATH,)


def metadata_url(settings: Settings) -> str:
    """The metadata document's URL for the resource OAUTH_RESOURCE names."""
    parts = urlsplit(_resource(settings))
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{parts.path.rstrip('/')}"


def token_scopes(settings: Settings, scopes: Iterable[str]) -> list[str]:
    """The token scopes (OAUTH_SCOPE_MAP) granting the product ``scopes``, in the map's order."""
    wanted = set(scopes)
    return [theirs for ours, theirs in settings.oauth_scope_map if ours in wanted]


def metadata(settings: Settings) -> dict[str, Any]:
    """The Protected Resource Metadata document."""
    return {
        "resource": _resource(settings),
        "authorization_servers": list(settings.oauth_issuers),
        "scopes_supported": [theirs for _, theirs in settings.oauth_scope_map],
        "bearer_methods_supported": ["header"],
        "resource_name": "spiral-mcp",
    }


def bearer_challenge(settings: Settings, *, error: str | None = None,
                     description: str | None = None,
                     scopes: Iterable[str] = STARTING_SCOPES) -> str:
    """A ``WWW-Authenticate`` value: ``error`` (invalid_token, insufficient_scope) with its
    ``description``, the metadata URL, and the token scopes granting the product ``scopes``."""
    params: list[tuple[str, str]] = []
    if error is not None:
        params.append(("error", error))
    if description is not None:
        quotable = description.replace('"', "'").replace("\\", "/")
        params.append(("error_description", _UNQUOTABLE.sub("?", quotable)))
    params.append(("resource_metadata", metadata_url(settings)))
    params.append(("scope", " ".join(token_scopes(settings, scopes))))
    return "Bearer " + ", ".join(f'{name}="{value}"' for name, value in params)
