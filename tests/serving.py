"""Serving the app in tests the way the product serves itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

__all__ = ["ProductionLikeServer", "app_clients"]


class ProductionLikeServer(TestServer):
    """aiohttp's test server cancels a handler when its client disconnects; ``web.run_app`` (how
    the product runs) does not. Serve as the product does, so what a test sees on a disconnect
    (a cancel, a stream ending) is the product's own doing."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = False
        return web.AppRunner(self.app, **kwargs)


@contextlib.asynccontextmanager
async def app_clients() -> AsyncIterator[Callable[[web.Application], Awaitable[TestClient]]]:
    """``start(app)`` serves an app on a real loopback socket, as the product serves itself, and
    gives a client for it; every one is closed when the block ends."""
    clients: list[TestClient] = []

    async def start(app: web.Application) -> TestClient:
        client = TestClient(ProductionLikeServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            await client.close()
