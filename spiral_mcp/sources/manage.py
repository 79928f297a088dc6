"""The operator's source commands (``spiral-mcp source ...``), run as the owner role.

The owner is bound by row-level security on ``source_instances`` like everyone else, so a command
given only an instance id looks for it tenant by tenant (the owner may list tenants); nothing
reads another tenant's rows without first scoping the transaction to that tenant.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

from ..queries import Queries
from . import networks as source_networks
from .base import Adapter, SourceAdminError
from .runs import recorded_sync
from .secrets import SecretBox
from .sync import SyncProgress

__all__ = ["KINDS", "MAX_RATE", "MIN_RATE", "SourceAdminError", "adapter_class", "add_source",
           "change_overrides", "find_source", "list_sources", "make_adapter", "parse_overrides",
           "parse_project_map", "parse_rate", "parse_unmapped", "rate_of", "remove_source",
           "run_sync"]

# The kinds the store knows (source_instances.kind); each is the module ``sources.<kind>`` whose
# ``ADAPTER`` is its adapter class.
KINDS = ("jira", "github", "asana")
LOCAL_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,19}$")
# One DNS label; _ too, as internal hosts have it and clients accept it.
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$", re.IGNORECASE)
# An instance's request rate, in requests a second. Above MAX_RATE is more than any source
# publishes (GitHub's REST allows 15, paid Asana 25): a rate a minute given as one a second.
# Below MIN_RATE (one a minute) a sync of any size would take hours.
MAX_RATE = 100.0
MIN_RATE = 1 / 60
_RATE = re.compile(r"^(?P<count>\d+(?:\.\d+)?)(?:\s*/\s*(?P<per>s|min|h))?$")
_PER = {None: 1, "s": 1, "min": 60, "h": 3600}


def adapter_class(kind: str) -> type[Adapter]:
    if kind not in KINDS:
        raise SourceAdminError(f"unknown kind of source {kind!r} (known: {', '.join(KINDS)})")
    try:
        module = importlib.import_module(f"{__package__}.{kind}")
    except ModuleNotFoundError:
        raise SourceAdminError(f"sources of kind {kind} are not supported yet") from None
    adapter: type[Adapter] = module.ADAPTER
    return adapter


def parse_project_map(pairs: Iterable[str], adapter: type[Adapter]) -> dict[str, str]:
    """``["SOURCEREF=LOCALKEY", ...]`` as a dict; a bare Jira key maps to itself."""
    mapping: dict[str, str] = {}
    example = adapter.ref_example
    for pair in pairs:
        remote, _, local = pair.rpartition("=") if "=" in pair else (pair, "", pair)
        remote, local = remote.strip(), local.strip()
        if not adapter.ref_pattern.match(remote):
            raise SourceAdminError(f"--project {pair!r}: {remote!r} is not a project reference "
                                   f"for {adapter.kind} (like {example})")
        if not LOCAL_KEY.match(local):
            raise SourceAdminError(f"--project {pair!r}: expected {example}=LOCALKEY, the local "
                                   "key like ABC (capital letter, then capitals, digits or _)")
        if remote in mapping or local in mapping.values():
            raise SourceAdminError(f"--project {pair!r}: a key is mapped twice")
        mapping[remote] = local
    if not mapping:
        raise SourceAdminError("at least one --project is needed")
    return mapping


def parse_overrides(pairs: Iterable[str], adapter: type[Adapter]) -> dict[str, dict[str, str]]:
    """``["KEY:NAME=VALUE", ...]`` as the instance config's mapping overrides, e.g.
    ``status_categories:Triage=todo`` for Jira or ``priority_labels:sev1=critical`` for GitHub."""
    overrides: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, _, rest = pair.partition(":")
        name, sep, value = rest.rpartition("=")
        allowed = adapter.overrides.get(key.strip())
        if allowed is None:
            keys = ", ".join(adapter.overrides) or "none"
            raise SourceAdminError(f"--map {pair!r}: {adapter.kind} has no mapping {key!r} "
                                   f"(its mappings: {keys})")
        if not sep or not name.strip():
            raise SourceAdminError(f"--map {pair!r}: expected KEY:NAME=VALUE, e.g. "
                                   f"{key.strip()}:Triage={min(allowed)}")
        if value.strip() not in allowed:
            raise SourceAdminError(f"--map {pair!r}: {value.strip()!r} is not one of "
                                   f"{', '.join(sorted(allowed))}")
        overrides.setdefault(key.strip(), {})[name.strip()] = value.strip()
    return overrides


def parse_rate(raw: str, adapter: type[Adapter]) -> float:
    """``--rate``: the requests a second an instance keeps to, given a second (``2.5``), a
    minute (``150/min``) or an hour (``5000/h``); from MIN_RATE to MAX_RATE."""
    match = _RATE.match(raw.strip().lower())
    if match is None:
        raise SourceAdminError(f"--rate {raw!r}: expected requests a second (like 2.5), or a "
                               "number a minute or an hour (like 150/min or 5000/h)")
    rate = float(match["count"]) / _PER[match["per"]]
    default = (f"the default for {adapter.kind} is {adapter.default_rate:g} a second: "
               f"{adapter.rate_basis}")
    if rate > MAX_RATE:
        raise SourceAdminError(f"--rate {raw!r} is {rate:g} requests a second, more than the "
                               f"{MAX_RATE:g} any source allows (a rate a minute is written "
                               f"like 150/min); {default}")
    if rate < MIN_RATE:
        raise SourceAdminError(f"--rate {raw!r} is less than one request a minute, at which a "
                               f"sync would take hours; {default}")
    return rate


def rate_of(config: dict[str, Any], adapter: type[Adapter]) -> float:
    """The requests a second an instance keeps to: its own ``rate``, else its kind's
    default."""
    rate = config.get("rate")
    valid = isinstance(rate, int | float) and not isinstance(rate, bool)
    return float(rate) if valid else adapter.default_rate


def parse_unmapped(pairs: Iterable[str], adapter: type[Adapter]) -> list[tuple[str, str]]:
    """``["KEY:NAME", ...]`` as (key, name) pairs: overrides to remove, e.g.
    ``status_categories:Triage`` for Jira."""
    removed = []
    for pair in pairs:
        key, sep, name = (part.strip() for part in pair.partition(":"))
        if key not in adapter.overrides:
            keys = ", ".join(adapter.overrides) or "none"
            raise SourceAdminError(f"--unmap {pair!r}: {adapter.kind} has no mapping {key!r} "
                                   f"(its mappings: {keys})")
        if not sep or not name or "=" in name:
            raise SourceAdminError(f"--unmap {pair!r}: expected KEY:NAME, e.g. {key}:Triage")
        removed.append((key, name))
    return removed


def _named(mapping: dict[str, str], name: str) -> str | None:
    """The spelling under which ``mapping`` holds ``name``: adapters match names whatever their
    case, so Triage and triage are one override."""
    return next((held for held in mapping if held.casefold() == name.casefold()), None)


def _drop(mapping: dict[str, str], name: str) -> None:
    if (held := _named(mapping, name)) is not None:
        del mapping[held]


def _changed_overrides(config: dict[str, Any], adapter: type[Adapter], *, mapped: Iterable[str],
                       unmapped: Iterable[str]) -> dict[str, Any]:
    """``config`` with the ``--map`` pairs set and the ``--unmap`` pairs removed, all checked
    before any is applied."""
    added = parse_overrides(mapped, adapter)
    removed = parse_unmapped(unmapped, adapter)
    for key, name in removed:
        if _named(added.get(key, {}), name) is not None:
            raise SourceAdminError(f"{key}:{name} is both mapped and unmapped")
        held = config.get(key) or {}
        if _named(held, name) is None:
            raise SourceAdminError(f"--unmap {key}:{name}: the source has no such override "
                                   f"(its {key} overrides: {', '.join(sorted(held)) or 'none'})")
    changed = {key: dict(config.get(key) or {}) for key in adapter.overrides}
    for key, name in removed:
        _drop(changed[key], name)
    for key, names in added.items():
        for name, value in names.items():
            _drop(changed[key], name)  # a new spelling replaces the old one
            changed[key][name] = value
    # A mapping left with no override goes from the config, as source add never writes one.
    return {**{k: v for k, v in config.items() if k not in adapter.overrides},
            **{k: v for k, v in changed.items() if v}}


async def change_overrides(
    conn: asyncpg.Connection, queries: Queries, instance_id: uuid.UUID, *,
    tenant_id: uuid.UUID | None = None, mapped: Iterable[str] = (),
    unmapped: Iterable[str] = (), rate: str | None = None,
) -> dict[str, Any]:
    """Set (``KEY:NAME=VALUE``) and remove (``KEY:NAME``) an instance's mapping overrides, checked
    as ``source add`` checks them, and set its request ``rate`` (as :func:`parse_rate` reads it;
    ``default``: back to its kind's); all or nothing. Returns the overrides it has now, and its
    rate when one was given. Syncs from then on map with them; items already stored keep their
    mapping until the source changes them or a full sync re-applies it. ``tenant_id``: the
    instance must be that tenant's."""
    row = await find_source(conn, queries, instance_id, tenant_id=tenant_id)
    adapter = adapter_class(row["kind"])
    config = orjson.loads(await queries.source_config_for_update(conn, instance_id=instance_id))
    config = _changed_overrides(config, adapter, mapped=mapped, unmapped=unmapped)
    if rate is not None:
        config.pop("rate", None)
        if rate.strip().lower() != "default":
            config["rate"] = parse_rate(rate, adapter)
    await queries.source_set_config(conn, instance_id=instance_id,
                                    config=orjson.dumps(config).decode())
    changed: dict[str, Any] = {key: config[key] for key in adapter.overrides if key in config}
    if rate is not None:
        changed["rate"] = rate_of(config, adapter)
    return changed


def _is_host(host: str) -> bool:
    """An IP address or a DNS name (international names in their IDNA form)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        labels = host.encode("idna").decode().rstrip(".").split(".")
    except UnicodeError:  # an empty or over-long label
        return False
    return all(HOST_LABEL.match(label) for label in labels)


def _never_a_source(host: str) -> bool:
    """Whether ``host`` is an address literal where no source can be: link-local (cloud
    metadata among them), unspecified (this host) or multicast, IPv4-mapped ones too."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: what it resolves to is not known here
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address.is_unspecified or address.is_multicast


async def check_base_url(raw: str,
                         networks: source_networks.SourceNetworks | None = None) -> str:
    """The source's API address, checked: https (plain http only to loopback), a host, maybe a
    port and a path, and nothing else; without a trailing slash. Its host must be, or resolve
    now to, a public address or one in ``networks`` (SOURCE_PRIVATE_NETWORKS); connecting to it
    is checked again (see :mod:`.networks`)."""
    url = raw.strip()
    if "@" in url:
        # user:token@host would store the token in clear in base_url, shown by every listing
        # and error; the message never echoes the URL, so it cannot repeat the token either.
        raise SourceAdminError("--base-url must not hold credentials (user:token@host, or any "
                               "@): give them with --email and --token-env or stdin, never in "
                               "the URL")
    if not url.isprintable() or " " in url:
        raise SourceAdminError(f"--base-url {url!r}: no spaces or control characters")
    if "?" in url or "#" in url:
        # Request paths are appended to the base URL; a query or fragment would swallow them.
        raise SourceAdminError(f"--base-url {url!r}: no query (?) or fragment (#), only "
                               "scheme, host, port and path")
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed lazily: a port out of range or not a number raises here
    except ValueError as exc:  # e.g. an unclosed [IPv6 bracket
        raise SourceAdminError(f"--base-url {url!r} is not a valid address: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SourceAdminError(f"--base-url {url!r}: expected an https:// address such as "
                               "https://your-site.atlassian.net")
    if not _is_host(parts.hostname):
        raise SourceAdminError(f"--base-url {url!r}: {parts.hostname!r} is not a valid host")
    if port == 0:
        raise SourceAdminError(f"--base-url {url!r}: port 0 cannot be connected to")
    if _never_a_source(parts.hostname):
        # Cloud metadata (169.254.169.254) and the like: asked for by mistake or to reach what
        # the server's network holds, never a Jira, GitHub or Asana.
        raise SourceAdminError(f"--base-url {url!r}: {parts.hostname} is a link-local, "
                               "unspecified or multicast address; no source is served there")
    try:
        await source_networks.check_host(parts.hostname, source_networks.chosen(networks))
    except source_networks.PrivateAddress as exc:
        raise SourceAdminError(f"--base-url: {exc}") from None
    if parts.scheme == "http":
        # Basic auth in clear text would hand the token to anyone on the path; only loopback
        # (a local proxy or a test double) may use plain http.
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = parts.hostname == "localhost"
        if not loopback:
            raise SourceAdminError("--base-url must use https (credentials would travel in "
                                   "clear text)")
    return url.rstrip("/")


async def add_source(
    conn: asyncpg.Connection, queries: Queries, box: SecretBox, *, tenant_id: uuid.UUID,
    kind: str, name: str, base_url: str | None, projects: dict[str, str], token: str,
    email: str | None = None, overrides: dict[str, dict[str, str]] | None = None,
    rate: float | None = None, networks: source_networks.SourceNetworks | None = None,
) -> uuid.UUID:
    """Register an instance. ``email`` is for Jira Cloud's basic auth; without it a Jira token
    is a Server/Data Center bearer token. GitHub and Asana take a token alone. ``rate``: the
    requests a second it keeps to (:func:`parse_rate`), when not its kind's default.
    ``networks``: the private networks its address may be in (SOURCE_PRIVATE_NETWORKS)."""
    adapter = adapter_class(kind)
    if not 1 <= len(name.strip()) <= 200:
        raise SourceAdminError("a source name has 1 to 200 characters")
    if not token.strip():
        raise SourceAdminError("a non-empty API token is needed")
    if email is not None and not email.strip():
        raise SourceAdminError("--email is empty")
    base_url = base_url or adapter.default_base_url
    if base_url is None:
        raise SourceAdminError(f"a {kind} source needs --base-url")
    base_url = await check_base_url(base_url, networks)  # before anything is sealed or stored
    credentials = {"token": token.strip()}
    if email is not None:
        credentials["email"] = email.strip()
    if not await queries.tenant_exists(conn, tenant_id=tenant_id):
        raise SourceAdminError(f"no tenant with id {tenant_id}")
    await queries.set_tenant(conn, tenant_id=str(tenant_id))
    try:
        return await queries.source_insert(
            conn, tenant_id=tenant_id, kind=kind, name=name.strip(),
            base_url=base_url,
            config=orjson.dumps({"projects": projects, **(overrides or {}),
                                 **({"rate": rate} if rate is not None else {})}).decode(),
            credentials=box.seal(credentials))
    except asyncpg.UniqueViolationError:
        raise SourceAdminError(f"the tenant already has a source named {name.strip()!r}") from None


def _public(row: asyncpg.Record) -> dict[str, Any]:
    """A listing row: never the credentials themselves."""
    out = dict(row)
    out.pop("credentials", None)
    out["config"] = orjson.loads(out["config"]) if out.get("config") else {}
    out["sync_cursor"] = orjson.loads(out["sync_cursor"]) if out.get("sync_cursor") else None
    return out


async def _tenant_ids(conn: asyncpg.Connection, queries: Queries,
                      tenant_id: uuid.UUID | None) -> list[uuid.UUID]:
    if tenant_id is not None:
        return [tenant_id]
    return [row["tenant_id"] for row in await queries.list_tenants(conn)]


async def list_sources(conn: asyncpg.Connection, queries: Queries,
                       tenant_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for tid in await _tenant_ids(conn, queries, tenant_id):
        await queries.set_tenant(conn, tenant_id=str(tid))
        found.extend(_public(row) for row in await queries.source_list(conn))
    return found


async def find_source(conn: asyncpg.Connection, queries: Queries, instance_id: uuid.UUID, *,
                      tenant_id: uuid.UUID | None = None) -> asyncpg.Record:
    """The instance (with sealed credentials), looked for in ``tenant_id`` only when given (any
    other tenant's is not found); leaves the transaction scoped to its tenant."""
    for tid in await _tenant_ids(conn, queries, tenant_id):
        await queries.set_tenant(conn, tenant_id=str(tid))
        if (row := await queries.source_get(conn, instance_id=instance_id)) is not None:
            return row
    raise SourceAdminError(f"no source with id {instance_id}")


async def remove_source(conn: asyncpg.Connection, queries: Queries,
                        instance_id: uuid.UUID) -> None:
    await find_source(conn, queries, instance_id)
    await queries.source_delete(conn, instance_id=instance_id)


def make_adapter(row: asyncpg.Record, box: SecretBox, **client_options: Any) -> Adapter:
    """The adapter of a stored instance, with its credentials decrypted, keeping to the
    instance's request rate (a ``rate`` among ``client_options`` goes first)."""
    adapter = adapter_class(row["kind"])
    if row["credentials"] is None:
        raise SourceAdminError("the source has no credentials; remove and add it again")
    config = orjson.loads(row["config"]) if row["config"] else {}
    return adapter.from_instance(row["base_url"], box.open(row["credentials"]), config,
                                 **{"rate": rate_of(config, adapter), **client_options})


async def run_sync(
    conn: asyncpg.Connection, queries: Queries, box: SecretBox, instance_id: uuid.UUID, *,
    full: bool = False, on_page: Callable[[SyncProgress], None] | None = None,
    **client_options: Any,
) -> SyncProgress:
    """Find the instance and sync it, recorded as the CLI's (runs.recorded_sync: the server's
    lock and history); ``conn`` must be outside a transaction."""
    async with conn.transaction():
        row = await find_source(conn, queries, instance_id)
    return await recorded_sync(
        conn, queries, tenant_id=row["tenant_id"], instance_id=instance_id,
        adapter_of=lambda found: make_adapter(found, box, **client_options), trigger="cli",
        full=full, on_page=on_page)
