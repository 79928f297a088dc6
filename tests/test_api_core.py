"""The admin API's spine: the envelope, every refusal at the door, the OpenAPI document."""

from __future__ import annotations

from api_fixtures import ApiClient
from openapi_spec_validator import validate

from spiral_mcp.api.app import api_application


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
