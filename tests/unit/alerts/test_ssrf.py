"""The SSRF guard: literal and encoded addresses, names that resolve inward, the allow-list.

Nothing here connects anywhere: refusals happen before a connection, and the one
end-to-end case targets a server on 127.0.0.1 (see test_notifiers for deliveries)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from opspilot.adapters.notify.ssrf import (
    Allowlist,
    SsrfGuard,
    TargetRefused,
    parse_ip_literal,
    refusal_reason,
)
from opspilot.domain.errors import DeliveryFailed

REFUSED_URLS = [
    "http://127.0.0.1/hook",
    "http://2130706433/hook",          # decimal
    "http://0177.0.0.1/hook",          # octal
    "http://0x7f.1/hook",              # hex, short form
    "http://0x7f000001/hook",
    "http://017700000001/hook",
    "http://127.1/hook",
    "http://0/hook",                   # 0.0.0.0
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/hook",
    "http://[0:0:0:0:0:ffff:a00:1]/hook",  # mapped 10.0.0.1
    "http://[2002:7f00:1::]/hook",     # 6to4 of 127.0.0.1
    "http://[64:ff9b::a00:1]/hook",    # NAT64 of 10.0.0.1
    "http://[::]/hook",
    "http://[fe80::1%25eth0]/hook",
    "http://[fc00::1]/hook",
    "http://10.0.0.1/hook",
    "http://10.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data",  # cloud metadata
    "http://100.64.0.1/hook",          # shared address space
    "http://224.0.0.1/hook",           # multicast
    "http://240.0.0.1/hook",           # reserved
    "http://255.255.255.255/hook",
    "http://192.0.2.10/hook",          # documentation
    "http://127.0.0.1./hook",          # trailing dot
    "http://1.2.3.4.5/hook",           # numeric but no address
    "http://256.0.0.1/hook",
    "ftp://example.com/hook",          # scheme
    "file:///etc/passwd",
    "http://user:pw@example.com/hook",  # credentials in the URL
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_every_encoded_or_inward_target_is_refused(url: str) -> None:
    with pytest.raises(TargetRefused) as caught:
        SsrfGuard(Allowlist()).check_url(url)
    assert caught.value.retryable is False and caught.value.details["field"] == "target"


@pytest.mark.parametrize(("literal", "address"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("0x7F.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("10.1", "10.0.0.1"),
    ("192.168.257", "192.168.1.1"), ("0", "0.0.0.0"), ("[::1]", "::1"),
])
def test_literals_read_like_the_c_library(literal: str, address: str) -> None:
    assert parse_ip_literal(literal) == ipaddress.ip_address(address)


def test_names_are_not_literals() -> None:
    assert parse_ip_literal("example.com") is None
    assert parse_ip_literal("cafe.de") is None
    assert parse_ip_literal("0x7f.example") is None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None
    host = f"[{address}]" if ":" in address else address
    SsrfGuard(Allowlist()).check_url(f"https://{host}/")


def test_allowlisted_address_or_network_passes() -> None:
    guard = SsrfGuard(Allowlist.parse("127.0.0.1, 10.0.0.0/8"))
    guard.check_url("http://127.0.0.1:8080/hook")
    guard.check_url("http://10.20.30.40/hook")
    guard.check_url("http://0x7f.1/hook")  # same address, however written
    with pytest.raises(TargetRefused):
        guard.check_url("http://127.0.0.2/hook")
    with pytest.raises(TargetRefused):
        guard.check_url("http://192.168.0.1/hook")


def test_allowlist_parsing() -> None:
    allow = Allowlist.parse(" Hooks.Internal. , 127.0.0.1,,[::1], 10.0.0.0/8 ")
    assert allow.hosts == frozenset({"hooks.internal"})
    assert [str(n) for n in allow.networks] == ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]
    with pytest.raises(ValueError):
        Allowlist.parse("not a host!")


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    guard = SsrfGuard(Allowlist())
    with pytest.raises(TargetRefused, match="resolves to an address notifications may not") as refused:
        await guard.check("http://localhost:9/hook")
    # what the name resolved to is not told to the caller (issue #15 item 12)
    assert "127.0.0.1" not in refused.value.message and "loopback" not in refused.value.message


async def test_an_allowlisted_name_passes_whatever_it_resolves_to() -> None:
    addresses = await SsrfGuard(Allowlist.parse("localhost")).check("http://localhost:9/")
    assert "127.0.0.1" in addresses or "::1" in addresses


async def test_a_loopback_allowlist_lets_localhost_through() -> None:
    addresses = await SsrfGuard(Allowlist.parse("127.0.0.1,::1")).check("http://localhost:9/")
    assert set(addresses) <= {"127.0.0.1", "::1"}


class Rebinding:
    """A resolver whose answers mix a public and an internal address (rebinding setup)."""

    def __init__(self, *answers: str) -> None:
        self.answers = answers
        self.calls = 0

    async def __call__(self, host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.calls += 1
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, port)) for a in self.answers
        ]


async def test_any_internal_answer_refuses_the_name() -> None:
    resolver = Rebinding("93.184.216.34", "10.0.0.7")
    with pytest.raises(TargetRefused, match="'attacker.example' resolves to an address") as refused:
        await SsrfGuard(Allowlist(), resolver).resolve("attacker.example", 80)
    assert "10.0.0.7" not in refused.value.message and "private" not in refused.value.message


async def test_resolution_returns_only_checked_addresses_to_pin() -> None:
    resolver = Rebinding("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    found = await SsrfGuard(Allowlist(), resolver).resolve("example.com", 443)
    assert [a for _, a in found] == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert resolver.calls == 1


async def test_unresolvable_name_is_retryable() -> None:
    async def nxdomain(host: str, port: int, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(DeliveryFailed) as caught:
        await SsrfGuard(Allowlist(), nxdomain).resolve("nowhere.invalid", 80)
    assert caught.value.retryable is True
