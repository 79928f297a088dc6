"""Run the MCP conformance suite against the product.

    python -m tests.conformance_harness --suite all          # every run CI holds us to
    python -m tests.conformance_harness --suite 2026-07-28   # one of tests/conformance_suites.py
    python -m tests.conformance_harness --suite all --balanced 3  # 3 processes behind HAProxy
    python -m tests.conformance_harness -- \
        npx -y -p node@22 -p @modelcontextprotocol/conformance@0.1.16 conformance

(``make conformance`` runs ``--suite all``.)

The harness provisions a throwaway database (on TEST_DATABASE_URL, else the embedded server, as
tests/conftest.py does), creates a tenant and an API key, starts the product with the scenarios'
fixture tools, resources and prompts added (they exist only here, never in the product), and puts
a small reverse proxy in front that adds ``Authorization: Bearer <key>``: the suite sends no
credentials, and the product's authentication stays exactly as it is. It then runs
``<command> server --url http://127.0.0.1:<proxy port>/mcp`` and exits with its status. A named
suite passes only when the suite exits 0 and reports no failing scenario at all, scored or not
(the suite's status ignores extension and pending scenarios; we do not). ``CONFORMANCE_ARGS`` adds
options to the suite's command line (e.g. ``--scenario ping``).

With ``--balanced K`` the product runs as K processes of this module (``--serve``: the same app
and fixtures, each its own process) behind a real HAProxy (tests/balancer.py), which adds the key
instead of the proxy; the suite talks to HAProxy. A fixture that changes a process's own lists
(``test_trigger_tool_change``) changes that process's only, as a deployment's processes each load
their tools from the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web
from cryptography.fernet import Fernet

from spiral_mcp import admin
from spiral_mcp.config import load_settings
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.handlers import Tool, builtin_tools
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.handlers.prompts import Prompt, PromptArgument
from spiral_mcp.handlers.resources import Resource
from spiral_mcp.provision import provision, start_embedded
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from tests import balancer
from tests.conformance_modern import ModernFixtures, log_three_messages
from tests.conformance_suites import SUITES, Suite, failed_lines

from .conformance_mrtr import mrtr_prompts, mrtr_tools
from .conformance_tasks import task_fixture_tools

__all__ = ["fixture_prompts", "fixture_resources", "fixture_tools", "harness_app", "main",
           "run", "run_suite"]

ROOT = Path(__file__).resolve().parent.parent

_NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_TEXT: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}}


def _string_argument(name: str) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": "string"}}, "required": [name]}


# -- fixture tools the scenarios call (test-only) ----------------------------------------------

async def _simple_text(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"text": "This is a simple text response for testing."}


async def _error(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    raise ServiceError(ErrorCode.VALIDATION_ERROR,
                       "This tool intentionally returns an error for testing")


async def _with_progress(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    for done in (0, 50, 100):
        await ctx.progress(done, 100, None)
        if done < 100:
            await asyncio.sleep(0.05)
    return {"text": "progress reported"}


async def _echo(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"text": "ok"}


async def _reconnection(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.1)
    return {"text": "reconnection test done"}


# A 1x1 red PNG and eight samples of silence as 8 kHz WAV.
_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLv"
        "AAAAAElFTkSuQmCC")
_WAV = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA=="
_IMAGE = {"type": "image", "data": _PNG, "mimeType": "image/png"}


async def _image(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.attach(_IMAGE)
    return {"text": "an image"}


async def _audio(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.attach({"type": "audio", "data": _WAV, "mimeType": "audio/wav"})
    return {"text": "a sound"}


async def _embedded_resource(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.attach({"type": "resource", "resource": {
        "uri": "test://embedded-resource", "mimeType": "text/plain",
        "text": "This is an embedded resource content."}})
    return {"text": "a resource"}


async def _mixed(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.attach({"type": "text", "text": "Multiple content types test:"})
    ctx.attach(_IMAGE)
    ctx.attach({"type": "resource", "resource": {
        "uri": "test://mixed-content-resource", "mimeType": "application/json",
        "text": '{"test":"data","value":123}'}})
    return {"text": "mixed"}


async def _sampling(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    result = await ctx.ask("sampling/createMessage", {
        "messages": [{"role": "user", "content": {"type": "text", "text": args["prompt"]}}],
        "maxTokens": 100})
    return {"text": f"LLM response: {result.get('content', {}).get('text')}"}


async def _elicit(ctx: ToolContext, message: str, schema: dict[str, Any]) -> dict[str, Any]:
    result = await ctx.ask("elicitation/create", {"message": message, "requestedSchema": schema})
    return {"text": f"Elicitation completed: action={result.get('action')}, "
                    f"content={orjson.dumps(result.get('content')).decode()}"}


async def _elicitation(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _elicit(ctx, args["message"], {
        "type": "object",
        "properties": {"username": {"type": "string", "description": "User's response"},
                       "email": {"type": "string", "description": "User's email address"}},
        "required": ["username", "email"]})


async def _elicitation_defaults(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _elicit(ctx, "Please review your details", {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {"type": "string", "enum": ["active", "inactive", "pending"],
                       "default": "active"},
            "verified": {"type": "boolean", "default": True},
        }})


async def _elicitation_enums(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _elicit(ctx, "Please choose", {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {"type": "string", "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"}]},
            "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                           "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "items": {
                "type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {"type": "array", "items": {"anyOf": [
                {"const": "value1", "title": "First Choice"},
                {"const": "value2", "title": "Second Choice"},
                {"const": "value3", "title": "Third Choice"}]}},
        }})


def _fixture(name: str, handler: Any, input_schema: dict[str, Any] | None = None) -> Tool:
    return Tool(name=name, title=name, description=f"Conformance fixture {name}",
                handler=handler, scope="read", call_class="read",
                input_schema=input_schema or _NO_ARGS, output_schema=_TEXT)


def fixture_tools() -> list[Tool]:
    # The suite's own fixture (json-schema-2020-12.ts): composition, conditionals and an
    # $anchor must reach tools/list whole.
    schema_2020_12 = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {
            "street": {"type": "string"}, "city": {"type": "string"}}}},
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"},
                       "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                       "phone": {"type": "string"}, "email": {"type": "string"}},
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}},
               "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": False,
    }
    return [
        _fixture("test_simple_text", _simple_text),
        _fixture("test_error_handling", _error),
        _fixture("test_tool_with_progress", _with_progress),
        _fixture("test_tool_with_logging", log_three_messages),
        _fixture("test_reconnection", _reconnection),
        _fixture("json_schema_2020_12_tool", _echo, schema_2020_12),
        _fixture("test_image_content", _image),
        _fixture("test_audio_content", _audio),
        _fixture("test_embedded_resource", _embedded_resource),
        _fixture("test_multiple_content_types", _mixed),
        _fixture("test_sampling", _sampling, _string_argument("prompt")),
        _fixture("test_elicitation", _elicitation, _string_argument("message")),
        _fixture("test_elicitation_sep1034_defaults", _elicitation_defaults),
        _fixture("test_elicitation_sep1330_enums", _elicitation_enums),
    ]


# -- fixture resources and prompts (test-only) -------------------------------------------------

def _contents(uri: str, mime_type: str, **body: str):
    async def read(ctx: ToolContext, values: dict[str, str]) -> list[dict[str, Any]]:
        return [{"uri": uri, "mimeType": mime_type, **body}]

    return read


async def _template_data(ctx: ToolContext, values: dict[str, str]) -> list[dict[str, Any]]:
    item = values["id"]
    return [{"uri": f"test://template/{item}/data", "mimeType": "application/json",
             "text": orjson.dumps({"id": item, "templateTest": True,
                                   "data": f"Data for ID: {item}"}).decode()}]


def fixture_resources() -> list[Resource]:
    return [
        Resource(uri="test://static-text", name="static-text", description="A static text",
                 mime_type="text/plain", read=_contents(
                     "test://static-text", "text/plain",
                     text="This is the content of the static text resource.")),
        Resource(uri="test://static-binary", name="static-binary", description="A 1x1 PNG",
                 mime_type="image/png",
                 read=_contents("test://static-binary", "image/png", blob=_PNG)),
        Resource(uri="test://watched-resource", name="watched-resource",
                 description="A resource to subscribe to", mime_type="text/plain",
                 read=_contents("test://watched-resource", "text/plain", text="watched")),
        Resource(uri="test://template/{id}/data", name="template-data",
                 description="Data for an id", mime_type="application/json",
                 read=_template_data),
    ]


def _user(content: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": content}


async def _simple_prompt(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    return [_user({"type": "text", "text": "This is a simple prompt for testing."})]


async def _prompt_with_arguments(ctx: ToolContext, args: dict[str, str]
                                 ) -> list[dict[str, Any]]:
    return [_user({"type": "text", "text": f"Prompt with arguments: arg1='{args['arg1']}', "
                                           f"arg2='{args['arg2']}'"})]


async def _prompt_with_resource(ctx: ToolContext, args: dict[str, str]
                                ) -> list[dict[str, Any]]:
    return [_user({"type": "resource", "resource": {
                "uri": args["resourceUri"], "mimeType": "text/plain",
                "text": "Embedded resource content for testing."}}),
            _user({"type": "text", "text": "Please process the embedded resource above."})]


async def _prompt_with_image(ctx: ToolContext, args: dict[str, str]) -> list[dict[str, Any]]:
    return [_user(_IMAGE), _user({"type": "text", "text": "Please analyze the image above."})]


def fixture_prompts() -> list[Prompt]:
    return [
        Prompt(name="test_simple_prompt", description="A prompt with no arguments",
               render=_simple_prompt),
        Prompt(name="test_prompt_with_arguments", description="A prompt with two arguments",
               render=_prompt_with_arguments,
               arguments=(PromptArgument(name="arg1", description="First test argument"),
                          PromptArgument(name="arg2", description="Second test argument"))),
        Prompt(name="test_prompt_with_embedded_resource", description="Embeds a resource",
               render=_prompt_with_resource,
               arguments=(PromptArgument(name="resourceUri",
                                         description="URI of the resource to embed"),)),
        Prompt(name="test_prompt_with_image", description="A prompt with an image",
               render=_prompt_with_image),
    ]


# -- database, tenant and key ------------------------------------------------------------------

@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[tuple[str, str]]:
    """A provisioned throwaway database: (runtime URL, API key secret); dropped afterwards."""
    superuser = os.environ.get("TEST_DATABASE_URL") or await asyncio.to_thread(
        start_embedded, ROOT / ".test-pg")
    name = f"spiral_conformance_{uuid.uuid4().hex[:12]}"
    urls = await provision(superuser, name)
    try:
        assert urls.admin is not None
        queries = Queries.load()
        conn = await asyncpg.connect(urls.admin)
        try:
            async with conn.transaction():
                tenant_id = await admin.create_tenant(conn, queries, "conformance")
                _, secret = await admin.create_api_key(
                    conn, queries, tenant_id=tenant_id, name="conformance",
                    scopes=["read", "write", "query"], user="conformance@example.com")
        finally:
            await conn.close()
        yield urls.runtime, secret
    finally:
        conn = await asyncpg.connect(superuser)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


# -- the credential-adding reverse proxy -------------------------------------------------------

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailers", "transfer-encoding", "upgrade", "content-length",
                         "content-encoding"})


def proxy_app(upstream: str, key: str) -> web.Application:
    """Forward every request to ``upstream`` with the key added; stream the answer (SSE too).

    Host and Origin pass through unchanged, so the product's DNS-rebinding guard sees what the
    suite sent.
    """
    app = web.Application(client_max_size=64 << 20)
    session_key = web.AppKey("client", aiohttp.ClientSession)

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None), auto_decompress=False)
        yield
        await app[session_key].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() != "authorization"}
        headers["Authorization"] = f"Bearer {key}"
        body = await request.read()
        async with app[session_key].request(
                request.method, upstream + request.rel_url.path_qs, headers=headers,
                data=body if body else None, allow_redirects=False) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status)
            for name, value in upstream_response.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for chunk in upstream_response.content.iter_any():
                    await response.write(chunk)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
            return response

    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    return runner, server.sockets[0].getsockname()[1]


async def _tee(stream: asyncio.StreamReader) -> str:
    """Copy the suite's output through as it comes, and keep it to read its summary."""
    chunks: list[str] = []
    while line := await stream.readline():
        text = line.decode(errors="replace")
        chunks.append(text)
        sys.stdout.write(text)
        sys.stdout.flush()
    return "".join(chunks)


