"""The RealtimeKit API: URLs, the token's session, pacing, envelopes, and pages.

Every request is paced by the shared Pacer and counted; every answer goes through one envelope
check and one error mapping. Listing pages come as an async iterator that knows the paging
quirks of the servers seen (a page_no ignored, a per_page capped without a word).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
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
    transient_status,
)
from exporter.http import (
    api_session,
    parse_expiry,
    parse_retry_after,
    read_capped,
    transport_errors,
)
from exporter.ratelimit import Pacer
from exporter.retry import Attempts, RetryHook, with_retries
from exporter.stats import Stats
from exporter.urls import Link

log = logging.getLogger(__name__)

# An answer larger than this is not a RealtimeKit JSON answer; reading it whole would let a
# broken proxy make us hold anything in memory.
MAX_API_BODY = 1 << 20
# Sources give no maximum; 100 keeps listing cheap against the budget (one request per 100
# sessions) and a page far under the 1 MiB answer cap.
PER_PAGE = 100
MAX_PAGES = 100_000  # a server that never stops paging must not keep a run going for ever

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
_AUTH_WORDS = re.compile(
    r"authenticat|authoriz|permission|access token|invalid token|api token", re.IGNORECASE
)


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
    if transient_status(status):  # 429 is taken above: it pauses every request
        return TransientError(text, http_status=status, retry_after=retry_after)
    if 300 <= status < 400:
        return PermanentError(
            f"HTTP {status}: the API answered with a redirect, not followed", http_status=status
        )
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


def envelope(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the answer, its `data` object) of a 2xx answer; a PermanentError saying what is wrong
    otherwise. The one check of every answer's envelope."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PermanentError("malformed API answer: not JSON", http_status=200) from None
    if not isinstance(doc, dict):
        raise PermanentError("malformed API answer: not a JSON object", http_status=200)
    if doc.get("success") is False:
        _, message = _envelope_error(body)
        raise PermanentError(
            f"API answered success:false: {message or 'no message'}", http_status=200
        )
    data = doc.get("data")
    if not isinstance(data, dict):
        raise PermanentError("malformed API answer: no 'data' object", http_status=200)
    return doc, data


def link_from_answer(kind: str, body: bytes) -> Link:
    """The URL and expiry in a 200 answer, or a PermanentError saying what is wrong with it."""
    _, data = envelope(body)
    if isinstance(data.get("data"), dict):
        data = data["data"]
    url_key, expiry_key = LINK_KEYS[kind]
    url, expiry = data.get(url_key), data.get(expiry_key)
    if not url:
        alt_url, alt_expiry = _ALT_KEYS[kind]
        url, expiry = data.get(alt_url), data.get(alt_expiry)
    if not isinstance(url, str) or not url:
        raise PermanentError(f"API answer has no {url_key}", http_status=200)
    return Link(url=url, expires_at=parse_expiry(expiry))


def page_of(body: bytes) -> tuple[list[Any], int | None]:
    """(sessions, paging.total_count or None) from a listing answer."""
    doc, data = envelope(body)
    sessions = data.get("sessions")
    if not isinstance(sessions, list):
        raise PermanentError("malformed listing: no data.sessions list", http_status=200)
    paging = doc.get("paging") if isinstance(doc.get("paging"), dict) else data.get("paging")
    total = paging.get("total_count") if isinstance(paging, dict) else None
    ok = isinstance(total, int) and not isinstance(total, bool) and total >= 0
    return sessions, total if ok else None


def session_of(body: bytes) -> dict[str, Any]:
    """The session in a session-details answer: `data`, or `data.session` (older schema)."""
    _, data = envelope(body)
    inner = data.get("session")
    session = inner if isinstance(inner, dict) else data
    if not isinstance(session.get("id"), str):
        raise PermanentError("malformed session details: no session id", http_status=200)
    return session


def webhooks_of(body: bytes) -> list[dict[str, Any]]:
    """The webhooks in a listing answer (`data` a list; `data.webhooks` also read)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise PermanentError("malformed webhook listing: not JSON", http_status=200) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, dict):
        data = data.get("webhooks")
    if not isinstance(data, list) or (isinstance(doc, dict) and doc.get("success") is False):
        raise PermanentError("malformed webhook listing: no data list", http_status=200)
    return [w for w in data if isinstance(w, dict) and isinstance(w.get("id"), str)]


def webhook_of(body: bytes) -> dict[str, Any]:
    """The webhook in a create, read or update answer."""
    _, data = envelope(body)
    if not isinstance(data.get("id"), str) or not data["id"]:
        raise PermanentError("malformed webhook answer: no id", http_status=200)
    return data


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    sessions: list[Any]


