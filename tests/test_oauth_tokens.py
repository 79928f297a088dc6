"""Access token verification (issue 19) against a real issuer served over HTTP: discovery,
key rotation and its rate bound, every JWT check and refusal, and RFC 7662 introspection."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from jwt.utils import base64url_encode

from spiral_mcp.config import Settings, load_settings
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.oauth import TokenRefused, TokenVerifier, VerifiedToken
from tests.fake_issuer import CLIENT_ID, CLIENT_SECRET, RESOURCE, FakeIssuer, SigningKey

Start = Callable[..., Awaitable[FakeIssuer]]


@pytest.fixture
async def issuer_server() -> AsyncIterator[Start]:
    """``await start(FakeIssuer(...))`` serves it on 127.0.0.1 and sets its ``url``."""
    servers: list[TestServer] = []

    async def start(issuer: FakeIssuer) -> FakeIssuer:
        server = TestServer(issuer.app(), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        issuer.base = str(server.make_url("")).rstrip("/")
        issuer.url = issuer.base + issuer.path
        return issuer

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def verifiers() -> AsyncIterator[Callable[..., TokenVerifier]]:
    """``make(*issuers, **settings)``: a verifier trusting the issuers; closed after the test."""
    made: list[TokenVerifier] = []

    def make(*issuers: FakeIssuer, introspection: bool = False, **fields: Any) -> TokenVerifier:
        environ = {"OAUTH_ISSUERS": ",".join(issuer.url for issuer in issuers),
                   "OAUTH_RESOURCE": RESOURCE}
        if introspection:
            environ |= {"OAUTH_INTROSPECTION_URL": f"{issuers[0].base}/introspect",
                        "OAUTH_INTROSPECTION_CLIENT_ID": CLIENT_ID,
                        "OAUTH_INTROSPECTION_CLIENT_SECRET": CLIENT_SECRET}
        settings = load_settings(environ=environ)
        # Below the settings' own bounds where a test needs time to pass quickly.
        verifier = TokenVerifier(dataclasses.replace(settings, **fields))
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.close()


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRefused) as caught:
        await verifier.verify(token)
    description = str(caught.value)
    if len(token) >= 8:  # the token, or its signature, is never repeated
        assert token not in description and token[-8:] not in description
    return description


def forge(header: dict[str, Any], claims: dict[str, Any],
          sign: Callable[[bytes], bytes] = lambda _: b"") -> str:
    """A JWT put together by hand, as an attacker would (PyJWT refuses to make these)."""
    signing_input = b".".join(base64url_encode(json.dumps(part).encode())
                              for part in (header, claims))
    return (signing_input + b"." + base64url_encode(sign(signing_input))).decode()


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


# -- acceptance ------------------------------------------------------------------------------


async def test_a_valid_rsa_token_is_accepted_with_its_claims(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    exp = int(time.time()) + 300
    verified = await verifier.verify(issuer.token(exp=exp))
    assert isinstance(verified, VerifiedToken)
    assert verified.issuer == issuer.url
    assert verified.subject == "user-1"
    assert verified.scopes == {"spiral:read", "spiral:write"}
    assert verified.client_id == "client-9"
    assert verified.claims["email"] == "ada@example.com"
    assert verified.expires_at == exp
    with pytest.raises(TypeError):
        verified.claims["sub"] = "someone else"  # type: ignore[index]


async def test_a_valid_ec_token_is_accepted(issuer_server, verifiers) -> None:
    key = SigningKey.ec()
    issuer = await issuer_server(FakeIssuer(keys=[key]))
    verified = await verifiers(issuer).verify(issuer.token(scope=None, scp=["spiral:query"]))
    assert verified.scopes == {"spiral:query"}


async def test_each_accepted_algorithm_fits_only_its_key_type(issuer_server, verifiers) -> None:
    rsa_key, ps_key = SigningKey.rsa(), SigningKey.rsa(alg="PS256")
    issuer = await issuer_server(FakeIssuer(keys=[rsa_key, ps_key]))
    verifier = verifiers(issuer)
    # An RSA key without "alg" in its JWK verifies any RSA algorithm...
    assert (await verifier.verify(issuer.token(key=ps_key))).subject == "user-1"
    # ...but an ES256 token naming an RSA key's kid does not get that key.
    ec_key = SigningKey.ec(kid=rsa_key.kid)
    assert await refused(verifier, issuer.token(key=ec_key)) == \
        "the token's algorithm is not accepted"


async def test_typ_at_jwt_jwt_or_absent_only(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    for typ in ("at+jwt", "application/at+jwt", "JWT", None):
        assert (await verifier.verify(issuer.token(headers={"typ": typ}))).subject == "user-1"
    assert "not an access token" in await refused(
        verifier, issuer.token(headers={"typ": "logout+jwt"}))


async def test_a_token_without_kid_is_tried_with_the_issuers_keys(
        issuer_server, verifiers) -> None:
    first, second = SigningKey.rsa(), SigningKey.rsa()
    issuer = await issuer_server(FakeIssuer(keys=[first, second]))
    token = forge({"alg": "RS256"}, issuer.claims(), lambda data: second.private.sign(
        data, *_pkcs1_sha256()))
    assert (await verifiers(issuer).verify(token)).subject == "user-1"


def _pkcs1_sha256() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    return padding.PKCS1v15(), hashes.SHA256()


# -- audience, issuer, times, claims ----------------------------------------------------------


async def test_the_audience_must_be_this_resource(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    other = f"the token was issued for another resource (its audience is not {RESOURCE})"
    for aud in ("https://other.example.com/mcp", RESOURCE + "/", "https://mcp.example.com/MCP",
                "https://mcp.example.com", ["https://other.example.com"], [], None, 7):
        assert await refused(verifier, issuer.token(aud=aud)) == other, aud
    for aud in ([RESOURCE, "https://other.example.com"], "HTTPS://MCP.Example.COM/mcp"):
        assert (await verifier.verify(issuer.token(aud=aud))).subject == "user-1"


async def test_an_id_token_is_refused_by_its_audience(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    # An OpenID ID token is a JWT from the same issuer; its aud is the client, not us.
    id_token = issuer.token(aud="client-9", headers={"typ": "JWT"}, nonce="n-1")
    assert "another resource" in await refused(verifiers(issuer), id_token)


async def test_an_untrusted_issuer_is_refused_without_asking_it(
        issuer_server, verifiers) -> None:
    trusted, stranger = await issuer_server(FakeIssuer()), await issuer_server(FakeIssuer())
    verifier = verifiers(trusted)
    untrusted = "the token's issuer is not trusted by this server"
    assert await refused(verifier, stranger.token()) == untrusted
    assert await refused(verifier, trusted.token(iss=trusted.url + "/")) == untrusted
    assert await refused(verifier, trusted.token(iss=None)) == untrusted
    assert not stranger.requests and not trusted.requests


async def test_a_token_claiming_one_issuer_but_signed_by_another_is_refused(
        issuer_server, verifiers) -> None:
    shared_kid = "k1"
    a = await issuer_server(FakeIssuer(keys=[SigningKey.rsa(kid=shared_kid)]))
    b = await issuer_server(FakeIssuer(keys=[SigningKey.rsa(kid=shared_kid)]))
    verifier = verifiers(a, b)
    assert (await verifier.verify(b.token())).issuer == b.url
    forged = b.token(iss=a.url)  # signed with b's key, claiming a
    assert await refused(verifier, forged) == "the token's signature does not verify"


async def test_expiry_and_start_with_leeway(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    strict, lenient = verifiers(issuer, oauth_leeway=0.0), verifiers(issuer)
    now = int(time.time())
    assert await refused(strict, issuer.token(exp=now - 30)) == "the token has expired"
    assert await refused(lenient, issuer.token(exp=now - 120)) == "the token has expired"
    assert (await lenient.verify(issuer.token(exp=now - 30))).subject == "user-1"
    for early in ({"nbf": now + 30}, {"iat": now + 30}):
        assert await refused(strict, issuer.token(**early)) == "the token is not valid yet"
        assert (await lenient.verify(issuer.token(**early))).subject == "user-1"
    assert await refused(lenient, issuer.token(nbf=now + 120)) == "the token is not valid yet"


async def test_exp_and_sub_are_required(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    assert await refused(verifier, issuer.token(exp=None)) == "the token has no expiry (exp)"
    assert await refused(verifier, issuer.token(sub=None)) == "the token has no subject (sub)"
    assert await refused(verifier, issuer.token(sub="")) == "the token is malformed"


# -- signatures and algorithms ----------------------------------------------------------------


async def test_a_bad_signature_is_refused(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    token = issuer.token()
    header, _, signature = token.split(".")
    tampered = base64url_encode(json.dumps(issuer.claims(sub="admin")).encode()).decode()
    bad = "the token's signature does not verify"
    assert await refused(verifier, f"{header}.{tampered}.{signature}") == bad
    impostor = SigningKey.rsa(kid=issuer.keys[0].kid)  # same kid, another private key
    assert await refused(verifier, issuer.token(key=impostor)) == bad


async def test_alg_none_is_refused(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    for alg in ("none", "None", "NONE", ""):
        token = forge({"alg": alg, "kid": issuer.keys[0].kid, "typ": "at+jwt"}, issuer.claims())
        assert await refused(verifier, token) == "the token's algorithm is not accepted"
    assert not issuer.requests


async def test_hs256_signed_with_the_public_key_is_refused(issuer_server, verifiers) -> None:
    key = SigningKey.rsa()
    issuer = await issuer_server(FakeIssuer(keys=[key]))
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    secrets = (pem, pem.strip(), key.jwk()["n"].encode(), json.dumps(key.jwk()).encode())
    # Even a server misconfigured to list HS256 never makes an HMAC key from a public JWK.
    for verifier in (verifiers(issuer), verifiers(issuer, oauth_algorithms=("RS256", "HS256"))):
        for secret in secrets:
            token = forge({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}, issuer.claims(),
                          hs256(secret))
            assert await refused(verifier, token) in {
                "the token's algorithm is not accepted",
                "the token's signing key is not one its issuer publishes"}


async def test_symmetric_keys_in_the_jwks_are_never_used(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    secret = b"a shared secret the issuer wrongly published"
    issuer.extra_jwks.append({"kty": "oct", "kid": "sym", "alg": "HS256",
                              "k": base64url_encode(secret).decode()})
    verifier = verifiers(issuer, oauth_algorithms=("RS256", "HS256"))
    token = forge({"alg": "HS256", "kid": "sym"}, issuer.claims(), hs256(secret))
    assert await refused(verifier, token) == \
        "the token's signing key is not one its issuer publishes"
    assert (await verifier.verify(issuer.token())).subject == "user-1"  # the RSA key still works


async def test_critical_header_extensions_are_refused(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    for crit in (["exp"], ["b64"], "x"):
        token = issuer.token(headers={"crit": crit})
        assert "critical header" in await refused(verifier, token)


async def test_malformed_and_oversized_tokens_are_refused_before_any_fetch(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    valid = issuer.token()
    oversized = issuer.token(padding="x" * (16 * 1024))
    assert await refused(verifier, oversized) == "the token is too large"
    assert await refused(verifier, "a" * (16 * 1024 + 1)) == "the token is too large"
    for token in ("", "a.b.c", "é.b.c", valid[:-1] + "!", valid.replace(".", ". ", 1),
                  "eyJ.eyJ.", forge({"alg": "RS256"}, [1])):  # type: ignore[arg-type]
        assert await refused(verifier, token) in {
            "the token is malformed", "the token's signature does not verify"}, token
    assert not issuer.requests


# -- discovery ---------------------------------------------------------------------------------


async def test_an_oidc_only_issuer_is_discovered(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer(rfc8414=False, oidc="inserted"))
    assert (await verifiers(issuer).verify(issuer.token())).subject == "user-1"
    assert issuer.log[:2] == ["/.well-known/oauth-authorization-server",
                              "/.well-known/openid-configuration"]


async def test_an_issuer_with_a_path_is_discovered_in_the_specs_order(
        issuer_server, verifiers) -> None:
    inserted = await issuer_server(FakeIssuer(path="/tenant1"))
    assert (await verifiers(inserted).verify(inserted.token())).issuer.endswith("/tenant1")
    assert inserted.log == ["/.well-known/oauth-authorization-server/tenant1", "/keys"]

    appended = await issuer_server(FakeIssuer(path="/tenant1", rfc8414=False, oidc="appended"))
    assert (await verifiers(appended).verify(appended.token())).subject == "user-1"
    assert appended.log == ["/.well-known/oauth-authorization-server/tenant1",
                            "/.well-known/openid-configuration/tenant1",
                            "/tenant1/.well-known/openid-configuration", "/keys"]


async def test_metadata_naming_another_issuer_is_not_used(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer(metadata_issuer="https://honest.example"))
    verifier = verifiers(issuer)
    with pytest.raises(ServiceError) as caught:
        await verifier.verify(issuer.token())
    assert caught.value.code == ErrorCode.CONNECTION_ERROR
    assert "names another issuer" in caught.value.message
    assert not issuer.jwks_fetches


async def test_an_unreachable_issuer_is_a_connection_error_remembered_briefly(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = FakeIssuer()
    gone.url = gone.base = f"http://127.0.0.1:{port}"
    token = gone.token(key=issuer.keys[0])
    with pytest.raises(ServiceError) as caught:
        await verifiers(gone).verify(token)
    assert caught.value.code == ErrorCode.CONNECTION_ERROR
    assert token not in caught.value.message

    # A failing issuer is asked once, then left alone for a while, then asked again.
    verifier = verifiers(issuer, oauth_jwks_min_refresh=0.5)
    issuer.status = 500
    for _ in range(5):
        with pytest.raises(ServiceError) as caught:
            await verifier.verify(issuer.token())
        assert caught.value.code == ErrorCode.CONNECTION_ERROR
    assert len(issuer.log) == 2  # both metadata documents, once
    issuer.status = None
    await asyncio.sleep(0.55)
    assert (await verifier.verify(issuer.token())).subject == "user-1"


async def test_a_jwks_that_is_not_json_is_a_connection_error(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    for body in (b"<html>oops</html>", b'{"keys": 3}', b"[]"):
        issuer.jwks_body = body
        with pytest.raises(ServiceError) as caught:
            await verifiers(issuer).verify(issuer.token())
        assert caught.value.code == ErrorCode.CONNECTION_ERROR


# -- keys: cache, rotation, refetch bound -----------------------------------------------------


async def test_keys_are_fetched_once_for_concurrent_verifications(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer)
    results = await asyncio.gather(*(verifier.verify(issuer.token()) for _ in range(20)))
    assert {verified.subject for verified in results} == {"user-1"}
    assert issuer.log == ["/.well-known/oauth-authorization-server", "/keys"]


async def test_rotated_keys_are_found_and_removed_keys_stop_verifying(
        issuer_server, verifiers) -> None:
    old, new = SigningKey.rsa(), SigningKey.ec()
    issuer = await issuer_server(FakeIssuer(keys=[old]))
    verifier = verifiers(issuer, oauth_jwks_min_refresh=0.2)
    assert (await verifier.verify(issuer.token(key=old))).subject == "user-1"

    issuer.published = [new]  # the issuer rotates
    await asyncio.sleep(0.25)
    assert (await verifier.verify(issuer.token(key=new))).subject == "user-1"
    assert issuer.jwks_fetches == 2
    # The refetch dropped the old key: its tokens no longer verify, though it was cached before.
    await asyncio.sleep(0.25)
    assert await refused(verifier, issuer.token(key=old, jti="another")) == \
        "the token's signing key is not one its issuer publishes"
    assert issuer.jwks_fetches == 3


async def test_a_flood_of_unknown_kids_fetches_the_keys_at_most_once_per_interval(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer, oauth_jwks_min_refresh=1.0)
    await verifier.verify(issuer.token())
    assert issuer.jwks_fetches == 1

    def made_up() -> str:
        return issuer.token(key=SigningKey(uuid.uuid4().hex, "RS256", issuer.keys[0].private))

    together, one_by_one = [made_up() for _ in range(50)], [made_up() for _ in range(50)]
    await asyncio.sleep(1.05)
    refusals = await asyncio.gather(*(refused(verifier, token) for token in together))
    for token in one_by_one:
        refusals.append(await refused(verifier, token))
    assert set(refusals) == {"the token's signing key is not one its issuer publishes"}
    assert issuer.jwks_fetches == 2  # one refetch for the whole flood
    # Within the default interval (30 s) an unknown kid right after a fetch fetches nothing.
    fresh = verifiers(issuer)
    await fresh.verify(issuer.token())
    await asyncio.gather(*(refused(fresh, made_up()) for _ in range(20)))
    assert issuer.jwks_fetches == 3


async def test_keys_expire_after_the_ttl(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer, oauth_jwks_ttl=0.2)
    await verifier.verify(issuer.token(jti="1"))
    await asyncio.sleep(0.25)
    await verifier.verify(issuer.token(jti="2"))
    assert issuer.log == ["/.well-known/oauth-authorization-server", "/keys"] * 2


async def test_cached_keys_outlive_an_outage_by_one_ttl(issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer, oauth_jwks_ttl=0.3, oauth_jwks_min_refresh=1.0)
    await verifier.verify(issuer.token(jti="1"))
    issuer.status = 500  # the issuer goes down
    await asyncio.sleep(0.35)
    # Past the TTL the refetch fails, and the keys fetched before still verify...
    assert (await verifier.verify(issuer.token(jti="2"))).subject == "user-1"
    await asyncio.sleep(0.3)
    # ...until twice the TTL: then the outage is the answer.
    with pytest.raises(ServiceError) as caught:
        await verifier.verify(issuer.token(jti="3"))
    assert caught.value.code == ErrorCode.CONNECTION_ERROR


async def test_a_verified_token_is_taken_again_until_its_expiry_without_a_fetch(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer, oauth_jwks_min_refresh=0.1)
    token = issuer.token(exp=int(time.time()) + 2)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # taken again as it was
    assert issuer.jwks_fetches == 1
    # Once a refetch (here prompted by a token of a new key) finds the old key withdrawn, the
    # tokens it signed are checked again, and refused.
    issuer.published = [SigningKey.ec()]
    await asyncio.sleep(0.15)
    assert (await verifier.verify(issuer.token(key=issuer.published[0]))).subject == "user-1"
    assert issuer.jwks_fetches == 2
    assert await refused(verifier, token) == \
        "the token's signing key is not one its issuer publishes"
    # A verified token is never taken past its exp (OAUTH_LEEWAY is 60 s by default: the
    # verifier here allows none).
    strict = verifiers(issuer, oauth_leeway=0)
    issuer.published = list(issuer.keys)
    # A whole second at least before exp: the strict verifier's first call also fetches the
    # issuer's metadata and keys, which a loaded machine can make slow.
    expiry = int(time.time()) + 3
    soon = issuer.token(exp=expiry, jti="soon")
    await strict.verify(soon)
    await asyncio.sleep(max(0.0, expiry - time.time()) + 0.1)
    assert await refused(strict, soon) == "the token has expired"


# -- opaque tokens: introspection -------------------------------------------------------------


async def test_an_opaque_token_without_introspection_is_refused(issuer_server,
                                                                verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    assert "no introspection endpoint" in await refused(verifiers(issuer), "opaque-token-123")


async def test_introspection_accepts_active_tokens_for_this_resource(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer, introspection=True)
    now = int(time.time())
    answer = {"active": True, "iss": issuer.url, "sub": "user-7", "aud": [RESOURCE],
              "exp": now + 600, "scope": "spiral:read", "client_id": "client-3"}
    issuer.introspection |= {
        "good": answer,
        "no-iss": {**answer, "iss": None},
        "inactive": {"active": False},
        "stringly-active": {**answer, "active": "true"},
        "no-aud": {key: value for key, value in answer.items() if key != "aud"},
        "wrong-aud": {**answer, "aud": "https://other.example.com"},
        "wrong-iss": {**answer, "iss": "https://evil.example.com"},
        "expired": {**answer, "exp": now - 600},
        "early": {**answer, "nbf": now + 600},
        "no-sub": {**answer, "sub": None, "client_id": None},
        "no-exp": {**answer, "exp": None},
    }
    verified = await verifier.verify("good")
    assert (verified.issuer, verified.subject, verified.scopes, verified.client_id,
            verified.expires_at) == (issuer.url, "user-7", {"spiral:read"}, "client-3", now + 600)
    # A client credentials token names no user (RFC 7662 makes sub optional): its client is
    # the subject.
    issuer.introspection["client-only"] = {k: v for k, v in answer.items() if k != "sub"}
    assert (await verifier.verify("client-only")).subject == "client-3"
    # With one issuer configured, an answer without iss is that issuer's.
    assert (await verifier.verify("no-iss")).issuer == issuer.url
    expected = {
        "inactive": "the token is not active",
        "stringly-active": "the token is not active",
        "no-aud": "the token's audience is not known (the introspection answer names none), "
                  "so it cannot be accepted",
        "wrong-aud": f"the token was issued for another resource (its audience is not "
                     f"{RESOURCE})",
        "wrong-iss": "the token's issuer is not trusted by this server",
        "expired": "the token has expired",
        "early": "the token is not valid yet",
        "no-sub": "the token has no subject (sub)",
        "no-exp": "the token has no expiry (exp)",
        "unknown-token": "the token is not active",
    }
    for token, description in expected.items():
        issuer.introspection[token] = {key: value for key, value in
                                       issuer.introspection.get(token, {}).items()
                                       if value is not None} or {"active": False}
        assert await refused(verifier, token) == description, token


async def test_introspection_authenticates_this_server_as_a_client(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    issuer.introspection["good"] = {"active": True, "sub": "u", "aud": RESOURCE,
                                    "exp": time.time() + 60}
    verifier = verifiers(issuer, introspection=True)
    assert (await verifier.verify("good")).subject == "u"  # the secret's ":" and "%" survive
    wrong = verifiers(issuer, introspection=True,
                      oauth_introspection_client_secret="not-the-secret")
    with pytest.raises(ServiceError) as caught:
        await wrong.verify("good")
    assert caught.value.code == ErrorCode.CONNECTION_ERROR
    assert "HTTP 401" in caught.value.message and "good" not in caught.value.message


async def test_positive_introspection_answers_are_cached_briefly(
        issuer_server, verifiers) -> None:
    issuer = await issuer_server(FakeIssuer())
    verifier = verifiers(issuer, introspection=True)
    issuer.introspection["long"] = {"active": True, "sub": "u", "aud": RESOURCE,
                                    "exp": time.time() + 3600}
    issuer.introspection["short"] = {"active": True, "sub": "u", "aud": RESOURCE,
                                     "exp": time.time() + 0.5}
    for _ in range(3):
        await verifier.verify("long")
        await verifier.verify("short")
    assert issuer.requests["/introspect"] == 2
    # Revoked at the server: still accepted from the cache (for at most 60 s)...
    issuer.introspection["long"] = {"active": False}
    assert (await verifier.verify("long")).subject == "u"
    # ...but never past the token's own expiry.
    await asyncio.sleep(0.6)
    issuer.introspection["short"] = {"active": False}
    assert await refused(verifier, "short") == "the token is not active"
    # Refusals are not cached: each is asked again.
    await refused(verifier, "short")
    assert issuer.requests["/introspect"] == 4


async def test_a_given_session_is_used_and_left_open(issuer_server) -> None:
    issuer = await issuer_server(FakeIssuer())
    settings: Settings = load_settings(environ={"OAUTH_ISSUERS": issuer.url,
                                                "OAUTH_RESOURCE": RESOURCE})
    async with aiohttp.ClientSession() as session:
        verifier = TokenVerifier(settings, session=session)
        assert (await verifier.verify(issuer.token())).subject == "user-1"
        await verifier.close()
        assert not session.closed
