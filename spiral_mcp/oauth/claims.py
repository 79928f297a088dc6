"""What a verified access token says, and the checks JWTs and introspected tokens share."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["TokenRefused", "VerifiedToken", "check_audience", "check_times", "client_id_of",
           "expiry_of", "scopes_of", "subject_of"]

# 9999-12-31T23:59:59Z: the last moment a date (of Python or PostgreSQL) holds. A token's exp
# becomes the end of its streams and tasks, so a later one could only fail there, as a 500.
_LATEST_EXPIRY = 253402300799


class TokenRefused(Exception):
    """An access token is not accepted; ``str()`` is a short sentence safe to show the client
    (it never repeats the token)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedToken:
    """An access token that passed every check."""

    issuer: str
    subject: str
    claims: Mapping[str, Any]
    # The token's own scope names, as the authorization server wrote them.
    scopes: frozenset[str]
    expires_at: float
    client_id: str | None


def _canonical(uri: str) -> tuple[str, ...] | None:
    # The MCP spec asks resource servers to accept upper-case scheme and host; nothing else is
    # normalised: a trailing slash, a port or a path in another case names another resource.
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    return (parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, parts.fragment)


def check_audience(aud: Any, resource: str) -> None:
    """``aud`` (a string, or a list) must name this server's resource: RFC 8707, and the MCP
    spec's "servers MUST NOT accept tokens issued for another audience" (no token passthrough)."""
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    wanted = _canonical(resource)
    if not any(isinstance(value, str) and _canonical(value) == wanted for value in values):
        raise TokenRefused(f"the token was issued for another resource (its audience is not "
                           f"{resource})")


def check_times(claims: Mapping[str, Any], *, leeway: float) -> float:
    """``exp`` (required) and ``nbf`` of an introspection answer; the expiry, in epoch seconds.
    (PyJWT makes the same checks on a JWT's claims.)"""
    exp = claims.get("exp")
    if exp is None:
        raise TokenRefused("the token has no expiry (exp)")
    nbf = claims.get("nbf", 0)
    if not all(_is_number(value) for value in (exp, nbf)):
        raise TokenRefused("the token is malformed")
    now = time.time()
    if exp <= now - leeway:
        raise TokenRefused("the token has expired")
    if nbf > now + leeway:
        raise TokenRefused("the token is not valid yet")
    return expiry_of(exp)


def expiry_of(exp: Any) -> float:
    """A checked ``exp`` (PyJWT has taken any number, or a string of one) as epoch seconds."""
    try:
        seconds = float(exp)
    except (OverflowError, TypeError, ValueError):
        raise TokenRefused("the token is malformed") from None
    if not seconds <= _LATEST_EXPIRY:  # nan too
        raise TokenRefused("the token is malformed")
    return seconds


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def subject_of(claims: Mapping[str, Any]) -> str:
    subject = claims.get("sub")
    if subject is None:
        raise TokenRefused("the token has no subject (sub)")
    if not isinstance(subject, str) or not subject:
        raise TokenRefused("the token is malformed")
    return subject


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """A space-separated ``scope`` (RFC 8693, RFC 9068), or ``scp`` as a list or a string (as
    some servers, Azure AD and Okta among them, write it)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            found.update(value)
        else:
            raise TokenRefused("the token is malformed")
    return frozenset(found)


def client_id_of(claims: Mapping[str, Any]) -> str | None:
    # RFC 9068 and RFC 7662 name it client_id; OpenID-style servers put it in azp.
    for name in ("client_id", "azp"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None
