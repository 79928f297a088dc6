"""The web console as an OAuth client of one issuer: the authorization code flow with PKCE.

:meth:`AuthorizationClient.start` makes a :class:`PendingSignIn` (state, nonce and PKCE
verifier, which travel in the browser's pre-sign-in cookie, never in a URL) and the
authorization request it belongs to: PKCE S256 (RFC 7636), ``resource`` = OAUTH_RESOURCE
(RFC 8707, so the access token's audience is this server), the scope OAUTH_SCOPE_MAP names for
``admin``, and ``openid`` when the issuer speaks OpenID Connect (its ID token then carries the
nonce back). :meth:`AuthorizationClient.finish` checks what the browser came back with and
exchanges the code; the access token it gives is then verified as /mcp's tokens are, by the
caller (credentials.BearerCheck), never trusted for coming from the token endpoint.

Built on the verifier's own discovery (the issuer's checked metadata) and HTTP client: no second
HTTP stack. Every refusal is a :class:`SignInRefused` whose text the sign-in page shows.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from ..config import Settings
from .challenges import token_scopes
from .claims import TokenRefused
from .discovery import usable_endpoint
from .fetching import basic_authorization
from .tokens import TokenVerifier

__all__ = ["AuthorizationClient", "PendingSignIn", "SignInRefused"]

# 32 random bytes each; the verifier's 86 characters are within RFC 7636's 43 to 128.
_STATE_BYTES = 32
_VERIFIER_BYTES = 64
_LONGEST_PART = 200


class SignInRefused(Exception):
    """An OAuth sign-in that cannot complete; ``str()`` is one line for the sign-in page."""


def _token(size: int) -> str:
    return secrets.token_urlsafe(size)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True, slots=True)
class PendingSignIn:
    """A sign-in between the authorization request and the browser's return: what only the
    browser that started it holds."""

    state: str
    nonce: str
    verifier: str

    @classmethod
    def new(cls) -> PendingSignIn:
        return cls(_token(_STATE_BYTES), _token(_STATE_BYTES), _token(_VERIFIER_BYTES))

    def cookie_value(self) -> str:
        # base64url never holds ".": the three parts split back unambiguously.
        return f"{self.state}.{self.nonce}.{self.verifier}"

    @classmethod
    def from_cookie(cls, value: str | None) -> PendingSignIn | None:
        """The pending sign-in a cookie holds; None for none or a malformed one."""
        parts = (value or "").split(".")
        if len(parts) != 3 or not all(0 < len(part) <= _LONGEST_PART and part.isascii()
                                      for part in parts):
            return None
        return cls(*parts)


class AuthorizationClient:
    """The console's client at CONSOLE_OAUTH_ISSUER (CONSOLE_OAUTH_CLIENT_ID, and its secret
    when it is a confidential client), returning to ``redirect_uri``."""

    def __init__(self, settings: Settings, verifier: TokenVerifier, *,
                 redirect_uri: str) -> None:
        assert settings.console_oauth_client_id is not None
        assert settings.console_oauth_issuer is not None and settings.oauth_resource is not None
        self.issuer = settings.console_oauth_issuer
        self.name = settings.console_oauth_name or urlsplit(self.issuer).netloc
        self.client_id = settings.console_oauth_client_id
        self.redirect_uri = redirect_uri
        secret = settings.console_oauth_client_secret
        self._authorization = None if secret is None else basic_authorization(self.client_id,
                                                                               secret)
        self._resource = settings.oauth_resource
        self._scopes = token_scopes(settings, ["admin"])
        self._verifier = verifier

    async def _endpoint(self, name: str) -> tuple[str, Mapping]:
        metadata = await self._verifier.issuer_metadata(self.issuer)
        url = metadata.get(name)
        if not usable_endpoint(url, self.issuer):
            raise SignInRefused(f"the issuer's metadata names no usable {name}, so this server "
                                "cannot sign in with it")
        return url, metadata

    async def start(self) -> tuple[str, PendingSignIn]:
        """The authorization request's URL and the pending sign-in it belongs to. A
        ServiceError (CONNECTION_ERROR) when the issuer cannot be reached."""
        url, metadata = await self._endpoint("authorization_endpoint")
        methods = metadata.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise SignInRefused("the issuer does not support PKCE with S256, which this server "
                                "requires")
        pending = PendingSignIn.new()
        scopes = list(self._scopes)
        if _speaks_openid(metadata):
            scopes.insert(0, "openid")
        query = {"response_type": "code", "client_id": self.client_id,
                 "redirect_uri": self.redirect_uri, "scope": " ".join(scopes),
                 "state": pending.state, "nonce": pending.nonce,
                 "code_challenge": _s256(pending.verifier), "code_challenge_method": "S256",
                 "resource": self._resource}
        separator = "&" if urlsplit(url).query else "?"
        return f"{url}{separator}{urlencode(query)}", pending

    async def finish(self, pending: PendingSignIn | None, answer: Mapping[str, str]) -> str:
        """The access token of the authorization response ``answer`` (the callback's query)
        for the browser's ``pending`` sign-in; SignInRefused saying why there is none."""
        if pending is None:
            raise SignInRefused("this sign-in was not started in this browser, or took more than "
                                "10 minutes; start it again")
        state = answer.get("state", "")
        # Constant-time: the state is what stops another site's code being injected here.
        if not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise SignInRefused("the sign-in's state does not match this browser's; start it "
                                "again")
        # RFC 9207: an answer naming another issuer is a mix-up (or an attack); refused, as is
        # one without iss from an issuer that says it always sends it.
        if "iss" in answer and answer["iss"] != self.issuer:
            raise SignInRefused("the answer came from another issuer than the one asked")
        metadata = await self._verifier.issuer_metadata(self.issuer)
        if "iss" not in answer and metadata.get("authorization_response_iss_parameter_supported") \
                is True:
            raise SignInRefused("the answer does not name its issuer (iss), which this issuer "
                                "always does")
        if "error" in answer:
            described = answer.get("error_description") or answer["error"]
            raise SignInRefused(f"the issuer did not sign you in: {described[:300]}")
        code = answer.get("code")
        if not code:
            raise SignInRefused("the issuer's answer has no authorization code")
        return await self._exchange(code, pending)

    async def _exchange(self, code: str, pending: PendingSignIn) -> str:
        url, metadata = await self._endpoint("token_endpoint")
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_uri, "code_verifier": pending.verifier,
                "resource": self._resource}
        if self._authorization is None:
            form["client_id"] = self.client_id  # a public client names itself
        answer = await self._verifier.fetcher.post_form(
            url, form, authorization=self._authorization,
            what=f"the token endpoint of {self.issuer}")
        body = answer.data if isinstance(answer.data, dict) else {}
        if answer.status != 200:
            error = body.get("error_description") or body.get("error") or f"HTTP {answer.status}"
            raise SignInRefused(f"the issuer refused the authorization code: {str(error)[:300]}")
        token = body.get("access_token")
        if not isinstance(token, str) or str(body.get("token_type", "")).lower() != "bearer":
            raise SignInRefused("the issuer's token endpoint gave no bearer access token")
        if _speaks_openid(metadata):
            id_token = body.get("id_token")
            if not isinstance(id_token, str):
                raise SignInRefused("the issuer gave no ID token, which carries the sign-in's "
                                    "nonce back")
            try:
                await self._verifier.verify_id_token(id_token, issuer=self.issuer,
                                                     client_id=self.client_id,
                                                     nonce=pending.nonce)
            except TokenRefused as exc:
                raise SignInRefused(str(exc)) from None
        return token


def _speaks_openid(metadata: Mapping) -> bool:
    scopes = metadata.get("scopes_supported")
    return isinstance(scopes, list) and "openid" in scopes
