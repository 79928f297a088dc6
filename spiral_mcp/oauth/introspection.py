"""Opaque access tokens, checked at the authorization server (RFC 7662 token introspection).

The answer is held to the same rules as a JWT's claims: active, issued by a configured issuer
for this server's resource, within its validity period, with a subject. Positive answers are
cached briefly (keyed by a hash, never the token itself) so that a client's burst of requests
costs one introspection.
"""

from __future__ import annotations

import time
from types import MappingProxyType

from ..config import Settings
from ..errors import ServiceError
from .cache import VerifiedTokens
from .claims import (
    TokenRefused,
    VerifiedToken,
    check_audience,
    check_times,
    client_id_of,
    scopes_of,
    subject_of,
)
from .fetching import FailureMemory, Fetcher, basic_authorization, unusable

__all__ = ["Introspector"]

CACHE_SECONDS = 60.0
FAILURE_SECONDS = 5.0


class Introspector:
    """Asks OAUTH_INTROSPECTION_URL about tokens, as the client OAUTH_INTROSPECTION_CLIENT_ID."""

    def __init__(self, settings: Settings, fetcher: Fetcher) -> None:
        assert settings.oauth_introspection_url and settings.oauth_resource
        assert settings.oauth_introspection_client_id is not None
        assert settings.oauth_introspection_client_secret is not None
        self._url = settings.oauth_introspection_url
        self._authorization = basic_authorization(settings.oauth_introspection_client_id,
                                                  settings.oauth_introspection_client_secret)
        self._issuers = settings.oauth_issuers
        self._resource = settings.oauth_resource
        self._leeway = settings.oauth_leeway
        self._fetcher = fetcher
        self._cache: VerifiedTokens[VerifiedToken] = VerifiedTokens()
        self._failure = FailureMemory(FAILURE_SECONDS)

    async def verify(self, token: str) -> VerifiedToken:
        key = self._cache.key(token)
        if (cached := self._cache.get(key)) is not None:
            return cached
        verified = self._check(await self._ask(token))
        self._cache.put(key, verified,
                        until=min(time.time() + CACHE_SECONDS, verified.expires_at))
        return verified

    async def _ask(self, token: str) -> dict:
        what = "the token introspection endpoint"
        self._failure.check()
        try:
            answer = await self._fetcher.post_form(
                self._url, {"token": token, "token_type_hint": "access_token"},
                authorization=self._authorization, what=what)
            if answer.json_object is None:
                raise unusable(what, f"it answered HTTP {answer.status}"
                               + (" without a JSON object" if answer.status == 200 else ""))
        except ServiceError as exc:
            self._failure.remember(exc)
            raise
        return answer.json_object

    def _check(self, claims: dict) -> VerifiedToken:
        # RFC 7662 section 2.2: "active" is a boolean; anything but true is not active.
        if claims.get("active") is not True:
            raise TokenRefused("the token is not active")
        issuer = claims.get("iss")
        if issuer is None and len(self._issuers) == 1:
            issuer = self._issuers[0]  # the one server this endpoint can answer for
        if issuer not in self._issuers:
            raise TokenRefused("the token's issuer is not trusted by this server")
        if "aud" not in claims:
            # Without an audience nothing says the token was meant for this server.
            raise TokenRefused("the token's audience is not known (the introspection answer "
                               "names none), so it cannot be accepted")
        check_audience(claims["aud"], self._resource)
        expires_at = check_times(claims, leeway=self._leeway)
        client_id = client_id_of(claims)
        # RFC 7662 makes sub optional, and a client credentials token has no user: servers
        # (oidc-provider among them) then leave it out. Such a token acts for its client, the
        # subject RFC 9068 gives it in a JWT.
        subject = client_id if "sub" not in claims and client_id is not None else \
            subject_of(claims)
        return VerifiedToken(
            issuer=issuer, subject=subject, claims=MappingProxyType(claims),
            scopes=scopes_of(claims), expires_at=expires_at, client_id=client_id,
        )
