"""What may be said of a URL in logs, and where a download may go."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def redact(url: str) -> str:
    """The URL without query or fragment: a presigned URL's query is a credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{_port(parts.port)}{parts.path}"


def _port(port: int | None) -> str:
    return f":{port}" if port else ""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def download_url_problem(url: str) -> str | None:
    """Why this download URL must not be used, or None: https only, plain http to loopback."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return "download URL is malformed"
    if not parts.hostname:
        return "download URL has no host"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return None
    return f"download URL scheme {parts.scheme!r} refused (https only, http to loopback)"
