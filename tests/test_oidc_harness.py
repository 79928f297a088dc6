"""The OpenID provider the OAuth tests run against (tests/oidc_provider.py, npm's oidc-provider):
it serves its metadata, issues JWT access tokens for the resource asked for by client
credentials and by the authorization code flow, refreshes them, and rotates its keys under the
same issuer. Without Node.js these tests are skipped."""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from https_documents import LocalCa, serve_documents
from oidc_provider import (
    REDIRECT_URI,
    RESOURCE_SCOPES,
    AuthorizationRefused,
    OidcProvider,
    RsaKey,
    jwt_parts,
    oidc_provider,
    sign_jwt,
    start_provider,
)

__all__ = ["oidc_provider"]  # the fixture, imported for pytest

RESOURCE = "http://127.0.0.1:8055/mcp"
OTHER_RESOURCE = "http://127.0.0.1:9/other"


def _uint(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def verified_by(token: str, jwks: dict[str, Any]) -> bool:
    """Whether an RS256 token's signature verifies with the published key its kid names."""
    header, _ = jwt_parts(token)
    keys = [key for key in jwks["keys"] if key["kid"] == header.get("kid")]
    if len(keys) != 1:
        return False
    public = rsa.RSAPublicNumbers(_uint(keys[0]["e"]), _uint(keys[0]["n"])).public_key()
    signing_input, _, signature = token.rpartition(".")
    try:
        public.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                      signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


async def test_metadata_and_keys_are_served(oidc_provider: OidcProvider) -> None:
    metadata = await oidc_provider.discover()
    assert metadata["issuer"] == oidc_provider.issuer
    assert oidc_provider.issuer.startswith("http://127.0.0.1:")
    for endpoint in ("authorization_endpoint", "token_endpoint", "registration_endpoint",
                     "introspection_endpoint", "jwks_uri"):
        assert metadata[endpoint].startswith(oidc_provider.issuer), endpoint
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
        metadata["grant_types_supported"])
    assert set(RESOURCE_SCOPES) | {"offline_access"} <= set(metadata["scopes_supported"])
    jwks = await oidc_provider.jwks()
    assert [key["kid"] for key in jwks["keys"]] == [oidc_provider.signing_key.kid]
    assert all("d" not in key for key in jwks["keys"]), "a private key part is published"


async def test_client_credentials_token_is_a_jwt_for_the_resource(
        oidc_provider: OidcProvider) -> None:
    client = await oidc_provider.register_machine_client(org_id="globex")
    answer = await oidc_provider.client_credentials_token(client, resource=RESOURCE,
                                                          scope="spiral:read spiral:query")
    header, claims = jwt_parts(answer["access_token"])
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": oidc_provider.signing_key.kid}
    assert claims["iss"] == oidc_provider.issuer
    assert claims["aud"] == RESOURCE
    assert claims["sub"] == claims["client_id"] == client["client_id"]
    assert claims["scope"] == "spiral:read spiral:query"
    assert claims["org_id"] == "globex"
    assert "email" not in claims
    assert claims["exp"] - claims["iat"] == answer["expires_in"] == 300
    assert verified_by(answer["access_token"], await oidc_provider.jwks())

    other = await oidc_provider.client_credentials_token(client, resource=OTHER_RESOURCE)
    assert jwt_parts(other["access_token"])[1]["aud"] == OTHER_RESOURCE