def harness_app(runtime_url: str, **env: str) -> web.Application:
    """The product with the scenarios' fixture tools, resources and prompts added; ``env`` adds
    settings (REDIS_URL when several processes serve one suite)."""
    settings = load_settings(environ={
        "DATABASE_URL": runtime_url, "AUTH_CACHE_TTL": "5", "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "5", "LOG_LEVEL": "warning", "SHUTDOWN_TIMEOUT": "2", **env,
    })
    modern = ModernFixtures()
    product = create_app(settings, database_url=runtime_url,
                         tools=[*builtin_tools(), *fixture_tools(), *modern.tools(),
                                *mrtr_tools(), *task_fixture_tools()],
                         resources=fixture_resources(),
                         prompts=[*fixture_prompts(), *mrtr_prompts()])
    modern.attach(product)
    return product


def _serve_backend() -> int:
    """One process of a balanced run (``--serve``): the harness's app on HOST:PORT until
    SIGTERM, on the database DATABASE_URL names, with the SPIRAL_SECRET_KEY every process of the
    run shares (and REDIS_URL's Redis when set)."""
    env = {name: os.environ[name] for name in ("REDIS_URL", "SPIRAL_SECRET_KEY")
           if os.environ.get(name)}
    web.run_app(harness_app(os.environ["DATABASE_URL"], **env), host=os.environ["HOST"],
                port=int(os.environ["PORT"]), access_log=None, print=None,
                shutdown_timeout=5)
    return 0


