"""An issuer's signing keys: found through its metadata, cached, refetched when keys rotate.

Per issuer: the metadata document (RFC 8414, or OpenID Connect Discovery) names ``jwks_uri``;
the key set there is cached for OAUTH_JWKS_TTL. A token signed with a key id the cache does not
know prompts one refetch (the issuer may have rotated its keys), at most once every
OAUTH_JWKS_MIN_REFRESH: concurrent verifications wait for the same fetch, and a flood of made-up
key ids cannot make this server hammer the issuer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt

from ..errors import ServiceError
from .fetching import FailureMemory, Fetcher, unusable

__all__ = ["IssuerKeys", "KeySet", "metadata_urls", "usable_endpoint"]

log = logging.getLogger(__name__)

# The key type (and curves) each accepted algorithm may be verified with. Only asymmetric
# algorithms appear, so a kty "oct" key (an HMAC secret) is never used, and an RSA or EC public
# key is never turned into an HMAC secret (the HS256-with-the-public-key forgery).
_KEY_TYPES: dict[str, tuple[str, frozenset[str | None]]] = {
    **{alg: ("RSA", frozenset({None})) for alg in
       ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


def metadata_urls(issuer: str) -> tuple[str, ...]:
    """Where an issuer's metadata may be, in the order the MCP spec tries them
    (authorization-server-discovery: RFC 8414 path insertion, then OpenID Connect Discovery
    path insertion, then appending)."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")  # RFC 8414 section 3.1: the terminating "/" goes first
    if not path:
        return (f"{origin}/.well-known/oauth-authorization-server",
                f"{origin}/.well-known/openid-configuration")
    return (f"{origin}/.well-known/oauth-authorization-server{path}",
            f"{origin}/.well-known/openid-configuration{path}",
            f"{origin}{path}/.well-known/openid-configuration")


def usable_endpoint(uri: Any, issuer: str) -> bool:
    """Whether an endpoint an issuer's metadata names may be used: https, or http when the
    issuer itself is (a loopback server the settings allowed)."""
    if not isinstance(uri, str):
        return False
    try:
        scheme = urlsplit(uri).scheme
    except ValueError:
        return False
    return scheme == "https" or scheme == urlsplit(issuer).scheme == "http"


@dataclasses.dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS document: for each key id, a PyJWK per accepted algorithm."""

    keys: Mapping[tuple[str | None, str], jwt.PyJWK]
    kids: frozenset[str | None]

    @classmethod
    def from_jwks(cls, document: Any, algorithms: Iterable[str]) -> KeySet:
        """Keys that are not for signatures, of a type no accepted algorithm uses, or that
        do not build, are left out (a JWKS may carry encryption keys or new key types)."""
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("it is not a JWK set")
        keys: dict[tuple[str | None, str], jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            kid = entry.get("kid")
            if kid is not None and not isinstance(kid, str):
                continue
            for alg in algorithms:
                if _fits(entry, alg):
                    try:
                        keys[kid, alg] = jwt.PyJWK(entry, algorithm=alg)
                    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
                        break  # a malformed key builds for no algorithm
        return cls(keys, frozenset(kid for kid, _ in keys))

    def find(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """The keys to try: the one named by ``kid``, or (a token without a kid) every key
        of the algorithm's type."""
        if kid is not None:
            key = self.keys.get((kid, alg))
            return [key] if key is not None else []
        return [key for (_, key_alg), key in self.keys.items() if key_alg == alg]


def _fits(jwk: Mapping[str, Any], alg: str) -> bool:
    kty, curves = _KEY_TYPES[alg]
    # A key that names its algorithm is used with that one only (RFC 7517 section 4.4).
    return (jwk.get("kty") == kty and jwk.get("crv") in curves
            and jwk.get("alg", alg) == alg)


