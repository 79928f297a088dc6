"""The console as a person uses it, in a real headless Chromium (issue 21): sign in, create a key
and see its secret once, add a source against the fake Jira, sync it and watch its progress,
find the sync in the history and the calls in the audit log, open the usage and a project
dashboard, sign out. Every page is saved as a screenshot at 1280 px and at a phone's width
(tests/browser.py says where)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from browser import Browser

from spiral_mcp.admin import operators
from spiral_mcp.config import load_settings
from spiral_mcp.db import init_connection
from spiral_mcp.server.app import create_app
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients

SECRET_KEY = "x" * 43 + "="
SEARCH = ("POST", "/rest/api/3/search/jql")
ISSUES = 150  # two pages of the Jira adapter's 100
pytestmark = pytest.mark.slow


class HeldSearch:
    """Holds the fake Jira's second search page until released: the sync is then caught in
    the middle, with its first page's progress on show."""

    def __init__(self) -> None:
        self.searches = 0
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if (request.method, request.path) == SEARCH:
            self.searches += 1
            if self.searches == 2:
                self.held.set()
                await asyncio.wait_for(self.release.wait(), 30)
        return await handler(request)


def jira_with_history() -> FakeJira:
    """Issues of project ABC over the last weeks, some done, some in progress: a flow to draw."""
    fake = FakeJira()
    now = datetime.now(UTC)
    for n in range(1, ISSUES + 1):
        moves: tuple[str, ...] = ()
        if n % 3 == 0:
            moves = ("In Progress", "Done")
        elif n % 3 == 1:
            moves = ("In Progress",)
        fake.add_issue(f"ABC-{n}", summary=f"Issue {n}", moves=moves,
                       status=moves[-1] if moves else "To Do",
                       updated=now - timedelta(hours=ISSUES - n, days=n % 20))
    return fake


@pytest.fixture
async def served(database_urls) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """``await served(operators=False, middleware=None)``: the server, able to open sources;
    with ``operators`` the operator path on too (OPERATOR_API, the owner's pool); a
    ``middleware`` runs before the server's own."""
    async with app_clients() as start:
        async def serve(*, operators: bool = False, middleware: Any = None) -> TestClient:
            if operators:
                assert database_urls.admin is not None
                settings = load_settings(environ={
                    "DATABASE_URL": database_urls.runtime, "AUTH_CACHE_TTL": "0",
                    "ADMIN_DATABASE_URL": database_urls.admin, "OPERATOR_API": "on",
                    "DB_POOL_MIN": "1", "DB_POOL_MAX": "5", "SYNC_INTERVAL": "0"})
                return await start(create_app(settings, database_url=database_urls.runtime,
                                              owner_url=database_urls.admin))
            settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY,
                                     SYNC_INTERVAL="0")
            app = create_app(settings, database_url=database_urls.runtime,
                             explorer_url=database_urls.explorer)
            if middleware is not None:
                app.middlewares.insert(0, middleware)
            return await start(app)

        yield serve


async def images_loaded(page: Browser) -> list[str]:
    """The srcs of the page's chart images that did not load."""
    return await page.script(
        "return [...document.querySelectorAll('img.chart')]"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")


async def wait_images(page: Browser, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.25)):
        if not await images_loaded(page):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"charts did not load: {await images_loaded(page)}")