async def _run_command(command: list[str], url: str, args: tuple[str, ...]) -> tuple[int, str]:
    argv = [*command, "server", "--url", f"{url}/mcp", *args]
    argv += shlex.split(os.environ.get("CONFORMANCE_ARGS", ""))
    print("conformance:", " ".join(argv), flush=True)
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    output = await _tee(process.stdout)
    return await process.wait(), output


async def run(command: list[str], *, args: tuple[str, ...] = (),
              balanced: int = 0) -> tuple[int, str]:
    """Serve the product, run ``command server --url … args``: its exit status and output
    (stdout and stderr together).

    In this process behind the credential-adding proxy; or, with ``balanced`` K, as K processes
    (``--serve``) behind a real HAProxy (tests/balancer.py) that adds the credentials itself, so
    the suite talks to HAProxy directly.
    """
    async with _database() as (runtime_url, key):
        if balanced:
            # One secret for every process, as an installation has: a multi round-trip request's
            # requestState sealed by one process is opened by whichever serves the next round.
            env = {**os.environ, "DATABASE_URL": runtime_url,
                   "SPIRAL_SECRET_KEY": Fernet.generate_key().decode(),
                   "PYTHONPATH": os.pathsep.join(filter(None, (
                       str(ROOT), os.environ.get("PYTHONPATH"))))}
            command_line = [sys.executable, "-m", "tests.conformance_harness", "--serve"]
            async with balancer.balanced(
                    balanced, command_line, env,
                    set_headers={"Authorization": f"Bearer {key}"}) as front:
                status, output = await _run_command(command, front.url, args)
                print(f"conformance: requests per backend {await front.served()}", flush=True)
                return status, output
        product_runner, product_port = await _serve(harness_app(runtime_url))
        proxy_runner, proxy_port = await _serve(
            proxy_app(f"http://127.0.0.1:{product_port}", key))
        try:
            return await _run_command(command, f"http://127.0.0.1:{proxy_port}", args)
        finally:
            await proxy_runner.cleanup()
            await product_runner.cleanup()


