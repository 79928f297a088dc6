"""Serving the app in tests the way the product serves itself."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["ProductionLikeServer"]


class ProductionLikeServer(TestServer):
    """aiohttp's test server cancels a handler when its client disconnects; ``web.run_app`` (how
    the product runs) does not. Serve as the product does, so what a test sees on a disconnect
    (a cancel, a stream ending) is the product's own doing."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = False
        return web.AppRunner(self.app, **kwargs)