async def test_the_admin_walk(served, browser, serve_fake, make_tenant: TenantFactory) -> None:
    held = HeldSearch()
    fake = jira_with_history()
    fake_app = fake.app()
    fake_app.middlewares.insert(0, held.middleware)
    await serve_fake(fake, app=fake_app)
    tenant: Tenant = await make_tenant(name="Acme")
    client = await served()
    page: Browser = browser(str(client.make_url("")))

    # Signed out: the console leads to its sign-in page.
    await page.get("/admin")
    await page.wait_for_path("/admin/login")
    await page.find("#credential")
    await page.screenshot("01-sign-in")

    await page.type("#credential", tenant.key)
    await page.click("#sign-in button[type=submit]")
    await page.wait_for_path("/admin")
    assert "Next steps" in await page.text("#next-steps")
    await page.screenshot("02-home")

    # A key: its secret shown once, with a copy button.
    await page.click('a.link[href="/admin/keys"]')
    await page.type("#key-name", "claude-desktop")
    await page.click("#key-form button[type=submit]")
    secret = await page.text("#secret-value")
    assert secret.startswith("spk_")
    assert "claude-desktop" in await page.text("#keys-list")
    await page.screenshot("03-key-created")
    await page.click("#secret-panel button[data-copy]")
    await page.wait_for_text("#secret-panel button[data-copy]", "Cop")
    await page.get("/admin/keys")
    await page.find("#keys-list")
    assert secret not in await page.page_source()
    await page.screenshot("04-keys")

    # A source against the fake Jira.
    await page.get("/admin/sources")
    await page.find("#sources-list")
    await page.screenshot("05-sources-empty")
    await page.select("#source-kind", "jira")
    await page.type("#source-name", "acme-jira")
    await page.type("#source-url", fake.base_url)  # type: ignore[attr-defined]
    await page.type("#source-token", fake.token)
    await page.type("#source-email", fake.email)
    await page.type("#source-projects", "ABC")
    await page.click("#source-form button[type=submit]")
    await page.wait_for_path("/admin/sources/", prefix=True)
    assert fake.token not in await page.page_source()
    await page.screenshot("06-source")

    await page.click("#test-source")
    await page.find("#source-said")

    # Sync it, and watch the progress while the fake Jira holds its second page.
    await page.click("#sync-source")
    await asyncio.wait_for(held.held.wait(), 20)
    await page.find("#task-panel progress")
    # The first page is written while the second is held: its counts are on show, and the
    # running run is in the history.
    await page.wait_for_text("#task-panel [data-task-status]", "pages 1, items 100")
    await page.wait_for_text("#runs", "running")
    await page.screenshot("07-sync-in-progress", phone=False)
    held.release.set()
    state = await page.wait_for_attribute("#task-panel", "data-state",
                                          ("completed", "failed", "cancelled"), timeout=30)
    assert state == "completed", await page.text("#task-panel")
    runs = await page.text("#runs")
    assert "ok" in runs and "api" in runs
    await page.screenshot("08-source-synced")

    # An agent uses the new key: its calls are in the audit log (written in the background,
    # about once a second) and in the usage.
    for jql in ("project = ABC", "project = ABC AND status = Done", "project = ABC ORDER BY"):
        answer = await client.post("/execute", headers={"Authorization": f"Bearer {secret}"},
                                   json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                         "params": {"name": "jira_search",
                                                    "arguments": {"jql": jql}}})
        assert answer.status == 200
    await page.click('a.link[href="/admin/audit"]')
    for _ in range(40):
        if "jira_search" in await page.text("#audit-table"):
            break
        await asyncio.sleep(0.25)
        await page.get("/admin/audit")
    audit = await page.text("#audit-table")
    assert "admin:instances.sync" in audit and "admin:keys.create" in audit
    assert "claude-desktop" in audit or "jira_search" in audit
    await page.screenshot("09-audit")
    await page.type('#audit-filters input[name="tool"]', "jira_search")
    await page.select('#audit-filters select[name="outcome"]', "error")
    await page.click("#audit-filters button[type=submit]")
    await page.wait_for_path("/admin/audit")
    filtered = await page.text("#audit-table")
    assert "jira_search" in filtered and "admin:" not in filtered
    await page.screenshot("09-audit-filtered", phone=False)

    await page.click('a.link[href="/admin/usage"]')
    await page.find("#usage-window")
    await wait_images(page)
    await page.screenshot("10-usage")

    await page.click('a.link[href="/admin/projects"]')
    await page.click('#projects-table a[href="/admin/projects/ABC"]')
    await page.find("#project-figures")
    await wait_images(page)
    await page.screenshot("11-project-dashboard")

    # Signing out ends the session: the console's pages lead to sign-in again.
    await page.click("#sign-out")
    await page.wait_for_path("/admin/login")
    assert "signed out" in await page.text(".notice")
    await page.screenshot("12-signed-out")
    await page.get("/admin/keys")
    await page.wait_for_path("/admin/login")
    # No page needed an inline script or style, and no script failed.
    assert await page.page_problems() == []


