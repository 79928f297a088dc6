"""The CLI's operator commands: ``operator create|list|revoke|audit`` and ``tenant
create|suspend|resume|delete``, through the same domain functions as the admin API's operator
routes (spiral_mcp.admin.operators and .tenants), each change recorded in operator_audit with
the actor ``cli:<system user>``.

``cli.py`` builds the parser and hands these commands here with its way of running a function
on the owner's connection in a transaction.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .admin import AdminError, operators, tenants
from .admin.operators import CLI_OPERATOR, Operator
from .db import init_connection
from .queries import Queries

__all__ = ["TENANT_ACTIONS", "add_operator_commands", "add_tenant_actions", "handles", "run"]

# The tenant actions this module runs (``tenant list`` stays with cli.py).
TENANT_ACTIONS = frozenset({"create", "suspend", "resume", "delete"})

# cli.py's runner: the function called with the owner's connection and the statements, in a
# transaction; its failures are one line.
WithAdmin = Callable[[Callable[[asyncpg.Connection, Queries], Awaitable[Any]]], Awaitable[Any]]


def add_operator_commands(commands: Any, common: argparse.ArgumentParser,
                          parse_id: Callable[[str], uuid.UUID]) -> None:
    """``operator create|list|revoke|audit`` under ``commands`` (the CLI's subparsers)."""
    operator = commands.add_parser(
        "operator", help="create, list or revoke operators (who manage every tenant)",
        description="An operator manages tenants across the installation through the admin "
                    "API's operator routes (OPERATOR_API=on) with a secret spo_... made here.")
    actions = operator.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common],
                                help="create an operator (the secret is printed once)")
    create.add_argument("--name", required=True, help="who the operator is (unique while live)")
    actions.add_parser("list", parents=[common], help="list operators (never secrets)")
    revoke = actions.add_parser("revoke", parents=[common],
                                help="revoke an operator; its console sessions end")
    revoke.add_argument("operator_id", type=parse_id)
    audit = actions.add_parser("audit", parents=[common],
                               help="what operators (and this CLI) did, newest first")
    audit.add_argument("--tenant", type=parse_id, help="only actions on this tenant")
    audit.add_argument("--limit", type=int, default=50, help="how many (default 50)")


def add_tenant_actions(actions: Any, common: argparse.ArgumentParser,
                       parse_id: Callable[[str], uuid.UUID]) -> None:
    """``tenant create|suspend|resume|delete`` under ``actions`` (the tenant subparsers)."""
    create = actions.add_parser("create", parents=[common], help="create a tenant")
    create.add_argument("name")
    for action, text in (
            ("suspend", "suspend a tenant: its API keys and OAuth tokens are refused and its "
                        "sources not synced, until it is resumed"),
            ("resume", "resume a suspended tenant")):
        actions.add_parser(action, parents=[common], help=text).add_argument(
            "tenant_id", type=parse_id)
    delete = actions.add_parser("delete", parents=[common],
                                help="delete a tenant and every row of its data")
    delete.add_argument("tenant_id", type=parse_id)
    delete.add_argument("--confirm", required=True, metavar="NAME",
                        help="the tenant's exact name, to confirm")


def _cli_operator() -> Operator:
    """The CLI as the audit names it: with the system user running it when there is one."""
    try:
        return Operator(None, f"cli:{getpass.getuser()}")
    except (OSError, KeyError):  # no login name in the environment nor the password database
        return CLI_OPERATOR


def handles(args: argparse.Namespace) -> bool:
    """Whether the parsed command is one of this module's."""
    return args.command == "operator" or (args.command == "tenant"
                                          and args.action in TENANT_ACTIONS)


def _in_transaction(with_admin: WithAdmin) -> operators.InTransaction:
    async def run_work(work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        async def on(conn: asyncpg.Connection, _queries: Queries) -> Any:
            # jsonb as Python values (audit arguments), as on the server's pools.
            await init_connection(conn)
            return await work(conn)

        return await with_admin(on)

    return run_work


async def run(args: argparse.Namespace, with_admin: WithAdmin,
              print_json: Callable[[Any], None]) -> None:
    """Run an ``operator`` command or one of TENANT_ACTIONS and print its outcome (a listing
    with ``print_json``)."""
    queries = Queries.load()
    in_transaction = _in_transaction(with_admin)
    cli = _cli_operator()

    async def audited(action: str, work: Callable[[asyncpg.Connection], Awaitable[Any]], *,
                      tenant_id: uuid.UUID | None = None,
                      arguments: dict[str, Any] | None = None) -> Any:
        return await operators.audited(in_transaction, queries, cli, action,
                                       tenant_id=tenant_id, arguments=arguments, work=work)

    match args.command, args.action:
        case "operator", "create":
            async def create(conn: asyncpg.Connection) -> tuple[uuid.UUID, str]:
                made = await operators.create_operator(conn, queries, args.name)
                await operators.record(conn, queries, cli, "operators.create",
                                       arguments={"name": args.name},
                                       detail={"operator_id": made[0]})
                return made

            operator_id, secret = await audited("operators.create", create,
                                                arguments={"name": args.name})
            print(f"operator id: {operator_id}", file=sys.stderr)
            print("secret (shown once; store it now):", file=sys.stderr)
            print(secret)
        case "operator", "list":
            print_json(await in_transaction(
                lambda conn: operators.list_operators(conn, queries)))
        case "operator", "audit":
            if not 1 <= args.limit <= 10_000:
                raise AdminError("--limit must be between 1 and 10000")
            print_json(await in_transaction(lambda conn: operators.list_audit(
                conn, queries, tenant_id=args.tenant, limit=args.limit)))
        case "operator", "revoke":
            async def revoke(conn: asyncpg.Connection) -> None:
                await operators.revoke_operator(conn, queries, args.operator_id)
                await operators.record(conn, queries, cli, "operators.revoke",
                                       arguments={"operator_id": args.operator_id})

            await audited("operators.revoke", revoke,
                          arguments={"operator_id": str(args.operator_id)})
            print(f"revoked {args.operator_id}")
        case "tenant", "create":
            tenant = await audited(
                "tenants.create", lambda conn: tenants.add_tenant(conn, queries, cli,
                                                                  args.name),
                arguments={"name": args.name})
            print(tenant["tenant_id"])
        case "tenant", "suspend" | "resume" as action:
            change = tenants.suspend_tenant if action == "suspend" else tenants.resume_tenant
            await audited(f"tenants.{action}",
                          lambda conn: change(conn, queries, cli, args.tenant_id),
                          tenant_id=args.tenant_id)
            print(f"{action.removesuffix('e')}ed {args.tenant_id}")
        case "tenant", "delete":
            done = await audited(
                "tenants.delete", lambda conn: tenants.delete_tenant(
                    conn, queries, cli, args.tenant_id, confirm=args.confirm),
                tenant_id=args.tenant_id, arguments={"confirm": args.confirm})
            print(f"deleted {args.tenant_id} ({sum(done['deleted'].values())} rows)")

