"""Multi round-trip requests (MCP 2026-07-28): how a tool asks the client without a session.

A handler's ``ctx.ask`` is served by replay. The request carries the client's answers
(``inputResponses``, and those of earlier rounds sealed in ``requestState``); an ask finds its
answer under its key, or the call ends with an InputRequiredResult that asks every question the
handler reached without an answer, and a new ``requestState`` sealing the answers it used. The
client calls again with the answers; the handler runs again from its start and, given the same
arguments and answers, asks the same questions and now gets them answered. Nothing is kept on the
server between the rounds, so any process of an installation can serve any round.

``requestState`` is attacker-controlled input (the client carries it): it is sealed with
AES-256-GCM under a key derived from the installation's secret, and binds the tenant and API key
that started the exchange, the method and a digest of the request's salient parameters, and an
expiry. A state that fails any of these is refused with -32602, saying which.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..auth import Principal
from ..handlers.context import CLIENT_REQUESTS, InputRequired, client_can
from .jsonrpc import INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY, RpcError
from .versions import CLIENT_CAPABILITIES_META

__all__ = ["ASKING_METHODS", "RequestStateSeal", "Rounds"]

# The only requests an InputRequiredResult may answer (basic/patterns/mrtr).
ASKING_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})

_FORMAT = "v1."
_AAD = b"spiral-mcp/request-state/v1"
_NONCE_BYTES = 12
_ELICIT_ACTIONS = frozenset({"accept", "decline", "cancel"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused(reason: str, message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"requestState refused: {message}", {"reason": reason})


class RequestStateSeal:
    """Seals and opens ``requestState``: AES-256-GCM under a key derived (HKDF-SHA256) from the
    installation's secret, so every process that shares SPIRAL_SECRET_KEY opens what another
    sealed; ``secret=None``: a key of this process only (a restart or another process refuses
    its states)."""

    __slots__ = ("_aead", "ttl")

    def __init__(self, secret: bytes | None, *, ttl: float) -> None:
        material = secret if secret is not None else os.urandom(32)
        # A key of its own: the Fernet key that seals credentials is never used as it is here.
        key = HKDF(algorithm=SHA256(), length=32, salt=None,
                   info=b"spiral-mcp request state v1").derive(material)
        self._aead = AESGCM(key)
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"RequestStateSeal(ttl={self.ttl:g}, <key hidden>)"

    def seal(self, *, principal: Principal, method: str, digest: str,
             answers: Mapping[str, Any]) -> str:
        payload = orjson.dumps({
            "t": principal.tenant_id.hex, "k": principal.key_id.hex, "m": method, "d": digest,
            "e": int(time.time() + self.ttl), "a": answers,
        })
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + _b64(nonce + self._aead.encrypt(nonce, payload, _AAD))

    def open(self, token: Any, *, principal: Principal, method: str,
             digest: str) -> dict[str, Any]:
        """The answers a state carries, or -32602 naming why it is refused."""
        if not isinstance(token, str):
            raise RpcError(INVALID_PARAMS, "requestState must be the string the server sent",
                           {"reason": "malformed"})
        try:
            raw = _unb64(token.removeprefix(_FORMAT)) if token.startswith(_FORMAT) else b""
            payload = orjson.loads(self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                      _AAD))
        except (binascii.Error, ValueError, InvalidTag):
            # orjson's JSONDecodeError is a ValueError; a short token fails as InvalidTag or
            # ValueError (nonce length).
            raise _refused("tampered", "it was altered, or was not sealed by this server "
                                       "installation") from None
        if payload["t"] != principal.tenant_id.hex or payload["k"] != principal.key_id.hex:
            # Another tenant's key and another key of the same tenant alike: a state is only
            # good for the key that started the exchange.
            raise _refused("other_key", "it was issued to another API key or user")
        if payload["m"] != method or payload["d"] != digest:
            raise _refused("other_request", "it belongs to another request (another tool, "
                                            "prompt or resource, or other arguments)")
        if payload["e"] <= time.time():
            raise _refused("expired", "it has expired; call again without requestState and "
                                      "inputResponses to start over")
        return payload["a"]


def request_digest(method: str, params: Mapping[str, Any]) -> str:
    """What identifies a request across its rounds: the tool or prompt and its arguments, or the
    resource's URI."""
    if method == "resources/read":
        salient: Any = params.get("uri")
    else:
        salient = [params.get("name"), params.get("arguments")]
    return _b64(hashlib.sha256(orjson.dumps(salient, option=orjson.OPT_SORT_KEYS)).digest()[:18])


