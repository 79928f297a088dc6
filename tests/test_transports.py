"""Every HTTP rule of the MCP transports, as raw HTTP against the app on a real socket.

Streamable HTTP at /mcp (handshake eras and the stateless 2026-07-28 era), legacy HTTP+SSE at
/sse + /messages, /execute and /tools; plus the audit row and metrics every tool call leaves.
The app is served as ``web.run_app`` serves it (no handler cancellation on disconnect).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory, make_settings
from serving import app_clients

from spiral_mcp import admin
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.handlers import Tool, builtin_tools
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.protocol import exchange, http, sessions
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import SESSIONS

ACCEPT_BOTH = "application/json, text/event-stream"
SESSION = "Mcp-Session-Id"
VERSION = "MCP-Protocol-Version"
MODERN = "2026-07-28"
PV_META = "io.modelcontextprotocol/protocolVersion"
CAPS_META = "io.modelcontextprotocol/clientCapabilities"

_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

Serve = Callable[..., Awaitable[TestClient]]


# -- serving -----------------------------------------------------------------------------------

class Slow:
    """A test-only tool that sleeps until cancelled, with events to watch it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def handler(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return {}

    def tool(self) -> Tool:
        return Tool(name="test_slow", title="Slow", description="Sleeps (test only)",
                    handler=self.handler, scope="read", call_class="read",
                    input_schema=_OBJECT, output_schema={"type": "object"})


@pytest.fixture
async def serve(database_urls: DatabaseUrls) -> AsyncIterator[Serve]:
    """``await serve(tools=[...], **env)``: the app on a real loopback socket, served like
    production, and a client for it."""
    async with app_clients() as start_client:
        async def start(tools: list[Tool] | None = None, **env: str) -> TestClient:
            return await start_client(create_app(
                make_settings(database_urls, **env), database_url=database_urls.runtime,
                tools=[*builtin_tools(), *(tools or [])]))

        yield start


@pytest.fixture
async def client(serve: Serve) -> TestClient:
    return await serve()


# -- helpers -----------------------------------------------------------------------------------

def headers(tenant: Tenant, *, sid: str | None = None, version: str | None = None,
            accept: str = ACCEPT_BOTH, **extra: str) -> dict[str, str]:
    result = {**tenant.headers, "Accept": accept, "Content-Type": "application/json", **extra}
    if sid is not None:
        result[SESSION] = sid
    if version is not None:
        result[VERSION] = version
    return result


def request(method: str, rid: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


async def post(client: TestClient, tenant: Tenant, body: Any, *, sid: str | None = None,
               version: str | None = None, path: str = "/mcp", **extra: str) -> ClientResponse:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(path, data=data,
                             headers=headers(tenant, sid=sid, version=version, **extra))


async def open_session(client: TestClient, tenant: Tenant, version: str = "2025-11-25", *,
                       capabilities: dict[str, Any] | None = None) -> str:
    response = await post(client, tenant, request(
        "initialize", 0, protocolVersion=version, capabilities=capabilities or {},
        clientInfo={"name": "test", "version": "1"}))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["result"]["protocolVersion"] == version
    sid = response.headers[SESSION]
    initialized = await post(client, tenant, {"jsonrpc": "2.0", "method":
                                              "notifications/initialized"}, sid=sid,
                             version=version)
    assert initialized.status == 202
    return sid


async def error_of(response: ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["jsonrpc"] == "2.0"
    return body["error"]


def modern_request(method: str, rid: Any = 1, *, meta_version: Any = MODERN,
                   **params: Any) -> dict[str, Any]:
    meta = {PV_META: meta_version, CAPS_META: {}}
    return request(method, rid, _meta=meta, **params)


async def post_modern(client: TestClient, tenant: Tenant, body: dict[str, Any], *,
                      version: str = MODERN, **extra: str) -> ClientResponse:
    extra.setdefault("Mcp-Method", body["method"])
    if body["method"] == "tools/call":
        extra.setdefault("Mcp-Name", body["params"]["name"])
    return await post(client, tenant, body, version=version, **extra)


async def read_event(response: ClientResponse, timeout: float = 5.0) -> dict[str, str]:
    """The next SSE event (comments such as pings skipped) as {field: value}."""
    event: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        while True:
            line = (await response.content.readline()).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\r\n")
            if not line:
                if event:
                    return event
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = event[name] + "\n" + value if name in event else value


def note(text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": text}}


# -- POST /mcp: media types, bodies, ids -------------------------------------------------------

async def test_accept_must_list_both_types(client: TestClient, tenant: Tenant) -> None:
    for accept in ("application/json", "text/event-stream", "text/html"):
        response = await post(client, tenant, request("ping"), accept=accept)
        assert (await error_of(response, 406))["code"] == -32600


async def test_content_type_must_be_json(client: TestClient, tenant: Tenant) -> None:
    response = await client.post("/mcp", data=orjson.dumps(request("ping")), headers={
        **tenant.headers, "Accept": ACCEPT_BOTH, "Content-Type": "text/plain"})
    assert (await error_of(response, 415))["code"] == -32600


@pytest.mark.parametrize("body", [
    b"\xff\xfe{}",
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"',
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}',
    b"[" * 5000 + b"]" * 5000,
    b"",
], ids=["not-utf8", "not-json", "nan", "too-deep", "empty"])
async def test_unparsable_bodies_are_parse_errors(client: TestClient, tenant: Tenant,
                                                  body: bytes) -> None:
    sid = await open_session(client, tenant)
    response = await post(client, tenant, body, sid=sid)
    error = await error_of(response, 400)
    assert error["code"] == -32700
    assert (await response.json())["id"] is None
    # The server is unharmed: the session still answers.
    ok = await post(client, tenant, request("ping", 7), sid=sid)
    assert (await ok.json()) == {"jsonrpc": "2.0", "id": 7, "result": {}}


async def test_body_too_large(serve: Serve, tenant: Tenant) -> None:
    client = await serve(MAX_BODY_BYTES="2048")
    sid = await open_session(client, tenant)
    big = request("ping", 1, padding="x" * 4096)
    response = await post(client, tenant, big, sid=sid)
    assert response.status == 413
    ok = await post(client, tenant, request("ping", 2), sid=sid)
    assert ok.status == 200


@pytest.mark.parametrize("bad_id", [None, 1.5, True, {"a": 1}, [1]],
                         ids=["null", "float", "bool", "object", "array"])
async def test_bad_ids_are_invalid_requests(client: TestClient, tenant: Tenant,
                                            bad_id: Any) -> None:
    sid = await open_session(client, tenant)
    response = await post(client, tenant, request("ping", bad_id), sid=sid)
    error = await error_of(response, 400)
    assert error["code"] == -32600
    assert (await response.json())["id"] is None


async def test_notifications_get_202_and_no_body(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    for method in ("notifications/initialized", "notifications/cancelled",
                   "notifications/whatever"):
        response = await post(client, tenant, {"jsonrpc": "2.0", "method": method,
                                               "params": {"requestId": 99}}, sid=sid)
        assert response.status == 202
        assert await response.read() == b""
    # A client's response to nothing is acknowledged the same way.
    response = await post(client, tenant, {"jsonrpc": "2.0", "id": 5, "result": {}}, sid=sid)
    assert response.status == 202
    assert await response.read() == b""


# -- sessions ----------------------------------------------------------------------------------

async def test_session_id_is_random_visible_ascii(client: TestClient, tenant: Tenant) -> None:
    ids = {await open_session(client, tenant) for _ in range(3)}
    assert len(ids) == 3
    for sid in ids:
        assert len(sid) >= 32 and all(0x21 <= ord(c) <= 0x7E for c in sid)


async def test_missing_session_id(client: TestClient, tenant: Tenant) -> None:
    await open_session(client, tenant)
    response = await post(client, tenant, request("tools/list"))
    await error_of(response, 400)


async def test_unknown_session_id(client: TestClient, tenant: Tenant) -> None:
    response = await post(client, tenant, request("tools/list"), sid=uuid.uuid4().hex)
    await error_of(response, 404)


async def test_session_of_another_tenant_is_unknown(client: TestClient, tenant: Tenant,
                                                    make_tenant: TenantFactory) -> None:
    sid = await open_session(client, tenant)
    intruder = await make_tenant(demo=True, name="intruder")
    for method in ("POST", "GET", "DELETE"):
        response = await client.request(
            method, "/mcp", data=orjson.dumps(request("tools/list")) if method == "POST" else None,
            headers=headers(intruder, sid=sid))
        await error_of(response, 404)
    # The owner's session is untouched.
    ok = await post(client, tenant, request("ping"), sid=sid)
    assert ok.status == 200


async def test_delete_ends_the_session(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    response = await client.delete("/mcp", headers=headers(tenant, sid=sid))
    assert response.status == 204
    await error_of(await post(client, tenant, request("ping"), sid=sid), 404)
    await error_of(await client.delete("/mcp", headers=headers(tenant, sid=sid)), 404)


async def test_unsupported_protocol_version_header(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    response = await post(client, tenant, request("ping"), sid=sid, version="1999-01-01")
    assert response.status == 400
    get = await client.get("/mcp", headers=headers(tenant, sid=sid, version="1999-01-01",
                                                   accept="text/event-stream"))
    assert get.status == 400
    # Absent header: taken as 2025-03-26, which is supported.
    ok = await post(client, tenant, request("ping"), sid=sid)
    assert ok.status == 200


async def test_second_initialize_on_a_session_is_refused(client: TestClient,
                                                         tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    # A new initialize always opens a new session; the old one is unaffected.
    response = await post(client, tenant, request("initialize", 1, protocolVersion="2025-06-18"),
                          sid=sid)
    assert response.status == 200
    assert response.headers[SESSION] != sid


async def test_requests_before_initialized_notification(client: TestClient,
                                                        tenant: Tenant) -> None:
    response = await post(client, tenant, request("initialize", 0,
                                                  protocolVersion="2025-11-25"))
    sid = response.headers[SESSION]
    ping = await post(client, tenant, request("ping", 1), sid=sid)
    assert (await ping.json())["result"] == {}
    listed = await post(client, tenant, request("tools/list", 2), sid=sid)
    assert "tools" in (await listed.json())["result"]


async def test_unsupported_initialize_version_gets_latest(client: TestClient,
                                                          tenant: Tenant) -> None:
    response = await post(client, tenant, request("initialize", 0, protocolVersion="1999-01-01"))
    body = await response.json()
    assert body["result"]["protocolVersion"] == "2025-11-25"


# -- batches -----------------------------------------------------------------------------------

async def test_batches_only_on_2025_03_26(client: TestClient, tenant: Tenant) -> None:
    batch = [request("ping", 1), {"jsonrpc": "2.0", "method": "notifications/whatever"},
             request("tools/list", "two"), {"jsonrpc": "2.0", "id": None, "method": "ping"}]
    old = await open_session(client, tenant, "2025-03-26")
    response = await post(client, tenant, batch, sid=old, version="2025-03-26")
    assert response.status == 200
    answers = await response.json()
    assert isinstance(answers, list) and len(answers) == 3
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["result"] == {}
    assert "tools" in by_id["two"]["result"]
    assert by_id[None]["error"]["code"] == -32600

    empty = await post(client, tenant, [], sid=old, version="2025-03-26")
    assert (await error_of(empty, 400))["code"] == -32600

    for version in ("2025-06-18", "2025-11-25"):
        sid = await open_session(client, tenant, version)
        response = await post(client, tenant, batch, sid=sid, version=version)
        assert (await error_of(response, 400))["code"] == -32600


async def test_initialize_in_a_batch_is_refused(client: TestClient, tenant: Tenant) -> None:
    response = await post(client, tenant, [request("initialize", 1, protocolVersion="2025-03-26")])
    assert (await error_of(response, 400))["code"] == -32600
    assert SESSION not in response.headers


# -- the GET stream ----------------------------------------------------------------------------

async def test_get_stream_needs_event_stream(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    response = await client.get("/mcp", headers=headers(tenant, sid=sid,
                                                        accept="application/json"))
    assert response.status == 406


async def test_get_stream_one_per_session_and_resumption(client: TestClient,
                                                         tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    session = await client.app[SESSIONS].get(sid, tenant.key_id, tenant_id=tenant.id,
                                             transport="streamable")
    assert session is not None
    stream_headers = headers(tenant, sid=sid, accept="text/event-stream")

    first = await client.get("/mcp", headers=stream_headers)
    assert first.status == 200
    assert first.headers["Content-Type"].startswith("text/event-stream")
    second = await client.get("/mcp", headers=stream_headers)
    assert second.status == 409

    session.post(note("one"))
    session.post(note("two"))
    one = await read_event(first)
    two = await read_event(first)
    assert one["event"] == "message" and orjson.loads(one["data"]) == note("one")
    assert orjson.loads(two["data"]) == note("two")
    assert int(two["id"]) > int(one["id"])
    first.close()

    # The server notices the client left; the session takes a new stream (no 409 forever).
    deadline = time.monotonic() + 5
    while True:
        again = await client.get("/mcp", headers={**stream_headers, "Last-Event-ID": one["id"]})
        if again.status == 200 or time.monotonic() > deadline:
            break
        again.close()
        await asyncio.sleep(0.1)
    assert again.status == 200
    replayed = await read_event(again)
    assert replayed["id"] == two["id"] and orjson.loads(replayed["data"]) == note("two")
    session.post(note("three"))
    three = await read_event(again)
    assert int(three["id"]) > int(two["id"]) and orjson.loads(three["data"]) == note("three")
    again.close()


async def test_a_call_ended_by_delete_is_answered_with_an_error(serve: Serve,
                                                                  tenant: Tenant) -> None:
    client, slow, sid, running = await _slow_call(serve, tenant)
    assert (await client.delete("/mcp", headers=headers(tenant, sid=sid))).status == 204
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    ended = await error_of(await asyncio.wait_for(running, 5), 200)
    assert ended == {"code": -32603, "message": "the session ended before the call finished"}


async def test_delete_ends_an_open_stream(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    stream = await client.get("/mcp", headers=headers(tenant, sid=sid, accept="text/event-stream"))
    assert stream.status == 200
    assert (await client.delete("/mcp", headers=headers(tenant, sid=sid))).status == 204
    async with asyncio.timeout(5):
        assert await stream.content.read() in (b"", b": ping\r\n\r\n")


async def _stalled(client: TestClient, head: str, body: bytes = b""
                   ) -> asyncio.StreamWriter:
    """A connection that sends a request, then reads nothing past its answer's head: the
    server's sends on it stall once the buffers between them are full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(head.encode() + body)
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return writer


def _errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_stalled_get_stream_is_cut_off_cleanly(
        client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(http, "SSE_SEND_SECONDS", 0.3)
    sid = await open_session(client, tenant)
    writer = await _stalled(client, (
        f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tenant.key}\r\n"
        f"Accept: text/event-stream\r\n{SESSION}: {sid}\r\n\r\n"))
    session = await client.app[SESSIONS].get(sid, tenant.key_id, tenant_id=tenant.id,
                                             transport="streamable")
    assert session is not None and session.stream_open
    for _ in range(8):  # more than the socket buffers between server and client hold
        session.post(note("x" * (1 << 20)))
    async with asyncio.timeout(10):
        while session.stream_open:
            await asyncio.sleep(0.1)
    assert _errors_logged(caplog) == []
    writer.close()


class Chatty:
    """A test-only tool that sends big progress messages, noting what its sends raised."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []
        self.done = asyncio.Event()

    async def handler(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        try:
            for _ in range(8):
                await ctx.progress(1, None, "x" * (1 << 20))
        except Exception as exc:
            self.raised.append(exc)
        finally:
            self.done.set()
        return {}

    def tool(self) -> Tool:
        return Tool(name="test_chatty", title="Chatty", description="Talks a lot (test only)",
                    handler=self.handler, scope="read", call_class="read",
                    input_schema=_OBJECT, output_schema={"type": "object"})


async def test_a_stalled_sse_answer_never_reaches_the_tool(
        serve: Serve, tenant: Tenant, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # A stalled client is the transport's business: the tool's progress sends just stop
    # arriving, rather than raising a TimeoutError (an OSError: "database unreachable").
    monkeypatch.setattr(http, "SSE_SEND_SECONDS", 0.3)
    chatty = Chatty()
    client = await serve(tools=[chatty.tool()])
    sid = await open_session(client, tenant)
    body = orjson.dumps(request("tools/call", 1, name="test_chatty", arguments={},
                                _meta={"progressToken": "p"}))
    writer = await _stalled(client, (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tenant.key}\r\n"
        f"Accept: {ACCEPT_BOTH}\r\nContent-Type: application/json\r\n{SESSION}: {sid}\r\n"
        f"{VERSION}: 2025-11-25\r\nContent-Length: {len(body)}\r\n\r\n"), body)
    await asyncio.wait_for(chatty.done.wait(), 10)
    assert chatty.raised == []
    session = await client.app[SESSIONS].get(sid, tenant.key_id, tenant_id=tenant.id,
                                             transport="streamable")
    async with asyncio.timeout(5):
        while session is not None and session.calls_running:
            await asyncio.sleep(0.1)
    assert _errors_logged(caplog) == []
    writer.close()


# -- caps and expiry ---------------------------------------------------------------------------

async def _streaming(client: TestClient, tenant: Tenant) -> tuple[str, ClientResponse]:
    """A session with its GET stream open: it cannot give way to a new one."""
    sid = await open_session(client, tenant)
    stream = await client.get("/mcp", headers=headers(tenant, sid=sid, accept="text/event-stream"))
    assert stream.status == 200
    return sid, stream


async def test_sessions_per_key_are_capped(serve: Serve, tenant: Tenant,
                                           make_tenant: TenantFactory) -> None:
    client = await serve(SESSION_MAX_PER_KEY="2")
    first, first_stream = await _streaming(client, tenant)
    await _streaming(client, tenant)
    third = await post(client, tenant, request("initialize", 0, protocolVersion="2025-11-25"))
    assert third.status == 429
    # Another key is not held back by this one's sessions.
    other = await make_tenant(name="other")
    await open_session(client, other)
    # Ending one makes room again.
    first_stream.close()
    assert (await client.delete("/mcp", headers=headers(tenant, sid=first))).status == 204
    await open_session(client, tenant)


async def test_a_full_key_gives_up_its_least_recently_used_idle_session(
        serve: Serve, tenant: Tenant) -> None:
    client = await serve(SESSION_MAX_PER_KEY="3")
    streaming, _ = await _streaming(client, tenant)  # least recent, but its stream is open
    oldest = await open_session(client, tenant)
    newest = await open_session(client, tenant)
    assert (await post(client, tenant, request("ping"), sid=oldest)).status == 200  # used again
    await open_session(client, tenant)
    await error_of(await post(client, tenant, request("ping"), sid=newest), 404)
    for kept in (streaming, oldest):
        assert (await post(client, tenant, request("ping"), sid=kept)).status == 200


async def test_one_tenant_cannot_fill_the_server(serve: Serve, tenant: Tenant,
                                                 make_tenant: TenantFactory,
                                                 admin_conn: asyncpg.Connection,
                                                 queries: Queries) -> None:
    client = await serve(SESSION_MAX="4", SESSION_MAX_PER_TENANT="2")
    greedy = [tenant]
    for _ in range(2):
        async with admin_conn.transaction():
            key_id, secret = await admin.create_api_key(
                admin_conn, queries, tenant_id=tenant.id, name="another key", scopes=["read"],
                user=None)
        greedy.append(Tenant(tenant.id, secret, key_id))
    first = await open_session(client, greedy[0])
    await open_session(client, greedy[1])
    # At the tenant's cap, another key's idle sessions are not ended for a newcomer.
    refused = await post(client, greedy[2], request("initialize", 0,
                                                     protocolVersion="2025-11-25"))
    assert (await error_of(refused, 429))["message"].startswith("this tenant")
    # A key holding an idle session of its own gives it up for its new one.
    await open_session(client, greedy[0])
    await error_of(await post(client, greedy[0], request("ping"), sid=first), 404)
    assert client.app[SESSIONS].count("streamable") == 2
    # Every other tenant still gets in.
    await open_session(client, await make_tenant(name="modest"))


async def test_a_session_never_initialized_expires_after_a_minute(
        serve: Serve, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "UNINITIALIZED_TIMEOUT", 0.5)
    client = await serve()
    opened = await post(client, tenant, request(
        "initialize", 0, protocolVersion="2025-11-25", capabilities={},
        clientInfo={"name": "test", "version": "1"}))
    abandoned = opened.headers[SESSION]
    used = await open_session(client, tenant)
    await asyncio.sleep(0.7)
    await error_of(await post(client, tenant, request("ping"), sid=abandoned), 404)
    assert (await post(client, tenant, request("ping"), sid=used)).status == 200


async def test_idle_sessions_expire(serve: Serve, tenant: Tenant) -> None:
    client = await serve(SESSION_IDLE_TIMEOUT="1")
    sid = await open_session(client, tenant)
    await asyncio.sleep(0.6)
    assert (await post(client, tenant, request("ping"), sid=sid)).status == 200
    await asyncio.sleep(0.6)  # activity keeps it alive
    assert (await post(client, tenant, request("ping"), sid=sid)).status == 200
    await asyncio.sleep(1.3)
    await error_of(await post(client, tenant, request("ping"), sid=sid), 404)
    assert client.app[SESSIONS].count("streamable") == 0


async def _slow_call(serve: Serve, tenant: Tenant, **env: str
                     ) -> tuple[TestClient, Slow, str, asyncio.Future[ClientResponse]]:
    """A session (its client and id) with a test_slow call running on it."""
    slow = Slow()
    client = await serve(tools=[slow.tool()], **env)
    sid = await open_session(client, tenant)
    running = asyncio.ensure_future(post(client, tenant, request(
        "tools/call", 1, name="test_slow", arguments={}), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    return client, slow, sid, running


async def test_a_session_with_a_call_running_does_not_expire(serve: Serve,
                                                              tenant: Tenant) -> None:
    # The call may be waiting for its client (an elicitation a person answers): a request on
    # the session meanwhile must not end it and cancel the call.
    client, slow, sid, running = await _slow_call(serve, tenant, SESSION_IDLE_TIMEOUT="1")
    await asyncio.sleep(1.3)
    assert (await post(client, tenant, request("ping", 2), sid=sid)).status == 200
    assert not slow.cancelled.is_set() and not running.done()
    running.cancel()


async def test_concurrent_calls_per_session_are_capped(serve: Serve, tenant: Tenant) -> None:
    client, slow, sid, first = await _slow_call(serve, tenant, SESSION_MAX_CONCURRENT_CALLS="1")

    refused = await post(client, tenant, request(
        "tools/call", 2, name="jira_get_issue", arguments={"issue_key": "WEB-1"}), sid=sid)
    body = await refused.json()
    assert body["id"] == 2 and "too many calls" in body["error"]["message"]
    # Other sessions are not affected.
    other = await open_session(client, tenant)
    ok = await post(client, tenant, request(
        "tools/call", 2, name="jira_get_issue", arguments={"issue_key": "WEB-1"}), sid=other)
    assert (await ok.json())["result"]["isError"] is False

    # notifications/cancelled stops the slow call, and the slot frees up. Its POST is still
    # answered (a request never gets an empty 202); the client that cancelled ignores it.
    cancel = await post(client, tenant, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                         "params": {"requestId": 1}}, sid=sid)
    assert cancel.status == 202
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    cancelled = await error_of(await asyncio.wait_for(first, 5), 200)
    assert cancelled["code"] == -32603 and "cancelled" in cancelled["message"]
    ok = await post(client, tenant, request(
        "tools/call", 3, name="jira_get_issue", arguments={"issue_key": "WEB-1"}), sid=sid)
    assert (await ok.json())["result"]["isError"] is False


async def test_cancel_names_only_this_sessions_call(serve: Serve, tenant: Tenant) -> None:
    slow = Slow()
    client = await serve(tools=[slow.tool()])
    sid = await open_session(client, tenant)
    other = await open_session(client, tenant)
    call = asyncio.ensure_future(post(client, tenant, request(
        "tools/call", 1, name="test_slow", arguments={}), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    # Same request id, another session: nothing happens to the call.
    await post(client, tenant, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": 1}}, sid=other)
    await asyncio.sleep(0.2)
    assert not slow.cancelled.is_set()
    await post(client, tenant, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": 1}}, sid=sid)
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    await asyncio.wait_for(call, 5)


async def test_disconnect_is_not_a_cancel_in_handshake_eras(serve: Serve, tenant: Tenant) -> None:
    slow = Slow()
    client = await serve(tools=[slow.tool()])
    sid = await open_session(client, tenant)
    call = asyncio.ensure_future(post(client, tenant, request(
        "tools/call", 1, name="test_slow", arguments={}), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    call.cancel()  # the client drops the connection
    await asyncio.sleep(0.5)
    assert not slow.cancelled.is_set()
    session = await client.app[SESSIONS].get(sid, tenant.key_id, tenant_id=tenant.id,
                                             transport="streamable")
    assert session is not None and 1 in session.inflight
    await post(client, tenant, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": 1}}, sid=sid)
    await asyncio.wait_for(slow.cancelled.wait(), 5)


async def test_same_id_from_two_clients_never_crosses(client: TestClient,
                                                      make_tenant: TenantFactory) -> None:
    a = await make_tenant(demo=True, name="a")
    b = await make_tenant(demo=True, name="b")
    sid_a = await open_session(client, a)
    sid_b = await open_session(client, b)

    async def ask(tenant: Tenant, sid: str, issue: str) -> tuple[Tenant, str, dict[str, Any]]:
        response = await post(client, tenant, request(
            "tools/call", 0, name="jira_get_issue", arguments={"issue_key": issue}), sid=sid)
        return tenant, issue, await response.json()

    async def session_of(tenant: Tenant, sid: str, project: str) -> list:
        # Within one session an id is reused only once its call has ended (MCP forbids two live
        # requests with one id); across the two sessions, the calls run at the same time.
        return [await ask(tenant, sid, f"{project}-{i % 5 + 1}") for i in range(15)]

    answers = await asyncio.gather(session_of(a, sid_a, "WEB"), session_of(b, sid_b, "API"))
    for tenant, issue, answer in [*answers[0], *answers[1]]:
        assert answer["id"] == 0
        envelope = answer["result"]["structuredContent"]
        assert envelope["tenant_id"] == str(tenant.id)
        assert envelope["data"]["key"] == issue


# -- methods -----------------------------------------------------------------------------------

async def test_unknown_tool_and_unknown_method(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    response = await post(client, tenant, request("tools/call", 1, name="nope", arguments={}),
                          sid=sid)
    assert (await response.json())["error"]["code"] == -32602
    response = await post(client, tenant, request("tools/call", 2, arguments={}), sid=sid)
    assert (await response.json())["error"]["code"] == -32602
    response = await post(client, tenant, request("no/such", 3), sid=sid)
    assert (await response.json())["error"]["code"] == -32601


async def test_tools_list_pages_and_bad_cursors(serve: Serve, tenant: Tenant) -> None:
    async def nothing(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        return {}

    extra = [Tool(name=f"test_pad_{i:03d}", title="Pad", description="Padding (test only)",
                  handler=nothing, scope="read", call_class="read", input_schema=_OBJECT,
                  output_schema={"type": "object"}) for i in range(70)]
    client = await serve(tools=extra)
    sid = await open_session(client, tenant)
    names: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"cursor": cursor} if cursor is not None else {}
        body = await (await post(client, tenant, request("tools/list", pages, **params),
                                 sid=sid)).json()
        page = body["result"]
        names += [t["name"] for t in page["tools"]]
        pages += 1
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    assert pages >= 2
    everything = await (await client.get("/tools", headers=tenant.headers)).json()
    assert len(everything["tools"]) > 70
    assert names == [t["name"] for t in everything["tools"]]
    assert len(set(names)) == len(names)
    assert {"jira_get_issue", "test_pad_000", "test_pad_069"} <= set(names)

    for bad in ("garbage!!", base64.urlsafe_b64encode(b"other:1").decode(),
                base64.urlsafe_b64encode(b"tools:9999").decode(), 12):
        body = await (await post(client, tenant, request("tools/list", 1, cursor=bad),
                                 sid=sid)).json()
        assert body["error"]["code"] == -32602, bad


async def test_logging_set_level(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    ok = await post(client, tenant, request("logging/setLevel", 1, level="warning"), sid=sid)
    assert (await ok.json())["result"] == {}
    for bad in ("loud", None, 3):
        body = await (await post(client, tenant, request("logging/setLevel", 2, level=bad),
                                 sid=sid)).json()
        assert body["error"]["code"] == -32602


# -- the stateless era (2026-07-28) ------------------------------------------------------------

async def test_stateless_discover_and_call(client: TestClient, tenant: Tenant) -> None:
    response = await post_modern(client, tenant, modern_request("server/discover"))
    assert response.status == 200
    assert SESSION not in response.headers
    result = (await response.json())["result"]
    assert MODERN in result["supportedVersions"]
    assert result["resultType"] == "complete"
    assert "tools" in result["capabilities"]
    # The same for every caller: a shared cache may keep it.
    assert result["ttlMs"] > 0 and result["cacheScope"] == "public"
    assert "serverInfo" not in result
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "spiral-mcp"

    call = modern_request("tools/call", 2, name="jira_get_issue",
                          arguments={"issue_key": "WEB-2"})
    result = (await (await post_modern(client, tenant, call)).json())["result"]
    assert result["resultType"] == "complete"
    assert result["structuredContent"]["data"]["key"] == "WEB-2"

    # No handshake in this era.
    init = modern_request("initialize", 3, protocolVersion=MODERN)
    assert (await error_of(await post_modern(client, tenant, init), 404))["code"] == -32601


async def test_stateless_missing_meta(client: TestClient, tenant: Tenant) -> None:
    for meta in (None, {PV_META: MODERN}, {CAPS_META: {}}):
        body = request("tools/list", 1) if meta is None else request("tools/list", 1, _meta=meta)
        response = await post_modern(client, tenant, body)
        assert (await error_of(response, 400))["code"] == -32602


@pytest.mark.parametrize("override", [
    {VERSION: "2026-07-29"},
    {"Mcp-Method": "tools/list"},
    {"Mcp-Name": "something_else"},
], ids=["version", "method", "name"])
async def test_stateless_header_mismatch(client: TestClient, tenant: Tenant,
                                         override: dict[str, str]) -> None:
    body = modern_request("tools/call", 1, name="jira_get_issue", arguments={"issue_key": "WEB-1"})
    extra = {k: v for k, v in override.items() if k != VERSION}
    response = await post_modern(client, tenant, body, version=override.get(VERSION, MODERN),
                                 **extra)
    error = await error_of(response, 400)
    assert error["code"] == -32020
    assert (await response.json())["id"] == 1


async def test_stateless_unsupported_version(client: TestClient, tenant: Tenant) -> None:
    body = modern_request("tools/list", 1, meta_version="2099-01-01")
    response = await post_modern(client, tenant, body, version="2099-01-01")
    error = await error_of(response, 400)
    assert error["code"] == -32022
    assert error["data"]["requested"] == "2099-01-01"
    assert MODERN in error["data"]["supported"]


async def test_stateless_unknown_method(client: TestClient, tenant: Tenant) -> None:
    response = await post_modern(client, tenant, modern_request("no/such", 1))
    assert (await error_of(response, 404))["code"] == -32601


async def test_stateless_get_and_delete_are_405(client: TestClient, tenant: Tenant) -> None:
    for method in ("GET", "DELETE"):
        response = await client.request(method, "/mcp", headers=headers(
            tenant, version=MODERN, accept="text/event-stream"))
        assert response.status == 405


async def test_stateless_notification_is_202(client: TestClient, tenant: Tenant) -> None:
    response = await post(client, tenant, {"jsonrpc": "2.0", "method": "notifications/whatever"},
                          version=MODERN)
    assert response.status == 202
    assert await response.read() == b""


async def test_stateless_disconnect_cancels(serve: Serve, tenant: Tenant) -> None:
    slow = Slow()
    client = await serve(tools=[slow.tool()])
    body = modern_request("tools/call", 1, name="test_slow", arguments={})
    call = asyncio.ensure_future(post_modern(client, tenant, body))
    await asyncio.wait_for(slow.started.wait(), 5)
    call.cancel()
    await asyncio.wait_for(slow.cancelled.wait(), 5)


# -- legacy HTTP+SSE ---------------------------------------------------------------------------

async def _legacy_stream(client: TestClient, tenant: Tenant) -> tuple[ClientResponse, str]:
    stream = await client.get("/sse", headers={**tenant.headers, "Accept": "text/event-stream"})
    assert stream.status == 200
    endpoint = await read_event(stream)
    assert endpoint["event"] == "endpoint"
    assert endpoint["data"].startswith("/messages?session_id=")
    return stream, endpoint["data"]


async def test_legacy_sse_round_trip(client: TestClient, tenant: Tenant) -> None:
    stream, endpoint = await _legacy_stream(client, tenant)
    response = await client.post(endpoint, data=orjson.dumps(request(
        "initialize", 1, protocolVersion="2024-11-05", capabilities={},
        clientInfo={"name": "t", "version": "1"})), headers={**tenant.headers,
                                                              "Content-Type": "application/json"})
    assert response.status == 202
    assert await response.text() == "Accepted"
    event = await read_event(stream)
    assert event["event"] == "message"
    answer = orjson.loads(event["data"])
    assert answer["id"] == 1 and answer["result"]["protocolVersion"] == "2024-11-05"

    await client.post(endpoint, data=orjson.dumps(
        {"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=tenant.headers)
    await client.post(endpoint, data=orjson.dumps(request(
        "tools/call", 2, name="jira_get_issue", arguments={"issue_key": "OPS-1"})),
        headers=tenant.headers)
    answer = orjson.loads((await read_event(stream))["data"])
    assert answer["id"] == 2
    assert answer["result"]["structuredContent"]["data"]["key"] == "OPS-1"
    assert client.app[SESSIONS].count("sse") == 1
    stream.close()
    # The session ends with its stream.
    deadline = time.monotonic() + 5
    while client.app[SESSIONS].count("sse") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert client.app[SESSIONS].count("sse") == 0
    gone = await client.post(endpoint, data=orjson.dumps(request("ping", 3)),
                             headers=tenant.headers)
    assert gone.status == 404


async def test_legacy_messages_errors(client: TestClient, tenant: Tenant,
                                      make_tenant: TenantFactory) -> None:
    stream, endpoint = await _legacy_stream(client, tenant)
    body = orjson.dumps(request("ping", 1))
    assert (await client.post("/messages", data=body, headers=tenant.headers)).status == 400
    assert (await client.post("/messages?session_id=xyz", data=body,
                              headers=tenant.headers)).status == 400
    assert (await client.post(f"/messages?session_id={uuid.uuid4().hex}", data=body,
                              headers=tenant.headers)).status == 404
    intruder = await make_tenant(name="intruder")
    assert (await client.post(endpoint, data=body, headers=intruder.headers)).status == 404
    assert (await client.post(endpoint, data=b"{nope", headers=tenant.headers)).status == 400
    # Nothing of the above reached the owner's stream; its own ping does.
    assert (await client.post(endpoint, data=body, headers=tenant.headers)).status == 202
    assert orjson.loads((await read_event(stream))["data"]) == {
        "jsonrpc": "2.0", "id": 1, "result": {}}
    stream.close()


# -- /execute and /tools -----------------------------------------------------------------------

async def test_execute(client: TestClient, tenant: Tenant) -> None:
    single = await post(client, tenant, request(
        "tools/call", 1, name="jira_get_issue", arguments={"issue_key": "WEB-1"}), path="/execute")
    assert single.status == 200
    assert (await single.json())["result"]["structuredContent"]["data"]["key"] == "WEB-1"

    batch = await post(client, tenant, [request("ping", 1), request("tools/list", 2),
                                        {"jsonrpc": "2.0", "method": "notifications/x"}],
                       path="/execute")
    answers = await batch.json()
    assert sorted(a["id"] for a in answers) == [1, 2]

    only_notes = await post(client, tenant, [{"jsonrpc": "2.0", "method": "notifications/x"}],
                            path="/execute")
    assert only_notes.status == 202 and await only_notes.read() == b""

    bad = await post(client, tenant, b"{oops", path="/execute")
    assert (await error_of(bad, 400))["code"] == -32700


async def test_tools_follow_the_keys_scopes(client: TestClient,
                                            make_tenant: TenantFactory) -> None:
    reader = await make_tenant(scopes=("read",), demo=True)
    querier = await make_tenant(scopes=("query",), demo=True)
    listed = await (await client.get("/tools", headers=reader.headers)).json()
    assert "jira_get_issue" in {t["name"] for t in listed["tools"]}
    listed = await (await client.get("/tools", headers=querier.headers)).json()
    assert not [t for t in listed["tools"] if t["name"].startswith("jira_")]
    call = await post(client, querier, request(
        "tools/call", 1, name="jira_get_issue", arguments={"issue_key": "WEB-1"}), path="/execute")
    # Listed or not, a tool the key's scopes do not allow is named as such, with the scope.
    result = (await call.json())["result"]
    assert result["isError"] is True
    assert result["structuredContent"]["error"] == {
        "code": "PERMISSION_DENIED",
        "message": "jira_get_issue needs the API-key scope 'read', which this key does not have "
                   "(its scopes: query); use a key with 'read'",
        "details": [{"scope": "read", "key_scopes": ["query"]}], "retry_after": None}
    unknown = await post(client, querier, request(
        "tools/call", 2, name="jira_get_isue", arguments={}), path="/execute")
    assert (await unknown.json())["error"] == {"code": -32602,
                                               "message": "unknown tool: jira_get_isue"}
    sid = await open_session(client, querier)
    body = await (await post(client, querier, request("tools/list", 1), sid=sid)).json()
    assert "jira_get_issue" not in {t["name"] for t in body["result"]["tools"]}


async def test_foreign_origin_is_refused(client: TestClient, tenant: Tenant) -> None:
    response = await post(client, tenant, request("initialize", 0, protocolVersion="2025-11-25"),
                          Origin="https://evil.example.com")
    assert response.status == 403
    assert SESSION not in response.headers
    local = await post(client, tenant, request("initialize", 0, protocolVersion="2025-11-25"),
                       Origin="http://localhost:3000")
    assert local.status == 200


async def test_browser_clients_of_allowed_origins_pass_cors(serve: Serve, tenant: Tenant) -> None:
    # The MCP Inspector in direct mode (its page on localhost:6274), or any ALLOWED_ORIGINS page.
    client = await serve(ALLOWED_ORIGINS="https://app.example.com")
    for origin in ("http://localhost:6274", "https://app.example.com"):
        preflight = await client.options("/mcp", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status == 204  # no key: browsers send none with a preflight
        assert preflight.headers["Access-Control-Allow-Origin"] == origin
        assert {"GET", "POST", "DELETE"} <= {
            m.strip() for m in preflight.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"authorization", "content-type", "mcp-session-id", "mcp-protocol-version",
                "last-event-id"} <= {h.strip() for h in
                                     preflight.headers["Access-Control-Allow-Headers"].split(",")}
        assert int(preflight.headers["Access-Control-Max-Age"]) > 0

        opened = await post(client, tenant, request(
            "initialize", 0, protocolVersion="2025-11-25", capabilities={},
            clientInfo={"name": "page", "version": "1"}), Origin=origin)
        assert opened.status == 200
        assert opened.headers["Access-Control-Allow-Origin"] == origin
        assert "Mcp-Session-Id" in opened.headers["Access-Control-Expose-Headers"]
        stream = await client.get("/mcp", headers=headers(
            tenant, sid=opened.headers[SESSION], accept="text/event-stream", Origin=origin))
        assert stream.headers["Access-Control-Allow-Origin"] == origin  # a stream's head too
        stream.close()
        refused = await client.post("/mcp", data=b"{}", headers={"Origin": origin})
        assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == origin
        assert "WWW-Authenticate" in refused.headers["Access-Control-Expose-Headers"]

    foreign = await client.options("/mcp", headers={"Origin": "https://evil.example.com",
                                                    "Access-Control-Request-Method": "POST"})
    assert foreign.status == 403 and "Access-Control-Allow-Origin" not in foreign.headers


async def _raw(client: TestClient, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send bytes no HTTP client library would (a header that is not UTF-8); the status and the
    JSON body of the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + b"Connection: close\r\n\r\n" + body)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), orjson.loads(rest.partition(b"\r\n\r\n")[2])


async def test_a_protocol_version_header_that_is_not_utf8_is_a_400(client: TestClient,
                                                                    tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    common = (f"Host: 127.0.0.1\r\nAuthorization: Bearer {tenant.key}\r\n"
              f"Accept: {ACCEPT_BOTH}\r\n{SESSION}: {sid}\r\n").encode()
    bad = f"{VERSION}: 2025-".encode() + b"\xff\r\n"
    body = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    status, answer = await _raw(client, b"POST /mcp HTTP/1.1\r\n" + common + bad + (
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n").encode(), body)
    assert status == 400 and answer["error"]["code"] == -32022
    assert answer["error"]["data"]["requested"] == "2025-\\udcff"  # escaped, never raw
    for method in (b"GET", b"DELETE"):
        status, answer = await _raw(client, method + b" /mcp HTTP/1.1\r\n" + common + bad)
        assert status == 400 and "unsupported" in answer["error"]["message"]


# -- audit and metrics -------------------------------------------------------------------------

async def _audit_rows(admin_conn: asyncpg.Connection, tenant: Tenant) -> list[asyncpg.Record]:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        return await admin_conn.fetch(
            "SELECT key_id, tool, outcome, error_code, arguments, duration_ms FROM audit_log "
            "ORDER BY id")


async def test_every_tool_call_is_audited(client: TestClient, tenant: Tenant,
                                          admin_conn: asyncpg.Connection) -> None:
    sid = await open_session(client, tenant)
    await post(client, tenant, request("tools/call", 1, name="jira_get_issue",
                                       arguments={"issue_key": "WEB-1"}), sid=sid)
    await post(client, tenant, request("tools/call", 2, name="jira_get_issue",
                                       arguments={"issue_key": "bad"}), path="/execute")
    await post_modern(client, tenant, modern_request(
        "tools/call", 3, name="jira_get_issue", arguments={"issue_key": "WEB-404040"}))
    deadline = time.monotonic() + 5
    while len(rows := await _audit_rows(admin_conn, tenant)) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert [(r["key_id"], r["tool"], r["outcome"], r["error_code"]) for r in rows] == [
        (tenant.key_id, "jira_get_issue", "ok", None),
        (tenant.key_id, "jira_get_issue", "error", "VALIDATION_ERROR"),
        (tenant.key_id, "jira_get_issue", "error", "NOT_FOUND"),
    ]
    assert orjson.loads(rows[0]["arguments"]) == {"issue_key": "WEB-1"}
    assert all(r["duration_ms"] is not None for r in rows)


async def test_metrics(client: TestClient, tenant: Tenant) -> None:
    sid = await open_session(client, tenant)
    await post(client, tenant, request("tools/call", 1, name="jira_get_issue",
                                       arguments={"issue_key": "WEB-1"}), sid=sid)
    await post(client, tenant, request("tools/call", 2, name="jira_get_issue",
                                       arguments={"issue_key": "bad"}), sid=sid)
    text = await (await client.get("/metrics")).text()
    assert 'mcp_tool_calls_total{status="ok",tool="jira_get_issue"} 1.0' in text
    assert 'mcp_tool_calls_total{status="error",tool="jira_get_issue"} 1.0' in text
    assert 'mcp_tool_duration_seconds_count{tool="jira_get_issue"} 2.0' in text
    assert 'mcp_sessions_active{transport="streamable"} 1.0' in text
    assert 'mcp_requests_total{method="tools/call",transport="streamable"} 2.0' in text


# -- content blocks beside the envelope ---------------------------------------------------------

_IMAGE = {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}


async def _drawing(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.attach(_IMAGE)
    if args.get("fail"):
        raise ServiceError(ErrorCode.NOT_FOUND, "nothing to draw")
    return {"text": "drawn"}


async def test_blocks_a_tool_attaches_come_before_the_envelope(serve: Serve,
                                                               tenant: Tenant) -> None:
    tool = Tool(name="test_drawing", title="Drawing", description="Attaches an image (test only)",
                handler=_drawing, scope="read", call_class="read",
                input_schema={"type": "object", "properties": {"fail": {"type": "boolean"}}},
                output_schema={"type": "object"})
    client = await serve(tools=[tool])
    response = await post(client, tenant, request("tools/call", name="test_drawing",
                                                  arguments={}), path="/execute")
    result = (await response.json())["result"]
    assert result["content"][0] == _IMAGE and len(result["content"]) == 2
    # The envelope is still the last block's JSON and the structured content, unchanged.
    assert orjson.loads(result["content"][-1]["text"]) == result["structuredContent"]
    assert result["structuredContent"]["data"] == {"text": "drawn"}
    assert result["isError"] is False
    # A failed call carries only its error envelope.
    response = await post(client, tenant, request("tools/call", name="test_drawing",
                                                  arguments={"fail": True}), path="/execute")
    result = (await response.json())["result"]
    assert result["isError"] is True
    assert [block["type"] for block in result["content"]] == ["text"]
    assert result["structuredContent"]["error"]["code"] == "NOT_FOUND"


def test_only_mcp_content_blocks_can_be_attached() -> None:
    ctx = ToolContext(principal=None, database=None, tool="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="video"):
        ctx.attach({"type": "video", "data": ""})
    assert ctx.attachments is None


# -- requests to the client (sampling, elicitation) ---------------------------------------------

async def _sample(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"answer": await ctx.ask("sampling/createMessage", {"messages": [], "maxTokens": 5})}


async def test_a_request_to_the_client_goes_on_the_call_s_stream_and_its_answer_comes_back(
        serve: Serve, tenant: Tenant, make_tenant: TenantFactory, monkeypatch) -> None:
    tool = Tool(name="test_sample", title="Sample", description="Asks the client (test only)",
                handler=_sample, scope="read", call_class="read", input_schema=_OBJECT,
                output_schema={"type": "object"})
    client = await serve(tools=[tool])
    version = "2025-11-25"

    # A client that did not declare sampling is not asked, and its answer stays plain JSON.
    plain = await open_session(client, tenant)
    response = await post(client, tenant, request("tools/call", 1, name="test_sample",
                                                  arguments={}), sid=plain, version=version)
    error = (await response.json())["result"]["structuredContent"]["error"]
    assert error["code"] == "UPSTREAM_ERROR" and "does not offer sampling" in error["message"]

    # One that did gets its tool calls answered as a stream, which carries what they ask.
    sid = await open_session(client, tenant, capabilities={"sampling": {}})
    session = await client.app[SESSIONS].get(sid, tenant.key_id, tenant_id=tenant.id,
                                             transport="streamable")

    async def call(rid: int) -> ClientResponse:
        response = await post(client, tenant, request("tools/call", rid, name="test_sample",
                                                      arguments={}), sid=sid, version=version)
        assert response.status == 200 and response.content_type == "text/event-stream"
        return response

    async def event(response: ClientResponse) -> dict[str, Any]:
        return orjson.loads((await read_event(response))["data"])

    async def answer(who: Tenant, body: dict[str, Any]) -> int:
        return (await post(client, who, {"jsonrpc": "2.0", **body}, sid=sid,
                           version=version)).status

    response = await call(2)
    asked = await event(response)
    assert asked["method"] == "sampling/createMessage" and isinstance(asked["id"], str)
    # An id never sent, and the session presented by another key, settle nothing.
    assert await answer(tenant, {"id": "spiral-999", "result": {"model": "wrong"}}) == 202
    assert await answer(await make_tenant(), {"id": asked["id"],
                                              "result": {"model": "wrong"}}) == 404
    assert await answer(tenant, {"id": asked["id"], "result": {"model": "m"}}) == 202
    result = await event(response)
    assert result["id"] == 2
    assert result["result"]["structuredContent"]["data"] == {"answer": {"model": "m"}}

    response = await call(3)
    asked = await event(response)
    assert await answer(tenant, {"id": asked["id"], "error": {
        "code": -1, "message": "User rejected sampling request"}}) == 202
    error = (await event(response))["result"]["structuredContent"]["error"]
    assert error["code"] == "UPSTREAM_ERROR" and "User rejected" in error["message"]

    monkeypatch.setattr(exchange, "CLIENT_ANSWER_SECONDS", 0.2)
    response = await call(4)
    asked = await event(response)
    # The client is told the request no longer stands, then the call's answer follows.
    assert await event(response) == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                      "params": {"requestId": asked["id"]}}
    error = (await event(response))["result"]["structuredContent"]["error"]
    assert error["code"] == "UPSTREAM_ERROR" and "did not answer" in error["message"]
    assert not session.asked

    # Ending the session ends a call waiting for an answer at once, not after the timeout: its
    # stream closes after an error saying so.
    monkeypatch.setattr(exchange, "CLIENT_ANSWER_SECONDS", 60)
    response = await call(5)
    await event(response)
    deleted = await client.delete("/mcp", headers=headers(tenant, sid=sid, version=version))
    assert deleted.status == 204
    assert (await event(response))["method"] == "notifications/cancelled"
    ended = await event(response)
    assert ended["id"] == 5 and "session ended" in ended["error"]["message"]
    with pytest.raises(EOFError):
        await event(response)
    assert not session.asked and not session.inflight
