"""The RealtimeKit API: auth, pacing, error envelopes and their mapping to the error tree.

Only this module and `download` touch aiohttp. The session made here carries the token and is
used for the API base URL alone; downloads go through a session with no credentials at all.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from exporter.config import Settings
from exporter.errors import (
    AuthError,
    ExportError,
    PermanentError,
    RateLimited,
    TransientError,
    Unavailable,
)
from exporter.ratelimit import Pacer
from exporter.stats import Stats

# An answer larger than this is not a RealtimeKit JSON answer; reading it whole would let a
# broken proxy make us hold anything in memory.
MAX_API_BODY = 1 << 20

# Where each kind's answer names its URL and expiry (the API is not consistent about it).
LINK_KEYS = {
    "chat": ("chat_download_url", "chat_download_url_expiry"),
    "transcript": ("transcript_download_url", "transcript_download_url_expiry"),
    "summary": ("summaryDownloadUrl", "summaryDownloadUrlExpiry"),
}
_ALT_KEYS = {  # spellings seen in webhooks and other versions of the schema
    "summary": ("summary_download_url", "summary_download_url_expiry"),
    "transcript": ("transcriptDownloadUrl", "transcriptDownloadUrlExpiry"),
    "chat": ("chatDownloadUrl", "chatDownloadUrlExpiry"),
}

# Cloudflare codes and wording that mean the token itself is refused (not just one resource).
_AUTH_CODES = {9103, 9106, 9109, 10000, 10001}
_AUTH_WORDS = re.compile(r"authenticat|authoriz|permission|access token|invalid token|api token",
                         re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Link:
    """A presigned download URL and when it stops working (epoch seconds; None if unknown)."""

    url: str
    expires_at: float | None

    def usable_for(self, seconds: float, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at - (time.time() if now is None else now) > seconds


def parse_expiry(value: object) -> float | None:
    """RFC 3339 (or epoch seconds) to epoch seconds; None if it cannot be read."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:  # milliseconds when too large for seconds
            seconds = float(value / 1000 if value > 1e11 else value)
        except OverflowError:  # an integer of hundreds of digits, from a hostile answer
            return None
        return seconds if math.isfinite(seconds) else None
    if isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return dt.timestamp()
    return None


# A Retry-After beyond this is a broken proxy, not Cloudflare (whose block lasts five minutes):
# honouring "forever" would hang a cron job until the next one finds the lock held.
MAX_RETRY_AFTER = 3600.0


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


def error_from_answer(status: int, body: bytes, headers: Mapping[str, str]) -> ExportError:
    """Map an API answer that is not a success to the error tree.

    Both envelopes are read: Cloudflare's v4 `{"errors": [{code, message}]}` and RealtimeKit's
    `{"error": {code, message}}`; anything else (an HTML page from a proxy) by status alone.
    """
    code, message = _envelope_error(body)
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    retry_after = parse_retry_after(headers)
    if status == 401 or (status == 403 and (code in _AUTH_CODES or _AUTH_WORDS.search(message))):
        return AuthError(f"the API token was refused ({text})", http_status=status)
    if status == 429:
        return RateLimited(text, http_status=status, retry_after=retry_after)
    if status in (408, 409) or status >= 500:
        return TransientError(text, http_status=status, retry_after=retry_after)
    if 300 <= status < 400:
        return PermanentError(f"HTTP {status}: the API answered with a redirect, not followed",
                              http_status=status)
    return PermanentError(text, http_status=status)


def _envelope_error(body: bytes) -> tuple[int | None, str]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        return None, ""
    if not isinstance(doc, dict):
        return None, ""
    candidates: list[Any] = []
    if isinstance(doc.get("errors"), list):
        candidates.extend(doc["errors"])
    if isinstance(doc.get("error"), dict):
        candidates.append(doc["error"])
    elif isinstance(doc.get("error"), str):
        candidates.append({"message": doc["error"]})
    for err in candidates:
        if isinstance(err, dict):
            code = err.get("code")
            msg = str(err.get("message") or "")[:300]
            return (code if isinstance(code, int) else None), msg
    return None, ""


