"""The rules for links a chat participant chose: which schemes, hosts and addresses an
attachment download may reach. Pure functions over `ipaddress` and `urllib.parse`."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Named ranges a public file host never lives in. `is_global` is checked too; these give the
# refusal its reason, and hold whatever a Python version's tables may miss.
_V4_RANGES = (
    ("unspecified", ipaddress.ip_network("0.0.0.0/8")),
    ("private", ipaddress.ip_network("10.0.0.0/8")),
    ("CGNAT", ipaddress.ip_network("100.64.0.0/10")),
    ("loopback", ipaddress.ip_network("127.0.0.0/8")),
    ("link-local", ipaddress.ip_network("169.254.0.0/16")),
    ("private", ipaddress.ip_network("172.16.0.0/12")),
    ("reserved", ipaddress.ip_network("192.0.0.0/24")),
    ("private", ipaddress.ip_network("192.168.0.0/16")),
    ("reserved", ipaddress.ip_network("198.18.0.0/15")),
    ("multicast", ipaddress.ip_network("224.0.0.0/4")),
    ("reserved", ipaddress.ip_network("240.0.0.0/4")),
)
_V6_RANGES = (
    ("unspecified", ipaddress.ip_network("::/128")),
    ("loopback", ipaddress.ip_network("::1/128")),
    ("private", ipaddress.ip_network("fc00::/7")),
    ("link-local", ipaddress.ip_network("fe80::/10")),
    ("site-local", ipaddress.ip_network("fec0::/10")),
    ("multicast", ipaddress.ip_network("ff00::/8")),
)
# IPv6 forms that carry an IPv4 address, which is what the packets then reach.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64,
    IPv4-compatible), or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address: where the tunnel ends
    if any(ip in net for net in _NAT64) or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why an attachment download must not connect to `ip`, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} is a scoped (link-local) address"
        inner = embedded_ipv4(ip)
        if inner is not None:
            problem = address_problem(inner)
            return f"{ip} carries {problem}" if problem else None
        ranges: Iterable[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = _V6_RANGES
    else:
        ranges = _V4_RANGES
    for name, net in ranges:
        if ip in net:
            return f"{ip} is in the {name} range"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def parse_ip(host: str) -> IPAddress | None:
    """`host` as an address literal (brackets and an IPv6 zone allowed), or None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_of(url: str) -> str | None:
    """The link's host as written (lower case, IPv6 without brackets), or None."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host or None


def link_problem(url: str, allow_hosts: frozenset[str]) -> str | None:
    """Why `url` must be refused before any request (scheme, credentials in it, an address
    literal that is not public), or None. Names are checked again when resolved."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the link is not a valid URL"
    del port  # read for its ValueError only: a port out of range is no URL
    host = parts.hostname
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not host:
        return f"the link's scheme {scheme[:20]!r} is not https"
    if parts.username is not None or parts.password is not None:
        # aiohttp would send them as Basic credentials; the rules say none of any kind.
        return "the link carries credentials"
    allowed = host in allow_hosts
    ip = parse_ip(host)
    if scheme == "http":
        if not allowed:
            return "the link is http, not https"
        if ip is not None and not ip.is_loopback:
            return f"http is allowed to a loopback address only, not {ip}"
        return None
    if allowed or ip is None:
        return None
    return address_problem(ip)


def http_address_problem(ip: IPAddress) -> str | None:
    """For an allowed host over http: the address must be loopback."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return None if ip.is_loopback else f"http is allowed to a loopback address only, not {ip}"
