"""A real OAuth authorization server, as far as a resource server sees one: metadata documents
(RFC 8414 and OpenID Connect Discovery), a JWKS built from keys made here with ``cryptography``,
and RFC 7662 introspection with client authentication. Tokens are signed with PyJWT.

``FakeIssuer(path="/tenant1")`` serves the issuer ``<base>/tenant1``; ``await start(issuer)``
(the ``issuer_server`` fixture) serves it over HTTP and sets ``issuer.url``.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

RESOURCE = "https://mcp.example.com/mcp"
CLIENT_ID = "spiral-rs"
# Characters Basic authentication would split or mangle if not form-encoded first.
CLIENT_SECRET = "s3cr:et+%/ü"


@dataclasses.dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str | None = None, alg: str = "RS256") -> SigningKey:
        return cls(kid or uuid.uuid4().hex[:8], alg,
                   rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or uuid.uuid4().hex[:8], "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        convert = RSAAlgorithm if self.alg[0] in "RP" else ECAlgorithm
        return {**convert.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid,
                "use": "sig"}


class FakeIssuer:
    """Serves its metadata, keys and introspection; counts every request by path."""

    def __init__(
        self, *, path: str = "", keys: list[SigningKey] | None = None, rfc8414: bool = True,
        oidc: str | None = None, metadata_issuer: str | None = None,
    ) -> None:
        self.path = path
        self.keys = keys if keys is not None else [SigningKey.rsa()]
        self.published = list(self.keys)  # what the JWKS shows
        self.extra_jwks: list[dict[str, Any]] = []
        self.rfc8414 = rfc8414
        # None, "inserted" or "appended": where an OpenID Connect document is served.
        self.oidc = oidc
        self.metadata_issuer = metadata_issuer
        self.jwks_body: bytes | None = None  # when set, served instead of the key set
        self.status: int | None = None  # when set, every request gets it
        self.introspection: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.log: list[str] = []
        self.url = ""
        self.base = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        add = app.router.add_route
        if self.rfc8414:
            add("GET", f"/.well-known/oauth-authorization-server{self.path}", self._metadata)
        if self.oidc == "inserted":
            add("GET", f"/.well-known/openid-configuration{self.path}", self._metadata)
        elif self.oidc == "appended":
            add("GET", f"{self.path}/.well-known/openid-configuration", self._metadata)
        add("GET", "/keys", self._jwks)
        add("POST", "/introspect", self._introspect)
        return app

    @property
    def jwks_fetches(self) -> int:
        return self.requests["/keys"]

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests[request.path] += 1
        self.log.append(request.path)
        if self.status is not None:
            return web.Response(status=self.status, text="down")
        return await handler(request)

    async def _metadata(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.metadata_issuer or self.url,
            "jwks_uri": f"{self.base}/keys",
            "introspection_endpoint": f"{self.base}/introspect",
            "token_endpoint": f"{self.base}/token",
        })

    async def _jwks(self, request: web.Request) -> web.Response:
        if self.jwks_body is not None:
            return web.Response(body=self.jwks_body, content_type="application/json")
        return web.json_response(
            {"keys": [key.jwk() for key in self.published] + self.extra_jwks})

    async def _introspect(self, request: web.Request) -> web.Response:
        # RFC 7662 section 2.1: the caller must authenticate; here with client_secret_basic,
        # both halves form-encoded (RFC 6749 section 2.3.1).
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        user, _, password = base64.b64decode(encoded or "Og==").decode().partition(":")
        if scheme != "Basic" or (unquote(user), unquote(password)) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        if form.get("token_type_hint") != "access_token":
            return web.json_response({"error": "invalid_request"}, status=400)
        return web.json_response(self.introspection.get(str(form.get("token")),
                                                        {"active": False}))

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.url, "sub": "user-1", "aud": RESOURCE, "exp": now + 300,
                  "iat": now, "scope": "spiral:read spiral:write", "client_id": "client-9",
                  "email": "ada@example.com"}
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, *, key: SigningKey | None = None, headers: Mapping[str, Any] | None = None,
              **claims: Any) -> str:
        """A token signed with ``key`` (default: the first), claims as :meth:`claims` makes
        them (a claim given as None is left out)."""
        key = key or self.keys[0]
        return jwt.encode(self.claims(**claims), key.private, algorithm=key.alg,
                          headers={"kid": key.kid, "typ": "at+jwt", **(headers or {})})