def link_from_answer(kind: str, body: bytes) -> Link:
    """The URL and expiry in a 200 answer, or a PermanentError saying what is wrong with it."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        raise PermanentError("malformed API answer: not JSON", http_status=200) from None
    if not isinstance(doc, dict):
        raise PermanentError("malformed API answer: not a JSON object", http_status=200)
    if doc.get("success") is False:
        _, message = _envelope_error(body)
        raise PermanentError(f"API answered success:false: {message or 'no message'}",
                             http_status=200)
    data = doc.get("data")
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    if not isinstance(data, dict):
        raise PermanentError("malformed API answer: no 'data' object", http_status=200)
    url_key, expiry_key = LINK_KEYS[kind]
    url, expiry = data.get(url_key), data.get(expiry_key)
    if not url:
        alt_url, alt_expiry = _ALT_KEYS[kind]
        url, expiry = data.get(alt_url), data.get(alt_expiry)
    if not isinstance(url, str) or not url:
        raise PermanentError(f"API answer has no {url_key}", http_status=200)
    return Link(url=url, expires_at=parse_expiry(expiry))


def describe_exception(exc: BaseException) -> str:
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


def no_hidden_retries(session: aiohttp.ClientSession) -> None:
    """Stop aiohttp from silently re-sending a GET whose kept-alive connection was closed.

    That retry would start an API request the pacer never saw (the budget counts retries),
    and an attempt the manifest never counted. aiohttp has no public switch for it;
    tests/test_export.py::test_transient_answers_are_retried fails if this stops working.
    """
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, up to `limit` bytes (more is a PermanentError).

    `StreamReader.read(n)` returns what has arrived, not n bytes: a listing page spread over
    several TCP segments would otherwise be cut short and read as malformed JSON.
    """
    buf = bytearray()
    while len(buf) <= limit and (chunk := await content.read(limit + 1 - len(buf))):
        buf += chunk
    if len(buf) > limit:
        raise PermanentError(f"API answer larger than {limit} bytes: not a RealtimeKit answer")
    return bytes(buf)


class ApiClient:
    """The token-carrying session: every request paced by the shared Pacer, then mapped."""

    def __init__(self, settings: Settings, pacer: Pacer, stats: Stats) -> None:
        self._settings = settings
        self._pacer = pacer
        self._stats = stats
        self._prefix = (f"{settings.base_url.rstrip('/')}/accounts/"
                        f"{quote(settings.account_id, safe='')}/realtime/kit")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        t = self._settings.timeouts
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._settings.token}"},
            timeout=aiohttp.ClientTimeout(total=t.api, sock_connect=t.connect),
            connector=aiohttp.TCPConnector(limit=max(self._settings.concurrency, 4)),
            raise_for_status=False,
        )
        no_hidden_retries(self._session)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    def sessions_url(self, app_id: str) -> str:
        """The listing of an app's sessions."""
        return f"{self._prefix}/{quote(app_id, safe='')}/sessions"

    def session_url(self, app_id: str, session_id: str, suffix: str = "") -> str:
        # Ids were checked against [A-Za-z0-9_-] by the reader; quoting is belt and braces.
        return f"{self.sessions_url(app_id)}/{quote(session_id, safe='')}{suffix}"

    async def get_json(self, url: str, params: Mapping[str, str] | None = None) -> bytes:
        """One paced GET: the raw body of a 2xx answer, or the mapped ExportError raised."""
        assert self._session is not None, "use ApiClient as an async context manager"
        ticket = await self._pacer.acquire()
        self._stats.api_requests += 1
        try:
            async with self._session.get(url, params=params, allow_redirects=False) as resp:
                body = await _read_capped(resp.content, MAX_API_BODY)
                status, headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(f"API request failed: {describe_exception(exc)}") from None
        finally:
            # The server has counted it by now, whenever it did: the window runs from here.
            self._pacer.answered(ticket)
        if 200 <= status < 300:
            return body
        err = error_from_answer(status, body, headers)
        if isinstance(err, RateLimited):
            self._stats.rate_limited += 1
            pause = err.retry_after
            if pause is None:
                pause = self._settings.retry.default_rate_limit_pause
            self._pacer.pause(pause)
        raise self._without_token(err)

    def _without_token(self, err: ExportError) -> ExportError:
        # An API, or a proxy in front of it, may echo the request's Authorization header in
        # an error message, which would then reach the manifest, the logs and the terminal.
        token = self._settings.token
        if token and token in err.message:
            err.message = err.message.replace(token, "[token]")
            err.args = (err.message,)
        return err

    async def get_link(self, app_id: str, session_id: str, kind: str) -> Link:
        """Ask for a fresh presigned URL of one session's `kind` export."""
        params: dict[str, str] | None = None
        if kind == "transcript":
            params = {"format": self._settings.transcript_format.upper()}
        url = self.session_url(app_id, session_id, f"/{kind}")
        try:
            body = await self.get_json(url, params)
        except PermanentError as exc:
            # No transcript or summary was produced for this meeting: a fact, not a failure.
            if kind != "chat" and exc.http_status == 404 and type(exc) is PermanentError:
                raise Unavailable(exc.message, http_status=404) from None
            raise
        try:
            return link_from_answer(kind, body)
        except ExportError as exc:
            raise self._without_token(exc) from None
