"""A real OpenID provider for the OAuth tests: npm's oidc-provider (tests/oidc/provider.mjs) run by
Node.js on loopback.

``start_provider()`` runs one (its own keys, token lifetime and users); the ``oidc_provider``
fixture shares one across the session. Each gives an ``OidcProvider``: its issuer, key rotation,
dynamic client registration, tokens by client credentials and by the authorization code flow
(``authorize`` follows the provider's redirects and posts its sign-in and consent forms itself, so
no browser is needed), and the signing keys, with which ``sign_jwt`` forges the tokens a
verifier must refuse. Without Node.js the tests that use it are skipped ("Node.js is needed for
the OAuth tests"; in CI they fail: .ci/run installs it). The npm packages
(tests/oidc/package-lock.json) are installed by ``npm ci`` the first time, and again when the
lock file changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import html.parser
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote_plus, urlencode, urljoin, urlsplit

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "NODE_NEEDED",
    "REDIRECT_URI",
    "RESOURCE_SCOPES",
    "AuthorizationRefused",
    "OidcProvider",
    "RsaKey",
    "jwt_parts",
    "node_command",
    "oidc_provider",
    "sign_jwt",
    "start_provider",
]

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
NODE_NEEDED = "Node.js is needed for the OAuth tests"
# The oldest Node.js that runs oidc-provider 9 (with a warning: it asks for 22; 18 lacks the
# WebCrypto global and URL.parse it uses).
NODE_MIN_MAJOR = 20
RESOURCE_SCOPES = ("spiral:read", "spiral:write", "spiral:query", "spiral:admin")
# Where an authorization code flow's redirect goes: never served, the flow stops at it.
REDIRECT_URI = "http://127.0.0.1:1/callback"
# The first start through npx may download Node.js 22 first.
_START_TIMEOUT = 120.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class RsaKey:
    """An RSA signing key with its key id: what the provider signs with, and what a test forges
    tokens with."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str | None = None) -> RsaKey:
        return cls(kid or f"k-{secrets.token_hex(6)}",
                   rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}

    def private_jwk(self) -> dict[str, str]:
        numbers = self.private.private_numbers()
        return {**self.public_jwk(), "d": _b64url_uint(numbers.d),
                "p": _b64url_uint(numbers.p), "q": _b64url_uint(numbers.q),
                "dp": _b64url_uint(numbers.dmp1), "dq": _b64url_uint(numbers.dmq1),
                "qi": _b64url_uint(numbers.iqmp)}

    def private_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


_KID_OF_KEY = object()


def sign_jwt(claims: Mapping[str, Any], *, key: RsaKey | None = None, alg: str = "RS256",
             kid: str | object | None = _KID_OF_KEY, secret: bytes | None = None,
             header: Mapping[str, Any] | None = None) -> str:
    """A compact JWS of ``claims``, signed as a test needs, including the ways a verifier must
    refuse: RS256 with ``key``; HS256 with ``secret`` (e.g. a public key's PEM, the algorithm
    confusion attack); ``alg="none"`` with an empty signature. ``kid`` defaults to the key's."""
    head: dict[str, Any] = {"alg": alg, "typ": "at+jwt"}
    if kid is _KID_OF_KEY:
        kid = key.kid if key is not None else None
    if kid is not None:
        head["kid"] = kid
    head.update(header or {})
    signing_input = f"{_b64url(orjson.dumps(head))}.{_b64url(orjson.dumps(dict(claims)))}"
    if alg == "none":
        signature = b""
    elif alg == "HS256":
        if secret is None:
            raise ValueError("HS256 needs a secret")
        signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    elif alg == "RS256":
        if key is None:
            raise ValueError("RS256 needs a key")
        signature = key.private.sign(signing_input.encode("ascii"), padding.PKCS1v15(),
                                     hashes.SHA256())
    else:
        raise ValueError(f"sign_jwt does not sign with {alg}")
    return f"{signing_input}.{_b64url(signature)}"


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWT's header and claims, unverified (for assertions on what the provider issued)."""
    head, body, _ = token.split(".")
    return (orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))),
            orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