class IssuerKeys:
    """One issuer's key set, fetched on first use and kept fresh."""

    def __init__(
        self, issuer: str, fetcher: Fetcher, *, algorithms: tuple[str, ...], ttl: float,
        min_refresh: float,
    ) -> None:
        self.issuer = issuer
        self._fetcher = fetcher
        self._algorithms = tuple(alg for alg in algorithms if alg in _KEY_TYPES)
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._jwks_uri: str | None = None
        self._metadata: Mapping[str, Any] = {}
        self._metadata_at = -math.inf
        self._keys = KeySet({}, frozenset())
        self._keys_at = -math.inf
        self._lock = asyncio.Lock()
        # A failing issuer is asked again after a few seconds, not by every request.
        self._failure = FailureMemory(min(5.0, min_refresh))

    async def find(self, kid: str | None, alg: str) -> tuple[list[jwt.PyJWK], bool]:
        """The keys to verify a token with, and whether ``kid`` is known at all (a known kid
        with no key for ``alg`` means the algorithm does not fit the key)."""
        age = time.monotonic() - self._keys_at
        if age >= self._ttl:
            try:
                await self._refresh(since=self._ttl)
            except ServiceError:
                # An issuer down for a while must not sign every user out: keys fetched once
                # stay usable for one more OAUTH_JWKS_TTL. Past that, or never fetched, the
                # outage is the answer (503).
                if age >= 2 * self._ttl:
                    raise
                log.warning("using the cached signing keys of an unreachable issuer",
                            extra={"issuer": self.issuer})
        found = self._keys.find(kid, alg)
        if not found and kid is not None and kid not in self._keys.kids:
            # Perhaps the issuer rotated its keys since they were fetched.
            await self._refresh(since=self._min_refresh)
            found = self._keys.find(kid, alg)
        return found, kid is None or kid in self._keys.kids

    async def metadata(self) -> Mapping[str, Any]:
        """The issuer's metadata document (checked to name this issuer), fetched when older
        than OAUTH_JWKS_TTL: where a client of the issuer finds its endpoints."""
        if time.monotonic() - self._metadata_at >= self._ttl:
            async with self._lock:
                if time.monotonic() - self._metadata_at >= self._ttl:
                    self._failure.check()
                    try:
                        self._jwks_uri = await self._discover()
                    except ServiceError as exc:
                        self._failure.remember(exc)
                        raise
                    self._metadata_at = time.monotonic()
        return self._metadata

    def publishes(self, kid: str | None) -> bool:
        """Whether the key set as last fetched still has ``kid`` (a token without a kid was
        verified with one of the keys: it stands while any is left)."""
        return kid in self._keys.kids if kid is not None else bool(self._keys.kids)

    async def _refresh(self, *, since: float) -> None:
        """Fetch the key set unless it was fetched less than ``since`` seconds ago (another
        verification may have fetched it while this one waited for the lock)."""
        async with self._lock:
            if time.monotonic() - self._keys_at < since:
                return
            self._failure.check()
            try:
                if time.monotonic() - self._metadata_at >= self._ttl:
                    self._jwks_uri = await self._discover()
                    self._metadata_at = time.monotonic()
                self._keys = await self._fetch_keys(self._jwks_uri)
            except ServiceError as exc:
                self._failure.remember(exc)
                raise
            self._keys_at = time.monotonic()
            self._failure.forget()

    async def _discover(self) -> str:
        what = f"the authorization server {self.issuer}"
        reasons = []
        for url in metadata_urls(self.issuer):
            answer = await self._fetcher.get(url, what=what)
            document = answer.json_object
            if document is None:
                reasons.append(f"{url} answered HTTP {answer.status}"
                               + ("" if answer.status != 200 else " without a JSON object"))
                continue
            # RFC 8414 section 3.3: metadata naming another issuer MUST NOT be used (it could
            # point at an attacker's keys).
            if document.get("issuer") != self.issuer:
                reasons.append(f"{url} names another issuer")
                continue
            jwks_uri = document.get("jwks_uri")
            if not usable_endpoint(jwks_uri, self.issuer):
                raise unusable(what, f"its metadata at {url} has no usable jwks_uri")
            self._metadata = document
            return jwks_uri
        raise unusable(what, "no metadata document was found (" + "; ".join(reasons) + ")")

    async def _fetch_keys(self, jwks_uri: str | None) -> KeySet:
        assert jwks_uri is not None  # _discover ran first
        what = f"the signing keys of {self.issuer}"
        answer = await self._fetcher.get(jwks_uri, what=what)
        if answer.status != 200:
            raise unusable(what, f"{jwks_uri} answered HTTP {answer.status}")
        try:
            return KeySet.from_jwks(answer.data, self._algorithms)
        except ValueError as exc:
            raise unusable(what, f"{jwks_uri}: {exc}") from None
