"""A bearer credential to a principal: an API key (``spk_...``), or with OAuth configured an
access token of a trusted issuer bound to a tenant.

One verification for every door that takes a bearer credential (the MCP middleware and the admin
API): each turns a :class:`CredentialRefused` into its own kind of answer, so the two can never
disagree about who a credential is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .auth import SUSPENDED, Authenticator, Principal, key_problem
from .config import Settings
from .errors import ServiceError
from .oauth import TokenRefused, TokenVerifier, VerifiedToken
from .oauth.challenges import bearer_challenge
from .oauth.identity import IdentityMapper

__all__ = ["API_KEY_PREFIX", "BearerCheck", "CredentialRefused", "bearer_credential",
           "missing_bearer"]

log = logging.getLogger("spiral_mcp.http")

API_KEY_PREFIX = "spk_"


# Not frozen: raising sets the traceback on the exception.
@dataclass
class CredentialRefused(Exception):
    """Why a credential is not accepted: an HTTP status, a code of the envelope, a sentence for
    the caller (never repeating the credential) and the headers the answer needs."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def _challenge(settings: Settings) -> str:
    return bearer_challenge(settings) if settings.oauth else 'Bearer realm="spiral-mcp"'


def missing_bearer(settings: Settings, scheme: str, rest: str) -> str:
    """Why an Authorization header is not ``Bearer <credential>``, in words that point at the
    fix.

    Never repeats the header: what was sent in place of a scheme may be the key itself.
    """
    oauth = settings.oauth
    noun = "key or token" if oauth else "key"
    sent = f"<{noun}>"
    if not scheme:
        what = "an API key or an OAuth access token" if oauth else "an API key"
        return f"{what} is required: Authorization: Bearer {sent}"
    if scheme.lower() == "bearer":
        what = "the API key or access token" if oauth else "the API key"
        return f"{what} is missing after Bearer: Authorization: Bearer {sent}"
    if not rest.strip():
        # One word and no scheme: most often a key pasted without "Bearer ".
        return (f"the Authorization header has no scheme: send the {noun} as "
                f"Authorization: Bearer {sent}")
    return f"the Authorization scheme must be Bearer: Authorization: Bearer {sent}"


def bearer_credential(settings: Settings, header: str) -> str:
    """The credential of an ``Authorization`` header; CredentialRefused (401 UNAUTHENTICATED,
    with the challenge) when it is not ``Bearer <credential>``."""
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise CredentialRefused(401, "UNAUTHENTICATED",
                                missing_bearer(settings, scheme, credential),
                                {"WWW-Authenticate": _challenge(settings)})
    return credential


def _invalid_api_key(message: str) -> CredentialRefused:
    # 403 and no challenge: a 401 would send clients such as mcp-remote and the Inspector into
    # an OAuth flow, hiding this message, when what the user needs is another key.
    return CredentialRefused(403, "INVALID_API_KEY", message)


async def _verified(verifier: TokenVerifier, token: str) -> VerifiedToken:
    """The verified token; an authorization server out of reach is a 503 whose message names no
    address: what its metadata points at (a jwks_uri on another host) is said in the log, never
    to the client, so a token cannot be used to probe hosts this server reaches."""
    try:
        return await verifier.verify(token)
    except ServiceError as exc:
        log.warning("an authorization server could not be used", extra={"reason": exc.message})
        raise ServiceError(exc.code, "the authorization server of this token cannot be reached "
                           "or answered unusably; try again shortly",
                           retry_after=exc.retry_after) from None


@dataclass(frozen=True, slots=True)
class BearerCheck:
    """What verifies a bearer credential: the key authenticator, and with OAuth configured the
    token verifier and the identity mapper."""

    settings: Settings
    authenticator: Authenticator
    verifier: TokenVerifier | None = None
    identities: IdentityMapper | None = None

    async def principal(self, credential: str) -> Principal:
        """The principal ``credential`` authenticates; CredentialRefused saying why not, or a
        ServiceError (CONNECTION_ERROR) when it cannot be checked now."""
        if credential.startswith(API_KEY_PREFIX):
            # Always an API key, OAuth or not: its own message, never a token's challenge.
            if (problem := key_problem(credential)) is not None:
                raise _invalid_api_key(f"the API key is malformed: {problem}")
            principal = await self.authenticator.authenticate(credential)
            if principal is None and self.authenticator.suspended(credential):
                raise _invalid_api_key(SUSPENDED)
            if principal is None:
                # The same answer for unknown, revoked and expired keys: no hint either way.
                raise _invalid_api_key(
                    "the API key is not valid: it is unknown, revoked or expired; an operator "
                    "creates a new one with spiral-mcp apikey create")
            return principal
        if self.verifier is None or self.identities is None:
            raise _invalid_api_key("this server takes API keys (spk_...) and OAuth is not "
                                   "configured, so it cannot check this credential; an "
                                   "operator creates a key with spiral-mcp apikey create")
        _, principal = await self.token_principal(credential)
        return principal

    async def token_principal(self, token: str) -> tuple[VerifiedToken, Principal]:
        """An OAuth access token verified and mapped to its principal (OAuth configured): what
        :meth:`principal` does with one, and what the console's OAuth sign-in keeps of it.
        CredentialRefused (401 INVALID_TOKEN) saying why it is refused; a ServiceError when it
        cannot be checked now."""
        assert self.verifier is not None and self.identities is not None
        try:
            verified = await _verified(self.verifier, token)
            return verified, await self.identities.principal(verified)
        except TokenRefused as exc:
            raise CredentialRefused(401, "INVALID_TOKEN", str(exc), {
                "WWW-Authenticate": bearer_challenge(self.settings, error="invalid_token",
                                                     description=str(exc))}) from None