def _default_key(method: str, params: Mapping[str, Any]) -> str:
    # The same question keeps its key from one round to the next; a changed one (another list
    # of candidates) gets a new key, so an answer to the old question never answers it.
    digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).digest()
    return f"{method.split('/')[0]}-{_b64(digest[:9])}"


def _answer_problem(method: str, answer: Any) -> str | None:
    """Why ``answer`` is not a result of ``method``, or None."""
    if not isinstance(answer, dict):
        return "must be an object (the client's result for the request)"
    if method == "elicitation/create":
        if answer.get("action") not in _ELICIT_ACTIONS:
            return 'must be an elicitation result: "action" is accept, decline or cancel'
        if not isinstance(answer.get("content", {}), dict):
            return 'an elicitation result\'s "content" must be an object'
    elif method == "sampling/createMessage":
        if not isinstance(answer.get("content"), dict | list) or "role" not in answer:
            return 'must be a sampling result, with "role" and "content"'
    elif not isinstance(answer.get("roots"), list):
        return 'must be a roots/list result, with a "roots" array'
    return None


class Rounds:
    """One stateless request's side of the exchange: the answers it brought, what its handler
    asked, and the InputRequiredResult when something is still to be answered."""

    def __init__(self, seal: RequestStateSeal, *, method: str, principal: Principal,
                 params: Mapping[str, Any], capabilities: Mapping[str, Any],
                 answers: Mapping[str, Any]) -> None:
        self._seal = seal
        self._method = method
        self._principal = principal
        self._params = params
        self.capabilities = capabilities
        self._answers = answers
        self._used: dict[str, Any] = {}
        self._pending: dict[str, dict[str, Any]] = {}

    @classmethod
    def begin(cls, seal: RequestStateSeal, *, method: str, params: Mapping[str, Any],
              principal: Principal) -> Rounds:
        """The request's rounds, its requestState checked: -32602 for a state that is not this
        key's, this request's, intact and in time, or for inputResponses that are not a map."""
        meta = params.get("_meta")
        capabilities = meta.get(CLIENT_CAPABILITIES_META) if isinstance(meta, dict) else None
        responses = params.get("inputResponses", {})
        if not isinstance(responses, dict):
            raise RpcError(INVALID_PARAMS, "inputResponses must be an object of the client's "
                                           "results, by the keys of inputRequests")
        answers = dict(responses)
        rounds = cls(seal, method=method, principal=principal, params=params,
                     capabilities=capabilities if isinstance(capabilities, dict) else {},
                     answers=answers)
        if params.get("requestState") is not None:
            # Answered in earlier rounds, they stand: a later answer under the same key does not
            # change what the handler already went on with.
            answers |= seal.open(params["requestState"], principal=principal, method=method,
                                 digest=rounds._digest)
        return rounds

    @functools.cached_property
    def _digest(self) -> str:
        # Only a request that brings a state or asks a question needs it: most never do, and
        # hashing every call's arguments would be work on every stateless call.
        return request_digest(self._method, self._params)

    async def ask(self, method: str, params: dict[str, Any], /, *,
                  key: str | None = None) -> dict[str, Any]:
        """ToolContext.ask in the stateless era: the answer, or InputRequired."""
        if method not in CLIENT_REQUESTS:
            raise ValueError(f"not a request a server may put to a client: {method}")
        if not client_can(self.capabilities, method, params):
            # The server MUST NOT ask what the client did not declare (mrtr; the base protocol
            # says which error).
            capability = CLIENT_REQUESTS[method]
            needed: dict[str, Any] = {capability: {}}
            if method == "elicitation/create":
                needed = {capability: {params.get("mode", "form"): {}}}
            raise RpcError(MISSING_REQUIRED_CLIENT_CAPABILITY,
                           f"this request needs the client capability {capability!r} "
                           f"({method}), which the request's _meta does not declare",
                           {"requiredCapabilities": needed})
        key = key or _default_key(method, params)
        if key in self._answers:
            answer = self._answers[key]
            if (problem := _answer_problem(method, answer)) is not None:
                raise RpcError(INVALID_PARAMS, f"inputResponses.{key} {problem}")
            self._used[key] = answer
            return answer
        self._pending[key] = {"method": method, "params": params}
        raise InputRequired(self._pending, self.result)

    def result(self) -> dict[str, Any]:
        """The InputRequiredResult: every question still open, and the answers used so far
        sealed for the next round."""
        return {
            "resultType": "input_required",
            "inputRequests": dict(self._pending),
            "requestState": self._seal.seal(principal=self._principal, method=self._method,
                                            digest=self._digest, answers=self._used),
        }