async def test_code_flow_with_pkce_gives_tokens_that_refresh(oidc_provider: OidcProvider) -> None:
    oidc_provider.sign_out()
    client = await oidc_provider.register_client()
    answer = await oidc_provider.authorization_code_tokens(
        client, resource=RESOURCE, scope="spiral:read spiral:write offline_access", login="carol")
    _, claims = jwt_parts(answer["access_token"])
    assert claims["iss"] == oidc_provider.issuer
    assert claims["aud"] == RESOURCE
    assert claims["sub"] == "carol"
    assert claims["email"] == "carol@example.com"
    assert claims["org_id"] == "globex"
    assert claims["client_id"] == client["client_id"]
    assert claims["scope"] == "spiral:read spiral:write"
    assert answer["refresh_token"]

    # A refresh names no resource: the token is for the one granted.
    renewed = await oidc_provider.refresh(client, answer["refresh_token"])
    _, renewed_claims = jwt_parts(renewed["access_token"])
    assert renewed_claims["aud"] == RESOURCE
    assert renewed_claims["sub"] == "carol"
    assert renewed_claims["jti"] != claims["jti"]


async def test_unknown_user_signs_in_without_an_org(oidc_provider: OidcProvider) -> None:
    oidc_provider.sign_out()
    client = await oidc_provider.register_client()
    answer = await oidc_provider.authorization_code_tokens(client, resource=RESOURCE,
                                                           scope="spiral:read", login="dave")
    _, claims = jwt_parts(answer["access_token"])
    assert claims["sub"] == "dave"
    assert claims["email"] == "dave@example.com"
    assert "org_id" not in claims


async def test_an_authorization_request_without_pkce_is_refused(
        oidc_provider: OidcProvider) -> None:
    client = await oidc_provider.register_client()
    url = (f"{oidc_provider.metadata['authorization_endpoint']}?response_type=code"
           f"&client_id={client['client_id']}&redirect_uri={client['redirect_uris'][0]}"
           f"&scope=spiral:read&resource={RESOURCE}&state=s")
    answer = await oidc_provider.authorize(url)
    assert answer["error"] == "invalid_request"
    assert "requires PKCE" in answer["error_description"]


async def test_key_rotation_keeps_the_issuer_and_its_clients() -> None:
    first, second = RsaKey.generate("first"), RsaKey.generate("second")
    async with start_provider(keys=[first]) as provider:
        issuer = provider.issuer
        client = await provider.register_machine_client()
        before = await provider.client_credentials_token(client, resource=RESOURCE)
        assert jwt_parts(before["access_token"])[0]["kid"] == "first"

        # The new key signs, the old one is still published.
        assert await provider.rotate_keys([second, first]) == ["second", "first"]
        assert (await provider.discover())["issuer"] == issuer
        jwks = await provider.jwks()
        assert [key["kid"] for key in jwks["keys"]] == ["second", "first"]
        after = await provider.client_credentials_token(client, resource=RESOURCE)
        assert jwt_parts(after["access_token"])[0]["kid"] == "second"
        assert verified_by(after["access_token"], jwks)
        assert verified_by(before["access_token"], jwks)

        # The old key retired: its tokens no longer verify with what is published.
        assert await provider.rotate_keys([second]) == ["second"]
        jwks = await provider.jwks()
        assert [key["kid"] for key in jwks["keys"]] == ["second"]
        assert not verified_by(before["access_token"], jwks)


async def test_a_signed_in_session_and_refresh_tokens_outlive_a_rotation() -> None:
    async with start_provider() as provider:
        client = await provider.register_client()
        answer = await provider.authorization_code_tokens(
            client, resource=RESOURCE, scope="spiral:read offline_access")
        new_key = RsaKey.generate()
        await provider.rotate_keys([new_key])
        renewed = await provider.refresh(client, answer["refresh_token"])
        assert jwt_parts(renewed["access_token"])[0]["kid"] == new_key.kid
        # Signed in before the rotation: the second authorization asks only for consent.
        again = await provider.authorization_code_tokens(client, resource=OTHER_RESOURCE,
                                                         scope="spiral:read")
        assert jwt_parts(again["access_token"])[1]["sub"] == "alice"


async def test_access_token_lifetime_is_configurable() -> None:
    async with start_provider(access_token_ttl=5) as provider:
        client = await provider.register_machine_client()
        answer = await provider.client_credentials_token(client, resource=RESOURCE)
        assert answer["expires_in"] == 5
        _, claims = jwt_parts(answer["access_token"])
        assert claims["exp"] - claims["iat"] == 5


