"""Sources reach public addresses, and private networks only as SOURCE_PRIVATE_NETWORKS lists
them: refused when a source is added (a literal, or a name resolving only there) and again at
each connection (a name resolving there later: DNS rebinding), in the same words, never showing
what answers there. Every test here runs as with nothing listed (``public_only``) unless it says
otherwise."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from api_fixtures import ApiClient, make_api
from test_api_instances import SECRET_KEY

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.server.app import create_app
from spiral_mcp.sources import manage
from spiral_mcp.sources import networks as source_networks
from spiral_mcp.sources.base import HttpClient, SourceError
from spiral_mcp.sources.networks import GuardedResolver, SourceNetworks
from tests.conftest import make_settings
from tests.serving import app_clients

pytestmark = pytest.mark.usefixtures("public_only")

REFUSED = "outside the networks the operator lets sources reach (SOURCE_PRIVATE_NETWORKS)"
SECRET_PAGE = "redis_version:7.2 internal secret page"
LOOPBACK = SourceNetworks((ipaddress.ip_network("127.0.0.0/8"),))


def _networks(*cidrs: str) -> SourceNetworks:
    return SourceNetworks(tuple(ipaddress.ip_network(cidr) for cidr in cidrs))


# --- the rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1",
    "100.64.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1",  # noqa: S104 (an address, no bind) "198.18.0.1", "::1", "::",
    "fd00::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1",
    "64:ff9b::a00:1", "2002:7f00:1::1", "2002:c0a8:101::1",
])
def test_private_addresses_and_their_spellings_are_out_of_reach(address: str) -> None:
    assert not SourceNetworks().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111",
                                     "::ffff:93.184.216.34"])
def test_public_addresses_are_in_reach(address: str) -> None:
    assert SourceNetworks().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize(("listed", "address"), [
    ("10.0.0.0/8", "10.20.30.40"), ("10.0.0.0/8", "::ffff:10.20.30.40"),
    ("127.0.0.0/8", "127.0.0.1"), ("::1/128", "::1"), ("fd00::/8", "fd12::1"),
    ("192.168.7.0/24", "192.168.7.9")])
def test_a_listed_network_is_in_reach(listed: str, address: str) -> None:
    assert _networks(listed).allows(ipaddress.ip_address(address))
    assert not _networks("172.16.0.0/12").allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "10.0.0.1/8", "jira.internal", "10.0.0.0/8;"])
def test_a_bad_network_is_one_line_naming_the_setting(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SOURCE_PRIVATE_NETWORKS": f"192.168.0.0/16, {raw}"})
    message = str(info.value)
    assert message.startswith("SOURCE_PRIVATE_NETWORKS: ") and "CIDR" in message
    assert "\n" not in message


def test_the_setting_is_read_as_networks() -> None:
    settings = load_settings({"SOURCE_PRIVATE_NETWORKS": "10.0.0.0/8, fd00::/8,192.168.1.5"})
    assert [str(n) for n in settings.source_private_networks] == [
        "10.0.0.0/8", "fd00::/8", "192.168.1.5/32"]
    assert load_settings({}).source_private_networks == ()


# --- a resolver stub: names resolving where a test says -----------------------------------------
class StubResolver(AbstractResolver):
    """Names resolve to what ``DNS`` holds; the rest as no name does (offline)."""

    answers: dict[str, list[str]] = {}

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host not in self.answers:
            raise OSError(f"no such name {host}")
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for address in self.answers[host]]

    async def close(self) -> None:
        pass


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """``dns["jira.example.test"] = ["127.0.0.1"]``: what that name resolves to, for the
    server's checks and connections alike."""
    answers: dict[str, list[str]] = {}
    monkeypatch.setattr(StubResolver, "answers", answers)
    monkeypatch.setattr(source_networks, "DefaultResolver", StubResolver)
    return answers


