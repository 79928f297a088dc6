"""The parsers of setting values: each turns an environment variable's text into its value or
raises :class:`ConfigError` saying what was expected."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

__all__ = ["DEFAULT_SCOPE_MAP", "JWT_ALGORITHMS", "TOOLSETS", "ConfigError", "Secret",
           "algorithms", "boolean", "choice", "claim_names", "csv", "default_data_dir",
           "fernet_key", "networks", "number", "optional_choice", "optional_text",
           "optional_whole_number", "postgres_url", "redis_url", "scope_map", "secret", "text",
           "toolsets",
           "web_url", "web_urls", "whole_number", "workers"]

T = TypeVar("T", int, float)

# The toolsets ENABLED_TOOLSETS may name: a tool's toolset is its name up to the first "_"
# (tests/test_config.py keeps this list equal to what the shipped tools declare).
TOOLSETS = ("explorer", "jira", "sources", "sql")


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "spiral-mcp")


def _bounded(cast: Callable[[str], T], what: str) -> Callable[[T, T], Callable[[str], T]]:
    """A parser factory: ``cast`` of the text, from ``lo`` to ``hi``, else a ConfigError naming
    ``what`` was expected."""
    def between(lo: T, hi: T) -> Callable[[str], T]:
        def parse(raw: str) -> T:
            try:
                value = cast(raw)
            except ValueError:
                raise ConfigError(f"expected {what} from {lo} to {hi}, got {raw!r}") from None
            if not lo <= value <= hi:  # type: ignore[operator]
                raise ConfigError(f"expected {what} from {lo} to {hi}, got {value}")
            return value

        return parse

    return between


whole_number = _bounded(int, "a whole number")
number = _bounded(float, "a number")


def optional_whole_number(lo: int, hi: int) -> Callable[[str], int | None]:
    parse_int = whole_number(lo, hi)

    def parse(raw: str) -> int | None:
        return parse_int(raw) if raw.strip() else None

    return parse


def workers(raw: str) -> int:
    """A number of server processes, or ``auto``: one per CPU this process may run on."""
    if raw.strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    try:
        return whole_number(1, 256)(raw)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (or auto)") from None


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"expected true or false, got {raw!r}")


def choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        lowered = raw.strip().lower()
        if lowered not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return lowered

    return parse


def optional_choice(*choices: str) -> Callable[[str], str | None]:
    """One of ``choices``, or None when empty (the default follows from other settings)."""
    parse_choice = choice(*choices)

    def parse(raw: str) -> str | None:
        return parse_choice(raw) if raw.strip() else None

    return parse


def postgres_url(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError("expected a postgresql:// URL")
    return raw


def redis_url(raw: str) -> str | None:
    from .redis_client import RedisUrlError, check_redis_url  # redis only where it is used

    raw = raw.strip()
    if not raw:
        return None
    try:
        check_redis_url(raw)
    except RedisUrlError as exc:
        raise ConfigError(str(exc)) from None
    return raw


def csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs (a bare address is a network of one)."""
    found = []
    for part in csv(raw):
        try:
            found.append(ipaddress.ip_network(part))
        except ValueError as exc:
            raise ConfigError(f"{part!r} is not a network in CIDR notation, like 10.0.0.0/8 or "
                              f"fd00::/8 ({exc})") from None
    return tuple(found)


def toolsets(raw: str) -> tuple[str, ...]:
    # Names match whatever their case, as every other choice does; an unknown one is refused
    # rather than served as zero tools.
    names = tuple(dict.fromkeys(part.lower() for part in csv(raw)))
    if unknown := [name for name in names if name not in TOOLSETS]:
        raise ConfigError(f"unknown toolset {', '.join(map(repr, unknown))}; expected some of "
                          f"{', '.join(TOOLSETS)}, comma-separated")
    return names