class _FormParser(html.parser.HTMLParser):
    """The first form of an interaction page: its action and its inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
            self._in_form = True
        elif tag == "input" and self._in_form and "name" in values:
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


class AuthorizationRefused(Exception):
    """The provider answered an authorization request with an error (its page or redirect)."""


@dataclass
class OidcProvider:
    """A running provider and a user agent for it (one cookie jar: a user signed in stays signed
    in, as in a browser, until ``sign_out``)."""

    issuer: str
    config_path: Path
    config: dict[str, Any]
    http: aiohttp.ClientSession
    log: Path
    pid: int
    keys: list[RsaKey] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def signing_key(self) -> RsaKey:
        return self.keys[0]

    async def discover(self) -> dict[str, Any]:
        async with self.http.get(f"{self.issuer}/.well-known/openid-configuration") as response:
            response.raise_for_status()
            self.metadata = await response.json()
        return self.metadata

    async def jwks(self) -> dict[str, Any]:
        async with self.http.get(self.metadata["jwks_uri"]) as response:
            response.raise_for_status()
            return await response.json()

    async def rotate_keys(self, keys: list[RsaKey]) -> list[str]:
        """Publish ``keys`` (the first signs from now on) under the same issuer; the key ids now
        published. Registered clients, grants and refresh tokens stay valid."""
        self.keys = list(keys)
        return await self.reconfigure(jwks={"keys": [key.private_jwk() for key in keys]})

    async def reconfigure(self, **changes: Any) -> list[str]:
        """Change the provider's configuration (tests/oidc/provider.mjs), e.g.
        ``opaque_resources``, keeping its issuer, clients and grants; the key ids published."""
        self.config.update(changes)
        _write_config(self.config_path, self.config)
        async with self.http.post(f"{self.issuer}/_harness/reload") as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"the provider did not reload: {body}")
        return list(body["kids"])

    def sign_out(self) -> None:
        """Forget the provider's session cookies: the next authorization asks to sign in again."""
        self.http.cookie_jar.clear()

    async def register_client(self, **metadata: Any) -> dict[str, Any]:
        """Register a client (RFC 7591) and give the provider's answer (client_id, client_secret
        ...). The default is a public client of the authorization code flow with refresh tokens,
        as MCP clients register."""
        body = {"redirect_uris": [REDIRECT_URI], "response_types": ["code"],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none", "application_type": "native", **metadata}
        async with self.http.post(self.metadata["registration_endpoint"], json=body) as response:
            answer = await response.json()
            if response.status != 201:
                raise RuntimeError(f"registration refused: {answer}")
            return answer

    async def register_machine_client(self, **metadata: Any) -> dict[str, Any]:
        """A confidential client of the client credentials grant only."""
        return await self.register_client(**{
            "redirect_uris": [], "response_types": [], "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic", **metadata})

    async def register_resource_server(self) -> dict[str, Any]:
        """A confidential client of no grant: what a resource server introspects tokens as."""
        return await self.register_client(redirect_uris=[], response_types=[], grant_types=[],
                                          token_endpoint_auth_method="client_secret_basic")

    async def introspect(self, client: Mapping[str, Any], token: str) -> dict[str, Any]:
        """RFC 7662: what the provider says of ``token`` to ``client``."""
        return await self._post_as(client, self.metadata["introspection_endpoint"],
                                   {"token": token})

    async def token(self, client: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
        """A token endpoint request authenticated as ``client``; the provider's JSON answer. An
        error answer raises, with the provider's error and description."""
        return await self._post_as(client, self.metadata["token_endpoint"], form)

    async def _post_as(self, client: Mapping[str, Any], url: str,
                       form: Mapping[str, str]) -> dict[str, Any]:
        data = dict(form)
        headers = {}
        if client.get("token_endpoint_auth_method") in ("client_secret_basic", None):
            # RFC 6749 2.3.1: each part form-encoded before the Basic scheme's base64.
            pair = f"{quote_plus(client['client_id'])}:{quote_plus(client['client_secret'])}"
            headers["Authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"
        elif client["token_endpoint_auth_method"] == "client_secret_post":
            data.update(client_id=client["client_id"], client_secret=client["client_secret"])
        else:
            data["client_id"] = client["client_id"]
        async with self.http.post(url, data=data, headers=headers) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"{url} refused ({response.status}): {answer}")
            return answer

    async def client_credentials_token(self, client: Mapping[str, Any], *, resource: str,
                                       scope: str = " ".join(RESOURCE_SCOPES)) -> dict[str, Any]:
        return await self.token(client, {"grant_type": "client_credentials", "resource": resource,
                                         "scope": scope})

    async def authorize(self, url: str, *, login: str = "alice") -> dict[str, str]:
        """Act as the user agent for an authorization request: follow the provider's redirects,
        sign in as ``login`` and consent when asked, and stop at the redirect back to the
        client. Gives that redirect's query parameters (code, state, iss)."""
        for _ in range(20):
            async with self.http.get(url, allow_redirects=False) as response:
                if response.status in (302, 303):
                    url = urljoin(url, response.headers["Location"])
                    if not url.startswith(self.issuer):
                        return _callback_parameters(url)
                    continue
                page = await response.text()
                if response.status != 200:
                    raise AuthorizationRefused(f"{response.status}: {_page_text(page)}")
            url = await self._submit_interaction(url, page, login)
            if not url.startswith(self.issuer):
                return _callback_parameters(url)
        raise AuthorizationRefused("the provider redirected more than 20 times")

    async def _submit_interaction(self, url: str, page: str, login: str) -> str:
        form = _FormParser()
        form.feed(page)
        if form.action is None or "prompt" not in form.fields:
            raise AuthorizationRefused(f"no sign-in or consent form: {_page_text(page)}")
        fields = dict(form.fields)
        if fields["prompt"] == "login":
            fields.update(login=login, password="any")  # devInteractions take any password
        async with self.http.post(urljoin(url, form.action), data=fields,
                                  allow_redirects=False) as response:
            if response.status not in (302, 303):
                page = await response.text()
                raise AuthorizationRefused(f"{response.status}: {_page_text(page)}")
            return urljoin(url, response.headers["Location"])

    async def authorization_code_tokens(self, client: Mapping[str, Any], *, resource: str,
                                        scope: str = " ".join(RESOURCE_SCOPES),
                                        login: str = "alice") -> dict[str, Any]:
        """Tokens by the authorization code flow with PKCE, as ``login``, for ``resource``."""
        verifier = secrets.token_urlsafe(48)
        challenge = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        state = secrets.token_urlsafe(16)
        redirect_uri = client["redirect_uris"][0]
        query = {"response_type": "code", "client_id": client["client_id"],
                 "redirect_uri": redirect_uri, "scope": scope, "resource": resource,
                 "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}
        if "offline_access" in scope.split():
            query["prompt"] = "consent"
        url = f"{self.metadata['authorization_endpoint']}?{urlencode(query)}"
        answer = await self.authorize(url, login=login)
        if "error" in answer:
            raise AuthorizationRefused(f"{answer['error']}: {answer.get('error_description')}")
        if answer.get("state") != state:
            raise AuthorizationRefused("the state came back changed")
        return await self.token(client, {
            "grant_type": "authorization_code", "code": answer["code"],
            "redirect_uri": redirect_uri, "code_verifier": verifier, "resource": resource})

    async def refresh(self, client: Mapping[str, Any], refresh_token: str, *,
                      resource: str | None = None) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if resource is not None:
            form["resource"] = resource
        return await self.token(client, form)


def _callback_parameters(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def _page_text(page: str) -> str:
    """An error page's words, for a failure message."""
    return re.sub(r"\s+", " ", re.sub(r"<(style|script)[^>]*>.*?</\1>|<[^>]+>", " ", page,
                                      flags=re.S)).strip()[:500]


def _write_config(path: Path, config: Mapping[str, Any]) -> None:
    # Written whole then renamed: the provider never reads half a file.
    partial = path.with_suffix(".partial")
    partial.write_bytes(orjson.dumps(config))
    partial.replace(path)


def node_command() -> list[str]:
    """How to run Node.js for the provider, its packages installed; skips the test without
    Node.js. oidc-provider 9 needs Node.js 20 or newer; with an older one (Debian 12 ships 18)
    the provider runs on Node.js 22 fetched by npx from the npm registry, as the conformance
    suite does (tests/conformance_suites.py)."""
    node = shutil.which("node")
    if node is None:
        _missing(NODE_NEEDED)
    _install_packages()
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is not None and int(match.group(1)) >= NODE_MIN_MAJOR:
        return [node]
    npx = shutil.which("npx")
    if npx is None:
        _missing(f"{NODE_NEEDED}: version {NODE_MIN_MAJOR} or newer, or npx (found {version})")
    return [npx, "-y", "-p", "node@22", "node"]


def _missing(reason: str) -> NoReturn:
    """A skip with the reason; in CI (.ci/run installs Node.js) a failure, as for Redis."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs Node.js for the OAuth tests: {reason}")
    pytest.skip(reason)


def _install_packages() -> None:
    """``npm ci`` when tests/oidc/node_modules is missing or older than the lock file, under a
    file lock so that parallel test processes install once."""
    lock = OIDC_DIR / "package-lock.json"
    installed = OIDC_DIR / "node_modules" / ".package-lock.json"  # npm ci writes it last
    with open(OIDC_DIR / ".install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
            return
        npm = shutil.which("npm")
        if npm is None:
            _missing(f"{NODE_NEEDED}: npm is missing")
        done = subprocess.run(
            [npm, "ci", "--prefix", str(OIDC_DIR), "--no-audit", "--no-fund"],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"npm ci in {OIDC_DIR} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


async def _read_ready_line(process: asyncio.subprocess.Process, log: Path) -> dict[str, Any]:
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), _START_TIMEOUT)
    except TimeoutError:
        line = b""
    if not line:
        raise RuntimeError(f"the OpenID provider did not start:\n{log.read_text()[-3000:]}")
    return orjson.loads(line)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """End the provider's whole process group (no orphan node process), gently first."""
    if process.returncode is not None:
        return
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), grace)
            return
        except TimeoutError:
            continue


@contextlib.asynccontextmanager
async def start_provider(*, keys: list[RsaKey] | None = None, access_token_ttl: int = 300,
                         accounts: Mapping[str, Mapping[str, str]] | None = None,
                         port: int = 0, documents_ca: Path | None = None,
                         opaque_resources: Sequence[str] = (),
                         ) -> AsyncIterator[OidcProvider]:
    """Run an OpenID provider on 127.0.0.1 for the block.

    ``keys`` sign its tokens (the first; all are published; one fresh key by default);
    ``access_token_ttl`` is how long its access tokens live; ``accounts`` maps a sign-in name to
    that user's claims (``email``, ``org_id``; other names sign in with email name@example.com).
    With ``documents_ca`` (a CA's PEM file) it also takes clients whose client_id is an
    https://localhost URL serving their metadata (Client ID Metadata Documents, served by
    tests/https_documents.py with a certificate of that CA). Access tokens for
    ``opaque_resources`` are opaque (introspection tells what they are), for any other resource
    JWTs.
    """
    node = node_command()
    keys = list(keys) if keys is not None else [RsaKey.generate()]
    with tempfile.TemporaryDirectory(prefix="oidc-provider-") as folder:
        config_path = Path(folder) / "config.json"
        log = Path(folder) / "provider.log"
        config: dict[str, Any] = {
            "port": port, "jwks": {"keys": [key.private_jwk() for key in keys]},
            "access_token_ttl": access_token_ttl, "accounts": dict(accounts or {}),
            "cookie_keys": [secrets.token_urlsafe(32)],
            "client_id_metadata_documents": documents_ca is not None,
            "opaque_resources": list(opaque_resources)}
        _write_config(config_path, config)
        env = dict(os.environ)
        if documents_ca is not None:
            env["NODE_EXTRA_CA_CERTS"] = str(documents_ca)
        with open(log, "wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *node, str(OIDC_DIR / "provider.mjs"), str(config_path),
                stdout=asyncio.subprocess.PIPE, stderr=log_file, cwd=OIDC_DIR, env=env,
                start_new_session=True)
        try:
            ready = await _read_ready_line(process, log)
            # aiohttp keeps no cookie of an IP-address host unless told; the provider is on one.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                provider = OidcProvider(issuer=ready["issuer"], config_path=config_path,
                                        config=config, http=http, log=log,
                                        pid=process.pid, keys=keys)
                await provider.discover()
                yield provider
        finally:
            await _stop(process)


@pytest.fixture(scope="session")
async def oidc_provider() -> AsyncIterator[OidcProvider]:
    """One provider for the session (keys and users shared: a test that rotates keys or changes
    them starts its own with ``start_provider``)."""
    async with start_provider(accounts={
            "alice": {"email": "alice@example.com", "org_id": "acme"},
            "bob": {"email": "bob@example.com", "org_id": "acme"},
            "carol": {"email": "carol@example.com", "org_id": "globex"}}) as provider:
        yield provider

