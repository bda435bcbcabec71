"""The address rules for attachment links, as pure functions: no test here connects anywhere."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.addresses import address_problem, embedded_ipv4, link_problem

REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "reserved"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "reserved"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "public"),  # documentation range: not global
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "public"),  # documentation range
    # IPv6 forms that reach an IPv4 address, with a refused one inside
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("64:ff9b:1::a00:1", "private"),  # local-use NAT64 of 10.0.0.1
    ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo, client 10.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "104.16.0.1", "2606:4700::1111", "::ffff:8.8.8.8",
          "2002:808:808::1", "64:ff9b::808:808"]  # fmt: skip


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_every_non_public_range_is_refused(address: str, why: str) -> None:
    """Loopback, private, link-local, CGNAT, multicast, unspecified, reserved and their IPv6
    and IPv4-in-IPv6 forms are refused, with the range named where it has a name."""
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None
    if why != "public":
        assert why in problem


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    """A public address, plain or carried in an IPv6 form, is allowed."""
    assert address_problem(ipaddress.ip_address(address)) is None


def test_a_scoped_ipv6_address_is_refused() -> None:
    """An address with a zone (fe80::1%eth0) is link-local whatever else it says."""
    assert address_problem(ipaddress.ip_address("fe80::1%eth0")) is not None


@given(st.integers(0, 2**32 - 1))
def test_an_ipv4_address_and_its_mapped_form_get_the_same_answer(n: int) -> None:
    """::ffff:a.b.c.d reaches a.b.c.d: refused exactly when the IPv4 address is."""
    v4 = ipaddress.IPv4Address(n)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert embedded_ipv4(mapped) == v4
    assert (address_problem(mapped) is None) == (address_problem(v4) is None)


@given(st.integers(0, 2**32 - 1))
def test_cgnat_is_refused_whatever_the_host_part(n: int) -> None:
    """Every address of 100.64.0.0/10 is refused, and none outside it is called CGNAT."""
    ip = ipaddress.IPv4Address(n)
    problem = address_problem(ip) or ""
    inside = ip in ipaddress.ip_network("100.64.0.0/10")
    assert ("CGNAT" in problem) == inside


NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    ("url", "allowed", "refused"),
    [
        ("https://files.example.com/a.png", NONE, False),
        ("http://files.example.com/a.png", NONE, True),  # not https
        ("ftp://files.example.com/a.png", NONE, True),
        ("javascript:alert(1)", NONE, True),
        ("file:///etc/passwd", NONE, True),
        ("https://user:pw@files.example.com/a", NONE, True),  # credentials in the link
        ("https://127.0.0.1/a", NONE, True),
        ("https://[::1]/a", NONE, True),
        ("https://[::ffff:127.0.0.1]/a", NONE, True),
        ("https://10.1.2.3/a", NONE, True),
        ("https://8.8.8.8/a", NONE, False),
        ("https://localhost/a", NONE, False),  # a name: checked when it is resolved
        ("https://127.0.0.1/a", frozenset({"127.0.0.1"}), False),
        ("http://127.0.0.1:8080/a", frozenset({"127.0.0.1"}), False),
        ("http://localhost:8080/a", frozenset({"localhost"}), False),  # loopback checked later
        ("http://10.0.0.1/a", frozenset({"10.0.0.1"}), True),  # http to loopback only
        ("http://127.0.0.1/a", frozenset({"127.0.0.2"}), True),  # another host is allowed
        ("https://[::1]:99999/a", NONE, True),  # a port out of range
    ],
)
def test_links_are_judged_before_any_request(
    url: str, allowed: frozenset[str], refused: bool
) -> None:
    """Scheme, credentials and address literals decide before a connection; an allowed
    host is exempt, and may use http to a loopback address."""
    assert (link_problem(url, allowed) is not None) == refused