# --- adding a source --------------------------------------------------------------------------
@pytest.mark.parametrize("base_url", [
    "http://127.0.0.1:6379", "http://127.8.9.10", "http://localhost:5432", "http://[::1]:8080",
    "https://10.0.0.1", "https://172.16.5.4", "https://192.168.1.1", "https://100.64.0.1",
    "https://[fd00::1]", "https://[fc00::1]", "https://[::ffff:127.0.0.1]",
    "https://[::ffff:a00:1]", "https://[64:ff9b::a00:1]",
    # Legacy IPv4 spellings urlsplit takes as names, and the system resolver as 127.0.0.1.
    "https://2130706433", "https://0x7f000001", "https://0177.0.0.1", "https://127.1",
])
async def test_a_private_address_is_refused_when_a_source_is_added(base_url: str) -> None:
    with pytest.raises(manage.SourceAdminError) as info:
        await manage.check_base_url(base_url)
    message = str(info.value)
    assert message.startswith("--base-url: ") and REFUSED in message and "\n" not in message


@pytest.mark.parametrize(("name", "addresses"), [
    ("jira.example.test", ["127.0.0.1"]), ("metadata.google.internal", ["169.254.169.254"]),
    ("intranet.example.test", ["10.1.2.3", "fd00::5"]),
])
async def test_a_name_resolving_only_to_private_addresses_is_refused(
        dns: dict[str, list[str]], name: str, addresses: list[str]) -> None:
    dns[name] = addresses
    with pytest.raises(manage.SourceAdminError) as info:
        await manage.check_base_url(f"https://{name}/jira")
    assert str(info.value) == (f"--base-url: {name} resolves only to private addresses, "
                               f"{REFUSED}")


async def test_names_resolving_publicly_or_not_yet_are_added(dns: dict[str, list[str]]) -> None:
    """A name with a public address is added (its private ones are never connected to); one
    that does not resolve yet too: its connections are checked."""
    dns["mixed.example.test"] = ["10.0.0.1", "93.184.216.34"]
    assert await manage.check_base_url("https://mixed.example.test") \
        == "https://mixed.example.test"
    assert await manage.check_base_url("https://nowhere.example.test") \
        == "https://nowhere.example.test"


@pytest.mark.parametrize(("base_url", "listed"), [
    ("https://10.20.30.40/jira", "10.0.0.0/8"), ("https://[fd00::7]", "fd00::/8"),
    ("http://127.0.0.1:8080", "127.0.0.0/8"), ("http://localhost", "127.0.0.0/8"),
    ("https://intranet.example.test", "192.168.0.0/16")])
async def test_a_listed_network_is_added(dns: dict[str, list[str]], base_url: str,
                                         listed: str) -> None:
    dns["intranet.example.test"] = ["192.168.4.4"]
    assert await manage.check_base_url(base_url, _networks(listed)) == base_url


async def test_plain_http_stays_for_loopback_only() -> None:
    with pytest.raises(manage.SourceAdminError, match="must use https"):
        await manage.check_base_url("http://10.0.0.1", _networks("10.0.0.0/8"))


# --- connecting ----------------------------------------------------------------------------------
class Echo:
    """What answers at a private address: a page the tenant must never read."""

    def __init__(self) -> None:
        self.requests = 0

    def app(self) -> web.Application:
        async def any_path(request: web.Request) -> web.Response:
            self.requests += 1
            return web.Response(status=400, text=SECRET_PAGE)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", any_path)
        return app


@pytest.fixture
async def echo(serve_fake) -> Echo:
    return await serve_fake(Echo())


def _port(echo: Echo) -> int:
    return int(echo.base_url.rsplit(":", 1)[1])


async def _fetch(base_url: str, networks: SourceNetworks | None = None) -> Any:
    client = HttpClient(base_url, retries=0, networks=networks)
    try:
        return await client.fetch("GET", "/rest/api/2/myself")
    finally:
        await client.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_a_connection_to_a_private_address_is_refused_unread(echo: Echo,
                                                                   host: str) -> None:
    with pytest.raises(SourceError) as info:
        await _fetch(f"http://{host}:{_port(echo)}")
    assert info.value.kind == "private_address"
    assert REFUSED in str(info.value) and host.strip("[]") in str(info.value)
    assert SECRET_PAGE not in str(info.value) and echo.requests == 0


