"""A source's answers with its own credentials taken out.

A source (or a proxy in front of it) may repeat the request's ``Authorization`` header in what
it answers, most often in an error body: "invalid token Bearer abc...". Those words become the
error of a test or a sync, kept in the run history, logged and shown to every admin of the
tenant; the token must not travel with them. Every answer's body is cleaned before anything
reads it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

__all__ = ["REDACTED", "credential_texts", "without_credentials"]

REDACTED = b"[credentials]"
# Shorter values would be found by chance in ordinary text (and no real token is this short).
_SHORTEST = 8


def credential_texts(headers: Mapping[str, str]) -> tuple[bytes, ...]:
    """What of the ``Authorization`` header an echo could show: the whole value, the credential
    after its scheme, and for Basic the decoded ``user:token`` and the token; longest first."""
    found: set[str] = set()
    for name, value in headers.items():
        if name.lower() != "authorization":
            continue
        scheme, _, credential = value.partition(" ")
        found.update((value, credential))
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
            found.update((decoded, decoded.partition(":")[2]))
    kept = {text.encode() for text in found if len(text) >= _SHORTEST}
    return tuple(sorted(kept, key=len, reverse=True))


def without_credentials(body: bytes, credentials: tuple[bytes, ...]) -> bytes:
    for credential in credentials:
        if credential in body:
            body = body.replace(credential, REDACTED)
    return body