def web_url(raw: str) -> str | None:
    """An https URL, or http on a loopback host (a local authorization server under test)."""
    # Kept exactly as written, trailing slash and all: an issuer and an audience are compared
    # to a token's claims as strings.
    raw = raw.strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise ConfigError(f"expected an https URL, got {raw!r}") from None
    loopback = parts.hostname in {"localhost", "127.0.0.1", "::1"}
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ConfigError(f"expected an https URL (http only on a loopback host), got {raw!r}")
    if not parts.hostname or parts.fragment or parts.query:
        raise ConfigError(f"expected an https URL with a host and no query or fragment, "
                          f"got {raw!r}")
    return raw


def otlp_endpoint(raw: str) -> str | None:
    """An OpenTelemetry collector's base URL (OTLP/HTTP): http or https, a host, no query."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - a port out of range raises here
    except ValueError:
        raise ConfigError(f"expected an http(s) URL of an OTLP collector, got {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise ConfigError(f"expected an http(s) URL of an OTLP collector with a host and no "
                          f"query, such as http://collector:4318, got {raw!r}")
    return raw


def web_urls(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(url for part in csv(raw) if (url := web_url(part))))


# The product's scopes and, by default, what an authorization server calls them.
DEFAULT_SCOPE_MAP = (("read", "spiral:read"), ("write", "spiral:write"),
                      ("query", "spiral:query"), ("admin", "spiral:admin"))
# Asymmetric algorithms only: a symmetric one would let anyone holding the issuer's public key
# (a JWK anyone can fetch) sign tokens, and "none" signs nothing.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                   "ES512", "EdDSA")


# The product's scopes, in the order they are listed.
SCOPES = tuple(scope for scope, _ in DEFAULT_SCOPE_MAP)


def scope_map(raw: str) -> tuple[tuple[str, str], ...]:
    """``read=spiral:read,write=...``: the token scope granting each product scope."""
    found: dict[str, str] = {}
    for part in csv(raw):
        ours, sep, theirs = part.partition("=")
        ours, theirs = ours.strip().lower(), theirs.strip()
        if not sep or ours not in SCOPES or not theirs or " " in theirs:
            raise ConfigError(f"expected scope=token scope pairs, comma-separated, for "
                              f"{', '.join(SCOPES)}; got {part!r}")
        if ours in found:
            raise ConfigError(f"scope {ours!r} is mapped twice")
        found[ours] = theirs
    mapped = tuple((scope, found.get(scope, dict(DEFAULT_SCOPE_MAP)[scope])) for scope in SCOPES)
    # Checked with the defaults filled in: admin=spiral:write alone would otherwise give admin
    # to every token holding spiral:write.
    if len({theirs for _, theirs in mapped}) != len(mapped):
        raise ConfigError("two scopes are mapped to the same token scope (scopes not named "
                          f"keep their default: {', '.join('='.join(p) for p in mapped)})")
    return mapped


def algorithms(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(csv(raw)))
    if not names:
        raise ConfigError("expected at least one algorithm")
    if unknown := [name for name in names if name not in JWT_ALGORITHMS]:
        raise ConfigError(f"algorithm {', '.join(map(repr, unknown))} is not allowed; expected "
                          f"some of {', '.join(JWT_ALGORITHMS)} (asymmetric only)")
    return names


def claim_names(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(csv(raw)))
    if not names:
        raise ConfigError("expected at least one claim name")
    return names


def text(raw: str) -> str:
    return raw


def optional_text(raw: str) -> str | None:
    return raw.strip() or None


class Secret(str):
    """A secret setting: its repr never shows the value, so a logged Settings leaks nothing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


def secret(raw: str) -> Secret | None:
    return Secret(raw.strip()) if raw.strip() else None


def fernet_key(raw: str) -> Secret | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        ok = len(base64.urlsafe_b64decode(raw.encode("ascii"))) == 32
    except (binascii.Error, UnicodeEncodeError, ValueError):
        ok = False
    if not ok:
        # The value itself is never echoed: it is a secret.
        raise ConfigError("expected a Fernet key (32 bytes, url-safe base64, 44 characters)")
    return Secret(raw)