async def test_a_name_resolving_to_loopback_later_is_refused(
        echo: Echo, dns: dict[str, list[str]]) -> None:
    """DNS rebinding: a public-looking name, public when the source was added, resolving to
    127.0.0.1 when it is asked; the same client with loopback listed gets the answer."""
    dns["jira.example.test"] = ["93.184.216.34"]
    base_url = f"http://jira.example.test:{_port(echo)}"
    dns["jira.example.test"] = ["127.0.0.1"]
    with pytest.raises(SourceError) as info:
        await _fetch(base_url)
    assert str(info.value) == f"jira.example.test resolves only to private addresses, {REFUSED}"
    assert echo.requests == 0
    with pytest.raises(SourceError) as info:
        await _fetch(base_url, LOOPBACK)
    assert info.value.status == 400 and echo.requests == 1  # the stub's address was used


async def test_the_resolver_keeps_only_allowed_addresses(dns: dict[str, list[str]]) -> None:
    dns["mixed.example.test"] = ["10.0.0.1", "93.184.216.34", "::1", "2606:4700::1111"]
    resolver = GuardedResolver(SourceNetworks())
    found = await resolver.resolve("mixed.example.test", 443)
    assert [entry["host"] for entry in found] == ["93.184.216.34", "2606:4700::1111"]


async def test_a_redirect_to_a_forbidden_address_is_not_followed(serve_fake) -> None:
    """An allowed source (127.0.0.1 listed) redirecting to one that is not (127.0.0.2): no
    request reaches the second; the client says to use the final URL."""
    forbidden = Echo()
    runner = web.AppRunner(forbidden.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"http://127.0.0.2:{port}{request.path}")

        app = web.Application()
        app.router.add_get("/{tail:.*}", redirect)
        allowed = await serve_fake(Echo(), app=app)
        with pytest.raises(SourceError) as info:
            await _fetch(allowed.base_url, _networks("127.0.0.1/32"))
        assert info.value.kind == "bad_response" and "redirected (302)" in str(info.value)
        with pytest.raises(SourceError) as info:
            await _fetch(f"http://127.0.0.2:{port}", _networks("127.0.0.1/32"))
        assert info.value.kind == "private_address"
        assert forbidden.requests == 0
    finally:
        await runner.cleanup()


# --- through the API ------------------------------------------------------------------------------
@pytest.fixture
async def api_with(database_urls) -> AsyncIterator[Any]:
    """``await api_with(**env)``: the admin API of a server with these settings."""
    async with app_clients() as start:
        async def serve(**env: str) -> ApiClient:
            settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY,
                                     SYNC_INTERVAL="0", **env)
            return await make_api(await start(create_app(
                settings, database_url=database_urls.runtime,
                explorer_url=database_urls.explorer)))
        yield serve


def _source(base_url: str) -> dict[str, Any]:
    return {"kind": "jira", "name": f"net {uuid.uuid4().hex[:6]}", "base_url": base_url,
            "email": "bot@example.com", "token": "t", "projects": {"ABC": "ABC"}}


async def test_the_api_refuses_a_private_address_and_adds_a_listed_one(
        api_with, make_tenant, echo: Echo) -> None:
    tenant = await make_tenant()
    api = await api_with()
    resp = await api.post("/instances", tenant, json=_source(echo.base_url))
    assert resp.status == 400 and REFUSED in resp.error["message"], resp.body
    api = await api_with(SOURCE_PRIVATE_NETWORKS="127.0.0.0/8")
    resp = await api.post("/instances", tenant, json=_source(echo.base_url))
    assert resp.status == 201, resp.body
    tested = await api.post(f"/instances/{resp.data['instance_id']}/test", tenant)
    assert tested.status == 502 and echo.requests >= 1  # reached: listed at connect time too


async def test_a_source_rebound_to_loopback_is_refused_by_its_test(
        api_with, make_tenant, echo: Echo, dns: dict[str, list[str]]) -> None:
    """Added while its name was public, asked once it resolves to the server's loopback: the
    test's error names the host and the rule, never what answers there."""
    tenant = await make_tenant()
    api = await api_with()
    dns["jira.example.test"] = ["93.184.216.34"]
    resp = await api.post("/instances", tenant,
                          json=_source(f"https://jira.example.test:{_port(echo)}"))
    assert resp.status == 201, resp.body
    dns["jira.example.test"] = ["127.0.0.1"]
    tested = await api.post(f"/instances/{resp.data['instance_id']}/test", tenant)
    assert tested.status == 502, tested.body
    message = tested.error["message"]
    assert "jira.example.test resolves only to private addresses" in message and REFUSED in message
    assert SECRET_PAGE not in str(tested.body) and echo.requests == 0