class RateLimitedPolls:
    """Answers the first polls of a task 429 with Retry-After, as a spent read budget does."""

    def __init__(self, refusals: int) -> None:
        self.left = refusals

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path.startswith("/api/v1/tasks/") and self.left > 0:
            self.left -= 1
            return web.json_response(
                {"success": False, "error": {"code": "RATE_LIMITED",
                                             "message": "rate limit for read calls reached",
                                             "details": [], "retry_after": 1}},
                status=429, headers={"Retry-After": "1"})
        return await handler(request)


async def test_sync_progress_waits_out_a_rate_limit(served, browser, serve_fake,
                                                    make_tenant: TenantFactory) -> None:
    """A 429 on a progress poll is a pause, said as such, never a failed sync."""
    held = HeldSearch()
    fake = jira_with_history()
    fake_app = fake.app()
    fake_app.middlewares.insert(0, held.middleware)
    await serve_fake(fake, app=fake_app)
    tenant: Tenant = await make_tenant(name="Acme")
    limited = RateLimitedPolls(refusals=2)
    client = await served(middleware=limited.middleware)
    made = await client.post("/api/v1/instances", headers=tenant.headers, json={
        "kind": "jira", "name": "acme-jira", "base_url": fake.base_url,  # type: ignore[attr-defined]
        "token": fake.token, "email": fake.email, "projects": {"ABC": "ABC"}})
    assert made.status == 201, await made.text()
    instance_id = (await made.json())["data"]["instance_id"]
    page: Browser = browser(str(client.make_url("")))
    await page.get("/admin/login")
    await page.type("#credential", tenant.key)
    await page.click("#sign-in button[type=submit]")
    await page.wait_for_path("/admin")
    await page.get(f"/admin/sources/{instance_id}")
    await page.click("#sync-source")
    await page.wait_for_text("#task-panel [data-task-status]", "waiting: rate limited")
    held.release.set()
    state = await page.wait_for_attribute("#task-panel", "data-state",
                                          ("completed", "failed", "cancelled"), timeout=30)
    assert state == "completed", await page.text("#task-panel")
    assert limited.left == 0


async def test_the_operator_walk(served, browser, admin_conn, queries) -> None:
    """An operator signs in with its own credential, creates a tenant, suspends and resumes
    it; the tenant pages are not the operator's."""
    await init_connection(admin_conn)
    async with admin_conn.transaction():
        _, secret = await operators.create_operator(admin_conn, queries,
                                                    f"op-{uuid.uuid4().hex[:8]}")
    client = await served(operators=True)
    page: Browser = browser(str(client.make_url("")))
    await page.get("/admin/login")
    await page.type("#credential", secret)
    await page.click("#sign-in button[type=submit]")
    await page.wait_for_path("/admin/tenants")
    name = f"Globex {uuid.uuid4().hex[:6]}"
    await page.type('#tenant-form input[name="name"]', name)
    await page.click("#tenant-form button[type=submit]")
    row = f'#tenants-table tr[data-name="{name}"]'
    assert "active" in await page.text(row)
    await page.click(f"{row} button.suspend")
    assert name in await page.accept_dialog()
    await page.wait_for_text(row, "suspended")
    await page.screenshot("13-tenants")
    await page.click(f"{row} button.resume")
    await page.wait_for_text(row, "active")
    # The tenant pages have no tenant to show an operator: back to the tenants.
    await page.get("/admin/keys")
    await page.wait_for_path("/admin/tenants")
    await page.click("#sign-out")
    await page.wait_for_path("/admin/login")
    assert await page.page_problems() == []
