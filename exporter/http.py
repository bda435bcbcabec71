"""The aiohttp boundary: sessions without hidden re-sends, one mapping of aiohttp's exceptions
to the error tree, `Retry-After`.

Only this module, `client` and `download` name aiohttp; everything above them sees
`ExportError`s. The API session carries the token and is used for the API base URL alone; the
download session carries no credential of any kind.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType

import aiohttp

from exporter.config import Timeouts
from exporter.errors import IncompleteDownload, TransientError
from exporter.times import parse_rfc3339

# A Retry-After beyond this is a broken proxy, not Cloudflare (whose block lasts five minutes):
# honouring "forever" would hang a cron job until the next one finds the lock held.
MAX_RETRY_AFTER = 3600.0


class HiddenRetriesNotDisabled(RuntimeError):
    """This aiohttp has no switch for its silent re-send: pacing and attempts would lie."""


def api_session(token: str, timeouts: Timeouts, concurrency: int) -> aiohttp.ClientSession:
    """The token-carrying session, for the API base URL only."""
    session = aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=timeouts.api, sock_connect=timeouts.connect),
        connector=aiohttp.TCPConnector(limit=max(concurrency, 4)),
        raise_for_status=False,
    )
    return no_hidden_retries(session)


def download_session(timeouts: Timeouts, concurrency: int) -> aiohttp.ClientSession:
    """A session with no credential of any kind, for presigned URLs."""
    session = aiohttp.ClientSession(
        # No total limit (a large file may take long); a silent socket is what we bound.
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect, sock_read=timeouts.read
        ),
        connector=aiohttp.TCPConnector(limit=max(concurrency, 4)),
        # Presigned URLs are signed over the exact path and query: send them untouched.
        requote_redirect_url=False,
        # Encoded bodies are decoded by download's decoder: aiohttp's lets a gzip stream that
        # stops early pass as complete, and hides the encoded length Content-Length counts.
        auto_decompress=False,
        # Only the encodings that decoder knows (S3 serves an object's stored encoding anyway).
        headers={"Accept-Encoding": "gzip, deflate"},
    )
    return no_hidden_retries(session)


def no_hidden_retries(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """Stop aiohttp from silently re-sending a GET whose kept-alive connection was closed.

    That re-send would start an API request the pacer never saw (the budget counts retries),
    and an attempt the manifest never counted. aiohttp (3.x) has no public switch for it, only
    the private `_retry_connection`; without it the program must not run at all, so a future
    aiohttp that drops the attribute fails here, loudly, instead of pacing wrongly.
    """
    if not hasattr(session, "_retry_connection"):
        raise HiddenRetriesNotDisabled(
            f"aiohttp {aiohttp.__version__} has no ClientSession._retry_connection: "
            "rtk-export cannot turn off its silent re-sends; install aiohttp<4 "
            "(see pyproject.toml)"
        )
    session._retry_connection = False
    return session


def describe(exc: BaseException) -> str:
    """A safe one-line description of a transport failure: no URL, so no presigned query."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or 'error'})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection broke while reading the body"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    return type(exc).__name__


class transport_errors:
    """aiohttp's failures as the error tree, once for every request (httpx's
    `map_httpcore_exceptions`): a body cut short is an IncompleteDownload, the rest transient.

    `what` starts the message ("API request failed", "download failed"). A class, not a
    @contextmanager generator: it runs twice per unit, and the generator cost shows.
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise IncompleteDownload(f"{self.what}: {describe(exc)}") from None
        if isinstance(exc, TimeoutError | aiohttp.ClientError):
            raise TransientError(f"{self.what}: {describe(exc)}") from None


async def read_capped(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None if it is longer than `limit` bytes.

    `StreamReader.read(n)` returns what has arrived, not n bytes: a listing page spread over
    several TCP segments would otherwise be cut short and read as malformed JSON.
    """
    buf = bytearray()
    while len(buf) <= limit and (chunk := await content.read(limit + 1 - len(buf))):
        buf += chunk
    return bytes(buf) if len(buf) <= limit else None


def check_length(what: str, received: int, announced: int | None) -> None:
    """A body of other than its announced Content-Length is an IncompleteDownload, in every
    fetcher (aiohttp raises for most cut bodies; this holds for the rest)."""
    if announced is not None and received != announced:
        raise IncompleteDownload(f"{what} had {received} bytes, the server announced {announced}")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    seconds = _retry_after(headers, time.time() if now is None else now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, OverflowError):
        return None


def parse_expiry(value: object) -> float | None:
    """A link's expiry, RFC 3339 or epoch seconds (or milliseconds), as epoch seconds; None if
    it cannot be read."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:  # milliseconds when too large for seconds
            seconds = float(value / 1000 if value > 1e11 else value)
        except OverflowError:  # an integer of hundreds of digits, from a hostile answer
            return None
        return seconds if math.isfinite(seconds) else None
    moment = parse_rfc3339(value)
    if moment is not None:
        return moment.timestamp()
    return None
