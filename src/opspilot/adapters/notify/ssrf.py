"""The guard between user-supplied URLs and the network (webhook and Slack channels).

A target is refused when its host is, or resolves to, an address that is not globally
routable: loopback, private, link-local, multicast, reserved, unspecified, shared (CGNAT),
documentation. Literal hosts are read the way the C library would read them, so encoded
forms (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`) and IPv6 forms that embed an IPv4
address (`::ffff:127.0.0.1`, 6to4, Teredo, NAT64) cannot hide a loopback or private target.

Names are resolved once, by `GuardedResolver` inside the HTTP client's connector: every
address the name resolves to is checked, and the client connects only to the addresses
that passed. There is no second lookup for an attacker's DNS to answer differently (DNS
rebinding). Redirects are not followed (the webhook client refuses 3xx answers).

The allow-list (`OPSPILOT_WEBHOOK_ALLOWLIST`: comma-separated host names, IP addresses or
CIDRs) lets an operator reach internal receivers on purpose: a listed host name passes
whatever it resolves to; a listed address or network passes that address.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from opspilot.domain.errors import DeliveryFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AddrInfo = tuple[Any, ...]
GetAddrInfo = Callable[..., Awaitable[list[AddrInfo]]]

_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
ALLOWED_SCHEMES = ("http", "https")
log = logging.getLogger(__name__)


class TargetRefused(DeliveryFailed):
    """The target is not one the notifier may contact. Never worth retrying."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, retryable=False, field="target", **details)


@attrs.frozen
class Allowlist:
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> Allowlist:
        """`"hooks.internal, 127.0.0.1, 10.0.0.0/8"` → Allowlist; raises ValueError on an
        entry that is neither a host name nor an address/CIDR."""
        entries = text.split(",") if isinstance(text, str) else list(text or ())
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not re.fullmatch(r"[a-z0-9_.\-]+", entry):
                    raise ValueError(f"allow-list entry {raw!r} is not a host or CIDR") from None
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return normalise_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


def normalise_host(host: str) -> str:
    return host.strip().lower().strip("[]").rstrip(".")


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a literal host denotes, in any form the C library accepts; None for a
    name. Raises TargetRefused for a numeric-looking host that is not a valid address."""
    text = normalise_host(host)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    parts = text.split(".")
    if not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    try:
        return ipaddress.IPv4Address(_inet_aton(parts))
    except ValueError:
        raise TargetRefused(f"host {host!r} is a malformed numeric address") from None


def _inet_aton(parts: list[str]) -> int:
    """BSD `inet_aton`: 1-4 parts, each decimal, octal (0…) or hex (0x…); the last part
    fills the remaining bytes (`127.1` is 127.0.0.1, `2130706433` is 127.0.0.1)."""
    if not 1 <= len(parts) <= 4:
        raise ValueError("1-4 parts")
    values = [_number(p) for p in parts]
    head, last = values[:-1], values[-1]
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise ValueError("part out of range")
    address = 0
    for value in head:
        address = address << 8 | value
    return address << 8 * (5 - len(values)) | last


def _number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    packed = int(address)
    if address in _NAT64 or (packed >> 32 == 0 and packed > 1):  # NAT64 or ::a.b.c.d
        found.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    return found


def refusal_reason(address: IPAddress) -> str | None:
    """Why the address may not be contacted, or None when it is globally routable."""
    for candidate in (*embedded_ipv4(address), address):
        for reason, hit in (
            ("unspecified", candidate.is_unspecified),
            ("loopback", candidate.is_loopback),
            ("link-local", candidate.is_link_local),
            ("multicast", candidate.is_multicast),
            ("private", candidate.is_private),
            ("reserved", candidate.is_reserved),
            ("not globally routable", not candidate.is_global),
        ):
            if hit:
                return reason if candidate is address else f"{reason} (embedded {candidate})"
    return None


class SsrfGuard:
    def __init__(self, allowlist: Allowlist, getaddrinfo: GetAddrInfo | None = None) -> None:
        self.allowlist = allowlist
        self._getaddrinfo = getaddrinfo

    def check_url(self, url: str | URL) -> URL:
        """Scheme, host and literal address of a target, without any lookup. Names are
        checked when they are resolved (`resolve`)."""
        parsed = url if isinstance(url, URL) else URL(url)
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise TargetRefused(f"scheme {parsed.scheme!r} is not allowed; use http or https")
        if not parsed.host:
            raise TargetRefused("the URL has no host")
        if parsed.user is not None or parsed.password is not None:
            raise TargetRefused("credentials in the URL are not allowed")
        literal = parse_ip_literal(parsed.host)
        if literal is not None:
            self.check_address(parsed.host, literal)
        return parsed

    def check_address(self, host: str, address: IPAddress) -> None:
        if self.allowlist.allows_host(host) or self.allowlist.allows_address(address):
            return
        reason = refusal_reason(address)
        if reason is None:
            return
        if parse_ip_literal(host) is not None:  # the caller wrote the address: say what it is
            raise TargetRefused(f"target {host!r} is {reason}; allow-list it in "
                                "OPSPILOT_WEBHOOK_ALLOWLIST to reach it")
        # A name: what it resolved to is the server's view of its network, not the caller's
        # to learn (the answer would map internal names to addresses), so it is not said.
        log.info("notification target %r refused: it resolves to %s (%s)", host, address, reason)
        raise TargetRefused(f"target {host!r} resolves to an address notifications may not "
                            "reach (not a public one); allow-list the host in "
                            "OPSPILOT_WEBHOOK_ALLOWLIST to reach it")

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_UNSPEC
    ) -> list[tuple[int, str]]:
        """Every (family, address) of `host`, each checked; raises TargetRefused if any is
        refused, DeliveryFailed(retryable) when the name does not resolve now."""
        literal = parse_ip_literal(host)
        if literal is not None:
            self.check_address(host, literal)
            fam = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [(fam, str(literal))]
        getaddrinfo = self._getaddrinfo or _loop_getaddrinfo
        try:
            infos = await getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise DeliveryFailed(f"cannot resolve {host!r}: {exc}", retryable=True) from None
        found: list[tuple[int, str]] = []
        for info_family, _, _, _, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            self.check_address(host, address)
            found.append((int(info_family), str(sockaddr[0])))
        if not found:
            raise DeliveryFailed(f"{host!r} resolves to no address", retryable=True)
        return list(dict.fromkeys(found))

    async def check(self, url: str | URL) -> list[str]:
        """The whole check of a URL, lookup included; returns the addresses it may use."""
        parsed = self.check_url(url)
        assert parsed.host is not None
        return [address for _, address in await self.resolve(parsed.host, parsed.port or 0)]


async def _loop_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[AddrInfo]:
    import asyncio

    return await asyncio.get_running_loop().getaddrinfo(host, port, **kwargs)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that hands the connector only checked addresses (the pin)."""

    def __init__(self, guard: SsrfGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        resolved = await self._guard.resolve(host, port, family)
        return [
            ResolveResult(hostname=host, host=address, port=port, family=fam, proto=0,
                          flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
            for fam, address in resolved
        ]

    async def close(self) -> None:
        return None