async def run_suite(suite: Suite, *, balanced: int = 0) -> tuple[bool, str]:
    """One pinned suite against a fresh database: whether it passed, and its output."""
    status, output = await run(suite.command, args=suite.args, balanced=balanced)
    failed = failed_lines(output)
    passed = status == 0 and not failed
    verdict = "passed" if passed else f"FAILED (exit status {status}; {len(failed)} failing)"
    print(f"conformance {suite.name}: {verdict}", flush=True)
    return passed, output


async def _run_suites(names: list[str], balanced: int) -> int:
    results = [(name, (await run_suite(SUITES[name], balanced=balanced))[0]) for name in names]
    for name, passed in results:
        print(f"  {'✓' if passed else '✗'} suite {name}")
    return 0 if all(passed for _, passed in results) else 1


_USAGE = f"""\
usage: python -m tests.conformance_harness --suite {{{'|'.join(SUITES)}|all}} [--balanced K]
       python -m tests.conformance_harness -- <conformance command ...>"""


def _balanced(argv: list[str]) -> int | None:
    """K of a trailing ``--balanced K`` (0 without one); None when it is not a count."""
    if len(argv) < 2 or argv[-2] != "--balanced":
        return 0
    return int(argv[-1]) if argv[-1].isdigit() and 1 <= int(argv[-1]) <= 16 else None


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return _serve_backend()
    balanced = _balanced(argv)
    if balanced is None:
        print("--balanced takes a number of processes, 1 to 16", file=sys.stderr)
        return 2
    if balanced:
        argv = argv[:-2]
    if len(argv) == 2 and argv[0] == "--suite" and (argv[1] in SUITES or argv[1] == "all"):
        return asyncio.run(_run_suites(list(SUITES) if argv[1] == "all" else [argv[1]],
                                       balanced))
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv or argv[0].startswith("--") or balanced:
        print(_USAGE, file=sys.stderr)
        return 2
    return asyncio.run(run(argv))[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