class ApiClient:
    """The token-carrying session: every request paced by the shared Pacer, then mapped."""

    def __init__(
        self, settings: Settings, pacer: Pacer, stats: Stats, on_retry: RetryHook | None = None
    ) -> None:
        self._settings = settings
        self._pacer = pacer
        self._stats = stats
        self._on_retry = on_retry
        self._prefix = (
            f"{settings.base_url.rstrip('/')}/accounts/"
            f"{quote(settings.account_id, safe='')}/realtime/kit"
        )
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        s = self._settings
        self._session = api_session(s.token, s.timeouts, s.concurrency)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def sessions_url(self, app_id: str) -> str:
        """The listing of an app's sessions."""
        return f"{self._prefix}/{quote(app_id, safe='')}/sessions"

    def session_url(self, app_id: str, session_id: str, suffix: str = "") -> str:
        # Ids were checked against [A-Za-z0-9_-] by the reader; quoting is belt and braces.
        return f"{self.sessions_url(app_id)}/{quote(session_id, safe='')}{suffix}"

    async def get_body(self, url: str, params: Mapping[str, str] | None = None) -> bytes:
        """One paced GET: the raw body of a 2xx answer, or the mapped ExportError raised."""
        assert self._session is not None, "use ApiClient as an async context manager"
        ticket = await self._pacer.acquire()
        self._stats.api_requests += 1
        try:
            with transport_errors("API request failed"):
                async with self._session.get(url, params=params, allow_redirects=False) as resp:
                    body = await read_capped(resp.content, MAX_API_BODY)
                    status, headers = resp.status, resp.headers
        finally:
            # The server has counted it by now, whenever it did: the window runs from here.
            self._pacer.answered(ticket)
        return self._checked(status, headers, body)

    def _checked(self, status: int, headers: Mapping[str, str], body: bytes | None) -> bytes:
        """The body of a 2xx answer; else the mapped ExportError (a 429 pauses the pacer)."""
        if body is None:
            raise PermanentError(
                f"API answer larger than {MAX_API_BODY} bytes: not a RealtimeKit answer"
            )
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

    async def send_json(self, method: str, url: str, fields: Mapping[str, Any]) -> bytes:
        """One paced request with a JSON body (webhook registration): the raw body of a 2xx
        answer, or the mapped ExportError raised."""
        assert self._session is not None, "use ApiClient as an async context manager"
        ticket = await self._pacer.acquire()
        self._stats.api_requests += 1
        try:
            with transport_errors("API request failed"):
                async with self._session.request(
                    method, url, json=dict(fields), allow_redirects=False
                ) as resp:
                    body = await read_capped(resp.content, MAX_API_BODY)
                    status, headers = resp.status, resp.headers
        finally:
            self._pacer.answered(ticket)
        return self._checked(status, headers, body)

    def webhooks_url(self, app_id: str, webhook_id: str | None = None) -> str:
        url = f"{self._prefix}/{quote(app_id, safe='')}/webhooks"
        return url if webhook_id is None else f"{url}/{quote(webhook_id, safe='')}"

    async def list_webhooks(self, app_id: str) -> list[dict[str, Any]]:
        """The app's registered webhooks; the GET retried as the policy says."""
        body = await self._retried(self.webhooks_url(app_id), {}, f"webhooks of {app_id}")
        return webhooks_of(body)

    async def create_webhook(self, app_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new webhook, one attempt: a POST sent again could register it twice (the
        caller lists again before another try)."""
        return webhook_of(await self.send_json("POST", self.webhooks_url(app_id), fields))

    async def update_webhook(
        self, app_id: str, webhook_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PATCH the given fields of a webhook; retried (the same PATCH twice is one)."""
        url = self.webhooks_url(app_id, webhook_id)
        body = await with_retries(
            lambda: self.send_json("PATCH", url, fields),
            self._settings.retry,
            Attempts(what=f"webhook {webhook_id}"),
            self._on_retry,
        )
        return webhook_of(body)

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
            body = await self.get_body(url, params)
        except PermanentError as exc:
            # No transcript or summary was produced for this meeting: a fact, not a failure.
            if kind != "chat" and exc.http_status == 404 and type(exc) is PermanentError:
                raise Unavailable(exc.message, http_status=404) from None
            raise
        try:
            return link_from_answer(kind, body)
        except ExportError as exc:
            raise self._without_token(exc) from None

    async def get_session(self, app_id: str, session_id: str) -> dict[str, Any]:
        """One session's details, breakout rooms included; retried as the policy says."""
        url = self.session_url(app_id, session_id)
        body = await self._retried(
            url, {"include_breakout_rooms": "true"}, f"session {app_id}/{session_id}"
        )
        return session_of(body)

    async def _retried(self, url: str, params: Mapping[str, str], what: str) -> bytes:
        return await with_retries(
            lambda: self.get_body(url, params),
            self._settings.retry,
            Attempts(what=what),
            self._on_retry,
        )

    async def pages(
        self, app_id: str, query: Mapping[str, str], per_page: int = PER_PAGE
    ) -> AsyncIterator[Page]:
        """Every page of an app's session listing, each request retried, until the end.

        The paging fields are optional: without them a short page is the last one, except a
        short first page, which may be a server capping per_page silently: page 2 tells (empty:
        it was all; more: the cap is the page size from now on). A page that repeats the one
        before means the server ignores page_no: a PermanentError, not a loop, unless page 1
        was short and so held everything.
        """
        url = self.sessions_url(app_id)
        seen, previous, page_size = 0, None, per_page
        for page_no in range(1, MAX_PAGES + 1):
            params = {**query, "per_page": str(per_page), "page_no": str(page_no)}
            sessions, total = page_of(await self._retried(url, params, f"listing {app_id}"))
            ids = [s.get("id") if isinstance(s, dict) else None for s in sessions]
            if ids and ids == previous:
                if total is None and page_no == 2 and page_size < per_page:
                    return  # page 1 was short, so it held everything: nothing is missing
                raise PermanentError(
                    f"page {page_no} repeats page {page_no - 1}: the server "
                    "seems to ignore page_no; later sessions may be missing"
                )
            if page_no == 2 and sessions and page_size < per_page:
                log.info(
                    "app %s: the server serves %d sessions a page, not %d",
                    app_id,
                    page_size,
                    per_page,
                )
            previous = ids
            seen += len(sessions)
            yield Page(page_no, sessions)
            if not sessions or (total is not None and seen >= total):
                return
            if total is None:
                if page_no == 1 and len(sessions) < per_page:
                    page_size = len(sessions)
                elif len(sessions) < page_size:
                    return
        raise PermanentError(f"more than {MAX_PAGES} pages of sessions: gave up")
