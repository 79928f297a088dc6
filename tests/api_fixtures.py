"""The admin API as its tests use it: a client that checks every answer it receives against the
served OpenAPI document (the operation's success schema at its status, the error envelope at any
other), so a route that returns what its document does not say fails the test that called it.

    async def test_x(api, tenant):
        resp = await api.get("/keys", tenant)        # Tenant, headers dict, or None
        assert resp.status == 200 and resp.data["keys"]

``make_api(test_client)`` wraps a client served with other settings.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["ApiAnswer", "ApiClient", "api", "make_api"]

_DOC_URI = "urn:spiral:openapi"


@dataclass
class ApiAnswer:
    status: int
    body: Any
    headers: Any
    text: str

    @property
    def data(self) -> Any:
        assert self.body["success"] is True, self.body
        return self.body["data"]

    @property
    def error(self) -> dict[str, Any]:
        assert self.body["success"] is False, self.body
        return self.body["error"]


def _escape(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


class ApiClient:
    """Calls /api/v1 and checks each answer against the document."""

    def __init__(self, client: TestClient, document: dict[str, Any]) -> None:
        self.client = client
        self.document = document
        self._registry = Registry().with_resource(
            _DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012))
        self._routes = [
            (re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path in document["paths"]]
        self.checked = 0

    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{_DOC_URI}#{pointer}"}, registry=self._registry,
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)

    def _template(self, path: str) -> str | None:
        for pattern, template in self._routes:
            if pattern.match(path):
                return template
        return None

    def check(self, method: str, path: str, answer: ApiAnswer) -> None:
        """Fail unless ``answer`` is what the document says ``method path`` answers."""
        template = self._template(path.split("?")[0])
        operation = None if template is None else \
            self.document["paths"][template].get(method.lower())
        responses = {} if operation is None else operation["responses"]
        if str(answer.status) in responses:
            pointer = f"/paths/{_escape(template)}/{method.lower()}/responses/{answer.status}"
            content = responses[str(answer.status)]["content"]
            media = answer.headers.get("Content-Type", "").split(";")[0]
            assert media in content, f"{method} {path}: {media} is not documented"
            if media != "application/json":
                return
            pointer += f"/content/{_escape(media)}/schema"
        else:
            assert answer.status >= 400, \
                f"{method} {path} answered {answer.status}, which its document does not list"
            pointer = "/components/schemas/error"
        errors = sorted(self._validator(pointer).iter_errors(answer.body), key=str)
        assert not errors, f"{method} {path} -> {answer.status} breaks its document: " \
            + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
        self.checked += 1

    async def call(self, method: str, path: str, who: Any = None, *, json: Any = None,
                   data: Any = None, headers: dict[str, str] | None = None) -> ApiAnswer:
        sent = dict(headers or {})
        if who is not None:
            sent.update(who if isinstance(who, dict) else who.headers)
        async with self.client.request(method, f"/api/v1{path}", json=json, data=data,
                                       headers=sent) as resp:
            text = await resp.text()
            body = None
            if resp.content_type == "application/json":
                body = await resp.json()
            answer = ApiAnswer(resp.status, body, resp.headers, text)
        self.check(method, path, answer)
        return answer

    async def get(self, path: str, who: Any = None, **kw: Any) -> ApiAnswer:
        return await self.call("GET", path, who, **kw)

    async def post(self, path: str, who: Any = None, **kw: Any) -> ApiAnswer:
        return await self.call("POST", path, who, **kw)

    async def patch(self, path: str, who: Any = None, **kw: Any) -> ApiAnswer:
        return await self.call("PATCH", path, who, **kw)

    async def delete(self, path: str, who: Any = None, **kw: Any) -> ApiAnswer:
        return await self.call("DELETE", path, who, **kw)


async def make_api(client: TestClient) -> ApiClient:
    """An ApiClient on ``client``, with the document the server serves."""
    async with client.get("/api/v1/openapi.json") as resp:
        assert resp.status == 200
        document = await resp.json()
    return ApiClient(client, document)


@pytest.fixture
async def api(client: TestClient) -> ApiClient:
    """The admin API of the ``client`` fixture's server, answers checked against its document."""
    return await make_api(client)


async def patiently(api: ApiClient, method: str, path: str, who: Any,
                    **kwargs: Any) -> ApiAnswer:
    """The call, again after the wait the key's rate limit asks (polling a task spends the
    key's read budget); other refusals, a share's among them, are the answer."""
    for _ in range(50):
        resp = await api.call(method, path, who, **kwargs)
        if resp.status != 429 or not resp.error["message"].startswith("rate limit for"):
            return resp
        await asyncio.sleep(resp.error["retry_after"] or 0.1)
    raise AssertionError(f"{method} {path} stayed rate limited")


async def task_ended(api: ApiClient, who: Any, task_id: str) -> dict[str, Any]:
    """The task once it has ended, polled as a client does (within the key's read budget)."""
    deadline = time.monotonic() + 30
    while True:
        task = (await patiently(api, "GET", f"/tasks/{task_id}", who)).data
        if task["status"] not in ("working", "input_required"):
            return task
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.1)
