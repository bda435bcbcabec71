"""What may be said of a URL in logs, where a download may go, and the presigned link (a URL
and when it stops working)."""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Link:
    """A presigned download URL and when it stops working (epoch seconds; None if unknown)."""

    url: str
    expires_at: float | None

    def usable_for(self, seconds: float, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at - (time.time() if now is None else now) > seconds


def redact(url: str) -> str:
    """The URL without query or fragment: a presigned URL's query is a credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{_port(parts.port)}{parts.path}"


_QUERY = re.compile(r"""(https?://[^\s'"<>?#]*)\?[^\s'"<>]*""")


def redact_text(text: str, token: str) -> str:
    """`text` (a traceback, say) without the token and without any URL's query string."""
    if token:
        text = text.replace(token, "[token]")
    return _QUERY.sub(r"\1?[query removed]", text)


def _port(port: int | None) -> str:
    return f":{port}" if port else ""


@functools.lru_cache(maxsize=256)  # a few hosts, asked about once per download
def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def private_transport(scheme: str, host: str | None) -> bool:
    """https, or plain http to a loopback address (local testing): the one rule for every URL
    that carries a secret (the token, a presigned URL, storage credentials, a ping URL)."""
    return scheme == "https" or (scheme == "http" and is_loopback_host(host))


# The characters of a host name as DNS spells it (IDN hosts arrive in their xn-- form), or an
# IP literal; linear on purpose (no nested repeats), since the API's answer is not trusted.
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$|^\[[0-9A-Fa-f:.]+\]$")


_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def download_url_problem(url: str) -> str | None:
    """Why this download URL must not be used, or None: https only, plain http to loopback."""
    if _CONTROL_OR_SPACE.search(url):
        # A space would send us to DNS with a host that cannot exist, and CR LF in a request
        # line would let the answer inject headers: neither is in a URL an API would sign.
        return "download URL has a space or a control character"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return "download URL is malformed"
    if not parts.hostname:
        return "download URL has no host"
    netloc_host = parts.netloc.rpartition("@")[2]
    host = netloc_host.rsplit(":", 1)[0] if not netloc_host.endswith("]") else netloc_host
    if not _HOST.match(host):
        return "download URL has a malformed host"
    if private_transport(parts.scheme, parts.hostname):
        return None
    return f"download URL scheme {parts.scheme!r} refused (https only, http to loopback)"


def base_url_problem(url: str) -> str | None:
    """Why the API base URL cannot carry the token, or None: https, plain http to loopback."""
    if not url.startswith(("https://", "http://")):
        return f"--base-url must be an http(s) URL, got {url!r}"
    if not private_transport(url.split(":", 1)[0], urlsplit(url).hostname):
        # The token would cross the network in clear text.
        return f"--base-url must be https (plain http only to a loopback address), got {url!r}"
    return None