async def test_forged_tokens_are_signed_as_asked(oidc_provider: OidcProvider) -> None:
    jwks = await oidc_provider.jwks()
    claims = {"iss": oidc_provider.issuer, "aud": RESOURCE, "sub": "mallory",
              "exp": int(time.time()) + 60}
    assert verified_by(sign_jwt(claims, key=oidc_provider.signing_key), jwks)
    assert not verified_by(sign_jwt(claims, key=RsaKey.generate(oidc_provider.signing_key.kid)),
                           jwks)
    header, _ = jwt_parts(sign_jwt(claims, alg="none"))
    assert header == {"alg": "none", "typ": "at+jwt"}
    confused = sign_jwt(claims, alg="HS256", secret=oidc_provider.signing_key.public_pem(),
                        kid=oidc_provider.signing_key.kid)
    assert jwt_parts(confused)[0]["alg"] == "HS256"
    with pytest.raises(ValueError, match="HS256 needs a secret"):
        sign_jwt(claims, alg="HS256")


async def test_the_provider_process_ends_with_its_block() -> None:
    async with start_provider() as provider:
        pid = provider.pid
        os.kill(pid, 0)  # running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_an_unknown_client_is_refused(oidc_provider: OidcProvider) -> None:
    url = (f"{oidc_provider.metadata['authorization_endpoint']}?response_type=code"
           f"&client_id=nobody&redirect_uri=http://127.0.0.1:1/callback&scope=spiral:read")
    with pytest.raises(AuthorizationRefused, match="400"):
        await oidc_provider.authorize(url)


async def test_a_client_id_metadata_document_is_a_client(tmp_path) -> None:
    ca = LocalCa.create(tmp_path)
    async with serve_documents(ca) as (origin, documents), \
            start_provider(documents_ca=ca.ca_file) as provider:
        client_id = f"{origin}/clients/tool.json"
        documents["/clients/tool.json"] = {
            "client_id": client_id, "client_name": "a tool", "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none"}
        assert provider.metadata["client_id_metadata_document_supported"] is True
        client = {"client_id": client_id, "redirect_uris": [REDIRECT_URI],
                  "token_endpoint_auth_method": "none"}
        answer = await provider.authorization_code_tokens(client, resource=RESOURCE,
                                                          scope="spiral:read")
        assert jwt_parts(answer["access_token"])[1]["client_id"] == client_id

        # A document the origin does not serve is no client.
        stranger = {**client, "client_id": f"{origin}/clients/nobody.json"}
        with pytest.raises(AuthorizationRefused, match="400"):
            await provider.authorization_code_tokens(stranger, resource=RESOURCE)


async def test_tokens_for_an_opaque_resource_are_introspected() -> None:
    async with start_provider(accounts={"alice": {"email": "alice@example.com",
                                                  "org_id": "acme"}},
                              opaque_resources=[OTHER_RESOURCE]) as provider:
        resource_server = await provider.register_resource_server()
        user = await provider.register_client()
        answer = await provider.authorization_code_tokens(user, resource=OTHER_RESOURCE,
                                                          scope="spiral:read")
        assert answer["access_token"].count(".") == 0  # opaque
        said = await provider.introspect(resource_server, answer["access_token"])
        assert said["active"] is True
        assert said["iss"] == provider.issuer
        assert said["aud"] == OTHER_RESOURCE
        assert (said["sub"], said["email"], said["org_id"]) == ("alice", "alice@example.com",
                                                                "acme")
        assert said["scope"] == "spiral:read"
        assert (await provider.introspect(resource_server, "no-such-token")) == {"active": False}
        # Tokens for any other resource stay JWTs.
        other = await provider.authorization_code_tokens(user, resource=RESOURCE,
                                                         scope="spiral:read")
        assert jwt_parts(other["access_token"])[1]["aud"] == RESOURCE
