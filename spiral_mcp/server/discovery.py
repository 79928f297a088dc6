"""Where OAuth clients look to learn how to authenticate here, answered without a credential.

With OAuth configured, the Protected Resource Metadata (RFC 9728) is served at the paths a
client derives from OAUTH_RESOURCE. The authorization server's own documents (RFC 8414, OpenID
Connect discovery, dynamic registration) are not this server's: a client probing for them here (as
clients of the 2025-03-26 revision do) gets a 404 pointing at the metadata, which lists the
authorization servers. Without OAuth, every one of these paths answers 404 saying that this
server takes API keys and how to send one, so a client that starts an OAuth flow on its own
(mcp-remote, the Inspector) shows a sentence a person can act on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config import Settings
from ..oauth.challenges import METADATA_PATH, metadata, metadata_paths, metadata_url
from .middleware import json_error

__all__ = ["routes"]

Handler = Callable[[web.Request], Awaitable[web.Response]]

_METADATA_ROUTE = METADATA_PATH + "{tail:.*}"
_AUTHORIZATION_SERVER_ROUTES = ("/.well-known/oauth-authorization-server{tail:.*}",
                                "/.well-known/openid-configuration{tail:.*}", "/register")


def routes(settings: Settings) -> list[web.RouteDef]:
    """The routes of every path in ``middleware.is_discovery_path``'s reach that a client
    probes; any method, as a client may POST to /register."""
    resource, server = _oauth(settings) if settings.oauth else (_api_keys_only,) * 2
    return [web.route("*", _METADATA_ROUTE, resource),
            *(web.route("*", path, server) for path in _AUTHORIZATION_SERVER_ROUTES)]


async def _api_keys_only(request: web.Request) -> web.Response:
    return json_error(404, "OAUTH_NOT_CONFIGURED",
                      "this server takes API keys, not OAuth: send one as Authorization: Bearer "
                      "spk_... (an operator creates one with spiral-mcp apikey create)")


def _oauth(settings: Settings) -> tuple[Handler, Handler]:
    document = metadata(settings)
    served = frozenset(metadata_paths(settings))
    where = metadata_url(settings)

    async def resource(request: web.Request) -> web.Response:
        if request.path not in served:
            return json_error(404, "NOT_FOUND", f"no metadata here; this server's is at {where}")
        if request.method not in ("GET", "HEAD"):
            return json_error(405, "METHOD_NOT_ALLOWED", "the metadata is read with GET",
                              Allow="GET, HEAD")
        # Cacheable for a while: it changes only with the settings.
        return web.json_response(document, headers={"Cache-Control": "max-age=300"})

    async def server(request: web.Request) -> web.Response:
        return json_error(404, "NOT_FOUND",
                          "this server is an OAuth resource server, not an authorization "
                          f"server; its authorization servers are listed at {where}")

    return resource, server
