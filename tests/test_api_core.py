"""The admin API's spine: the envelope, every refusal at the door, the OpenAPI document."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from api_fixtures import ApiAnswer, ApiClient, make_api
from openapi_spec_validator import validate

from spiral_mcp.api.app import api_application
from spiral_mcp.api.auth import AdminPrincipal
from spiral_mcp.api.routing import OPERATOR, PUBLIC, ApiCall, ApiRoutes, bind
from spiral_mcp.api.schemas import SchemaBook
from spiral_mcp.api.state import ADMIN_PRINCIPAL
from spiral_mcp.auth import Principal
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.server.keys import DATABASE
from tests.test_oauth_http import idps, orgs, serve, user  # noqa: F401


async def test_openapi_document_is_valid_openapi_31(api: ApiClient) -> None:
    resp = await api.get("/openapi.json")
    assert resp.status == 200
    assert resp.body["openapi"] == "3.1.0"
    validate(resp.body)


async def test_router_operations_are_the_documents(api: ApiClient) -> None:
    app = api_application()
    routed = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD"}
    documented = {(method.upper(), path) for path, ops in api.document["paths"].items()
                  for method in ops}
    assert routed == documented


async def test_keys_listed_without_secrets(api: ApiClient, tenant) -> None:
    resp = await api.get("/keys", tenant)
    assert resp.status == 200, resp.body
    assert resp.body["tenant_id"] == str(tenant.id)
    [key] = resp.data["keys"]
    assert key["key_id"] == str(tenant.key_id) and key["state"] == "live"
    assert tenant.key not in resp.text and "hash" not in resp.text


async def test_no_credential_is_401(api: ApiClient) -> None:
    resp = await api.get("/keys")
    assert resp.status == 401
    assert resp.error["code"] == "UNAUTHENTICATED"
    assert resp.error["message"] == "an API key is required: Authorization: Bearer <key>"


async def test_unknown_key_is_refused(api: ApiClient) -> None:
    resp = await api.get("/keys", {"Authorization": "Bearer spk_" + "0" * 107})
    assert resp.status == 403 and resp.error["code"] == "INVALID_API_KEY"


async def test_key_without_admin_scope_is_403(api: ApiClient, make_tenant) -> None:
    reader = await make_tenant(scopes=("read",))
    resp = await api.get("/keys", reader)
    assert resp.status == 403
    assert resp.error == {"code": "PERMISSION_DENIED", "message": "this key lacks the admin scope",
                          "details": [], "retry_after": None}


async def test_unknown_route_and_wrong_method(api: ApiClient, tenant) -> None:
    resp = await api.get("/nothing-here", tenant)
    assert resp.status == 404 and resp.error["code"] == "NOT_FOUND"
    resp = await api.call("PUT", "/keys", tenant)
    assert resp.status == 405 and resp.error["code"] == "VALIDATION_ERROR"
    assert "PUT is not allowed on /api/v1/keys" in resp.error["message"]


async def test_an_oauth_token_is_a_tenant_admin_with_the_admin_scope_only(
        serve, orgs, idps) -> None:  # noqa: F811
    api = await make_api(await serve())
    acme = orgs["acme"]
    admin = user(idps[0], acme, org="acme", scope="spiral:read spiral:admin")
    resp = await api.get("/keys", admin)
    assert resp.status == 200 and resp.body["tenant_id"] == str(acme.id)
    created = await api.post("/keys", admin, json={"name": "made by ada", "scopes": ["read"]})
    assert created.status == 201 and created.data["key"]["user"] is None
    # Not bound by the short-lived token that made it (README says so).
    assert created.data["key"]["expires_at"] is None and created.data["note"] is None
    reader = user(idps[0], acme, org="acme", scope="spiral:read spiral:write")
    resp = await api.get("/keys", reader)
    assert resp.status == 403 and resp.error["message"] == "this access token lacks the admin scope"
    resp = await api.get("/keys", {"Authorization": "Bearer not-a-token"})
    assert resp.status == 401 and resp.error["code"] == "INVALID_TOKEN"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_operator_credentials_are_refused_while_operator_access_is_off(
        api: ApiClient) -> None:
    resp = await api.get("/keys", {"Authorization": "Bearer spo_" + "a" * 40})
    assert resp.status == 401 and resp.error == {
        "code": "UNAUTHENTICATED", "details": [], "retry_after": None,
        "message": "operator access is off on this server (OPERATOR_API)"}


async def test_mcp_routes_still_answer_as_before(client) -> None:
    """The API's refusals are its own; MCP's door keeps its body and challenge."""
    async with client.post("/execute", json={}) as resp:
        assert resp.status == 401 and "WWW-Authenticate" in resp.headers
        assert (await resp.json()) == {"error": {
            "code": "UNAUTHENTICATED",
            "message": "an API key is required: Authorization: Bearer <key>"}}


async def test_a_tenant_admin_on_an_operator_route_is_refused_saying_nothing_more() -> None:
    routes = ApiRoutes()

    @routes.operation("GET", "/tenants", summary="List tenants", role=OPERATOR)
    async def list_tenants(call: ApiCall) -> None:
        raise AssertionError("never reached")

    handler = bind(next(iter(routes)), SchemaBook.load())
    request = make_mocked_request("GET", "/api/v1/tenants")
    request[ADMIN_PRINCIPAL] = AdminPrincipal.tenant_admin(Principal(
        tenant_id=uuid.uuid4(), key_id=uuid.uuid4(), key_name="k", scopes=frozenset({"admin"})))
    with pytest.raises(ServiceError) as refused:
        await handler(request)
    assert refused.value.code == ErrorCode.PERMISSION_DENIED
    assert refused.value.message == "this route is for operators"


async def test_the_fixture_fails_an_answer_its_document_does_not_allow(api: ApiClient) -> None:
    wrong = ApiAnswer(200, {"success": True, "data": {"keys": [{"key_id": "k"}]},
                            "tenant_id": None, "timing_ms": 1.0},
                      {"Content-Type": "application/json"}, "")
    with pytest.raises(AssertionError, match="breaks its document"):
        api.check("GET", "/keys", wrong)
    undocumented = ApiAnswer(204, None, {}, "")
    with pytest.raises(AssertionError, match="which its document does not list"):
        api.check("GET", "/keys", undocumented)


async def test_query_strings_are_coerced_to_their_schema_then_checked() -> None:
    book = SchemaBook({"page_query": {
        "type": "object", "additionalProperties": False,
        "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 500},
                       "full": {"type": "boolean"}, "tool": {"type": "string"}}}})
    routes = ApiRoutes()
    seen = []

    @routes.operation("GET", "/things", summary="Things", query="page_query", role=PUBLIC)
    async def things(call: ApiCall) -> None:
        seen.append(call.query)

    handler = bind(next(iter(routes)), book)
    app = web.Application()
    app[DATABASE] = SimpleNamespace(queries=None)  # the handler above touches no database

    async def call(query: str) -> None:
        await handler(make_mocked_request("GET", f"/api/v1/things?{query}", app=app))

    await call("limit=20&full=true&tool=jira_search")
    assert seen == [{"limit": 20, "full": True, "tool": "jira_search"}]
    for query, message in [
        ("limit=abc", "invalid query for GET /api/v1/things: /limit: 'abc' is not of type "
                      "'integer'"),
        ("limit=0", "invalid query for GET /api/v1/things: /limit: 0 is less than the minimum "
                    "of 1"),
        ("full=yes", "invalid query for GET /api/v1/things: /full: 'yes' is not of type "
                     "'boolean'"),
        ("colour=red", "invalid query for GET /api/v1/things: /: Additional properties are not "
                       "allowed ('colour' was unexpected)"),
        ("tool=a&tool=b", "query parameter 'tool' is given 2 times; give it once"),
    ]:
        with pytest.raises(ServiceError) as refused:
            await call(query)
        assert refused.value.code == ErrorCode.VALIDATION_ERROR
        assert refused.value.message == message, query
