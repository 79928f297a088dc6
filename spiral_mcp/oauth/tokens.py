"""Access token verification: signed JWTs checked here, opaque tokens by introspection.

A JWT access token (RFC 9068, or any JWT an issuer signs) is accepted only when its issuer is
configured, its signature verifies with that issuer's published keys under an accepted
asymmetric algorithm, its audience is this server's resource, and it is within its validity
period. Every refusal is a :class:`TokenRefused` whose text is safe to show the client.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import aiohttp
import jwt
import orjson
from jwt.utils import base64url_decode

from ..config import Settings
from .cache import VerifiedTokens
from .claims import (
    TokenRefused,
    VerifiedToken,
    check_audience,
    client_id_of,
    expiry_of,
    scopes_of,
    subject_of,
)
from .discovery import IssuerKeys
from .fetching import Fetcher
from .introspection import Introspector

__all__ = ["MAX_TOKEN_BYTES", "TokenVerifier"]

# Larger than any real access token; refused before any parsing work is spent on it.
MAX_TOKEN_BYTES = 16 * 1024
# How long a verified JWT is taken again without checking its signature (a client sends one token
# with many requests), as long as its issuer still publishes the key that signed it.
VERIFIED_SECONDS = 60.0
# RFC 9068's type, plain JWT, or none at all. Other types (logout tokens, DPoP proofs...) are
# other kinds of JWT. An OpenID ID token usually says "JWT" too, but its aud is the client id,
# so the audience check refuses it.
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "jwt"})

_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidIssuerError, "the token's issuer is not trusted by this server"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
)


class TokenVerifier:
    """Verifies access tokens for this server (OAUTH_RESOURCE) from the configured issuers."""

    def __init__(
        self, settings: Settings, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        if not settings.oauth or settings.oauth_resource is None:
            raise ValueError("TokenVerifier needs OAUTH_ISSUERS and OAUTH_RESOURCE")
        self._resource = settings.oauth_resource
        self._algorithms = settings.oauth_algorithms
        self._leeway = settings.oauth_leeway
        self._fetcher = Fetcher(session)
        self._issuers = {
            issuer: IssuerKeys(issuer, self._fetcher, algorithms=settings.oauth_algorithms,
                               ttl=settings.oauth_jwks_ttl,
                               min_refresh=settings.oauth_jwks_min_refresh)
            for issuer in settings.oauth_issuers
        }
        self._introspector = (
            Introspector(settings, self._fetcher) if settings.oauth_introspection_url else None
        )
        # Each token verified: what it was found to be, and the kid of the key that signed it.
        self._verified: VerifiedTokens[tuple[VerifiedToken, str | None]] = VerifiedTokens()

    async def verify(self, token: str) -> VerifiedToken:
        """The verified token, or :class:`TokenRefused`; a ServiceError (CONNECTION_ERROR)
        when an authorization server cannot be asked."""
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRefused("the token is too large")
        if not token or not token.isascii():
            raise TokenRefused("the token is malformed")
        if token.count(".") != 2:
            if self._introspector is None:
                raise TokenRefused("the token is not a JWT, and this server has no "
                                   "introspection endpoint to check other tokens")
            return await self._introspector.verify(token)
        key = self._verified.key(token)
        if (seen := self._verified.get(key)) is not None:
            verified, kid = seen
            # A key the issuer no longer publishes (found at a refetch) verifies nothing more.
            if self._issuers[verified.issuer].publishes(kid):
                return verified
        verified, kid = await self._verify_jwt(token)
        # Never past the moment a new check would refuse it as expired.
        self._verified.put(key, (verified, kid), until=min(time.time() + VERIFIED_SECONDS,
                                                           verified.expires_at + self._leeway))
        return verified

    @property
    def fetcher(self) -> Fetcher:
        """The HTTP client the verifier asks authorization servers with (one per server)."""
        return self._fetcher

    async def issuer_metadata(self, issuer: str) -> Mapping[str, Any]:
        """The metadata document of a configured issuer (the one the keys are found through)."""
        return await self._issuers[issuer].metadata()

    async def verify_id_token(self, token: str, *, issuer: str, client_id: str,
                              nonce: str) -> Mapping[str, Any]:
        """The claims of an OpenID Connect ID token ``issuer`` signed for the client
        ``client_id`` in the sign-in that sent ``nonce``; TokenRefused otherwise. (Its audience
        is the client, so :meth:`verify` would refuse it as an access token.)"""
        header, _ = _peek(token)
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise TokenRefused("the ID token's algorithm is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("the ID token is malformed")
        keys = self._issuers[issuer]
        candidates, _ = await keys.find(kid, alg)
        if not candidates:
            raise TokenRefused("the ID token's signing key is not one its issuer publishes")
        claims = self._decode(token, candidates, alg=alg, issuer=issuer)
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or client_id not in audiences:
            raise TokenRefused("the ID token was issued for another client")
        # OpenID Connect Core 3.1.3.7: the nonce ties the ID token to this browser's sign-in,
        # so a token of another sign-in (replayed or injected) is refused.
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(
                claims["nonce"].encode(), nonce.encode()):
            raise TokenRefused("the ID token's nonce is not this sign-in's")
        return claims

    async def _verify_jwt(self, token: str) -> tuple[VerifiedToken, str | None]:
        header, unverified = _peek(token)
        alg = header.get("alg")
        if alg not in self._algorithms:  # "none" and HMAC algorithms are never listed
            raise TokenRefused("the token's algorithm is not accepted")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower().removeprefix(
                "application/") not in _ACCESS_TOKEN_TYPES):
            raise TokenRefused("the token is not an access token (its typ header is not at+jwt)")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("the token is malformed")
        # Keys are looked up for the issuer the token claims, and only a configured one: the
        # claim picks whose keys to try, the signature then proves it.
        issuer = unverified.get("iss")
        keys = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise TokenRefused("the token's issuer is not trusted by this server")
        candidates, kid_known = await keys.find(kid, alg)
        if not candidates:
            raise TokenRefused("the token's algorithm is not accepted" if kid_known else
                               "the token's signing key is not one its issuer publishes")
        claims = self._decode(token, candidates, alg=alg, issuer=keys.issuer)
        check_audience(claims.get("aud"), self._resource)
        return VerifiedToken(
            issuer=keys.issuer, subject=subject_of(claims),
            claims=MappingProxyType(claims), scopes=scopes_of(claims),
            expires_at=expiry_of(claims["exp"]), client_id=client_id_of(claims),
        ), kid

    def _decode(
        self, token: str, candidates: list[jwt.PyJWK], *, alg: str, issuer: str
    ) -> dict[str, Any]:
        for key in candidates:
            try:
                return jwt.decode(
                    token, key, algorithms=[alg], issuer=issuer, leeway=self._leeway,
                    # The audience is checked by check_audience: the MCP spec accepts an
                    # upper-case scheme and host, PyJWT compares exact strings.
                    options={"require": ["exp", "iss", "sub"], "verify_aud": False},
                )
            except jwt.InvalidSignatureError:
                continue  # a token without a kid: the next key of its type may be the one
            except jwt.MissingRequiredClaimError as exc:
                raise TokenRefused(f"the token has no {_CLAIM_NAMES[exc.claim]}") from None
            except jwt.PyJWTError as exc:
                raise TokenRefused(_refusal(exc)) from None
        raise TokenRefused("the token's signature does not verify")

    async def close(self) -> None:
        """Close the HTTP session, if the verifier made it."""
        await self._fetcher.close()


_CLAIM_NAMES = {"exp": "expiry (exp)", "iss": "issuer (iss)", "sub": "subject (sub)"}


def _refusal(exc: jwt.PyJWTError) -> str:
    for kind, description in _REFUSALS:
        if isinstance(exc, kind):
            return description
    return "the token is malformed"


def _peek(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The header and the claims, read without trusting them: they only choose which keys
    and checks apply."""
    try:
        # Read by hand first: PyJWT would refuse a crit header as merely malformed.
        header = orjson.loads(base64url_decode(token.partition(".")[0]))
    except ValueError:
        raise TokenRefused("the token is malformed") from None
    if not isinstance(header, dict):
        raise TokenRefused("the token is malformed")
    if "crit" in header:
        # RFC 7515 section 4.1.11: a recipient that does not understand a critical extension
        # must refuse the token; this server understands none.
        raise TokenRefused("the token has critical header extensions this server does not "
                           "understand")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenRefused("the token is malformed") from None
    return header, claims
