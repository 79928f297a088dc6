"""Where a source may be reached: public addresses, and the private networks the operator lists
(SOURCE_PRIVATE_NETWORKS), loopback among them only when listed.

A tenant admin chooses a source's address; without this, the server would connect for them to
its own network (a database on loopback, a service on 10/8) and show what answers in the error.
The check is made where connections are made, on the addresses a name resolves to: a
:class:`GuardedResolver` in every source client's connector, so a name that resolves elsewhere
once the source is added (DNS rebinding) is refused all the same. Address literals never reach a
resolver; :func:`refused_literal` checks those.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["DEFAULT", "GuardedResolver", "Network", "PrivateAddress", "SourceNetworks",
           "check_host", "chosen", "from_setting", "refused_literal"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 spellings of an IPv4 address that reach it: NAT64's well-known prefix; IPv4-mapped,
# IPv4-compatible and 6to4 addresses are unwrapped by _unwrapped too.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
# How long adding a source waits for its host's name to resolve; past it, the connect-time
# check alone decides (as for a name that does not resolve yet).
LOOKUP_TIMEOUT = 5.0


class PrivateAddress(OSError):
    """A source's host is, or resolves only to, addresses sources may not reach."""


def _unwrapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclasses.dataclass(frozen=True, slots=True)
class SourceNetworks:
    """The networks sources may reach besides public addresses (SOURCE_PRIVATE_NETWORKS)."""

    listed: tuple[Network, ...] = ()

    def allows(self, address: Address) -> bool:
        if any(address in network for network in self.listed):
            return True
        plain = _unwrapped(address)
        if plain is not address and any(plain in network for network in self.listed):
            return True
        # Multicast counts as global to ipaddress; no source is served there.
        return plain.is_global and not plain.is_multicast


# What an unset SOURCE_PRIVATE_NETWORKS, or a caller naming no networks, gets: public addresses
# only. Read when a client or a check is made, never earlier: the tests list loopback here for
# their fakes, and take it out again for the tests of this rule.
DEFAULT = SourceNetworks()


def from_setting(listed: tuple[Network, ...]) -> SourceNetworks | None:
    """SOURCE_PRIVATE_NETWORKS as the networks to pass on; None when unset (:data:`DEFAULT`)."""
    return SourceNetworks(listed) if listed else None


def chosen(networks: SourceNetworks | None) -> SourceNetworks:
    return DEFAULT if networks is None else networks


def refusal(host: str, *, literal: bool) -> str:
    """The one-line refusal, the same when adding a source and when connecting to it."""
    what = "is a private address" if literal else "resolves only to private addresses"
    return (f"{host} {what}, outside the networks the operator lets sources reach "
            "(SOURCE_PRIVATE_NETWORKS)")


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a name


def refused_literal(host: str, networks: SourceNetworks) -> str | None:
    """The refusal for an address literal sources may not reach; None for names and allowed
    addresses."""
    address = _literal(host)
    if address is None or networks.allows(address):
        return None
    return refusal(host, literal=True)


def _address(entry: ResolveResult) -> Address | None:
    try:
        return ipaddress.ip_address(entry["host"])
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """The default resolver, keeping only the addresses ``networks`` allows; none left:
    :class:`PrivateAddress` (aiohttp's connector raises it as a DNS failure)."""

    def __init__(self, networks: SourceNetworks,
                 resolver: AbstractResolver | None = None) -> None:
        self._networks = networks
        self._resolver = resolver if resolver is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        allowed = [entry for entry in found
                   if (address := _address(entry)) is not None and self._networks.allows(address)]
        if not allowed:
            raise PrivateAddress(refusal(host, literal=False))
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


async def check_host(host: str, networks: SourceNetworks,
                     resolver: AbstractResolver | None = None) -> None:
    """Refuse (:class:`PrivateAddress`) a host sources may not reach: a literal outside, or a
    name resolving now to no address inside. A name that does not resolve passes: connecting
    to it is checked again."""
    if (refused := refused_literal(host, networks)) is not None:
        raise PrivateAddress(refused)
    if _literal(host) is not None:
        return
    guarded = GuardedResolver(networks, resolver)
    try:
        await asyncio.wait_for(guarded.resolve(host, 0, socket.AF_UNSPEC), LOOKUP_TIMEOUT)
    except PrivateAddress:
        raise
    except (OSError, TimeoutError):
        return
    finally:
        await guarded.close()
