"""The RealtimeKit API: URLs, the token's session, pacing, and pages.

Every request is paced by the shared Pacer and counted; every answer goes through the one
envelope check and error mapping of `exporter.answers`. Listing pages (sessions, recordings)
come as an async iterator that knows the paging quirks of the servers seen (a page_no
ignored, a per_page capped without a word).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from exporter.answers import (
    envelope,
    error_from_answer,
    link_from_answer,
    page_of,
    recordings_page_of,
    session_of,
    webhook_of,
    webhooks_of,
)
from exporter.config import Settings
from exporter.errors import ExportError, PermanentError, RateLimited, Unavailable
from exporter.http import api_session, read_capped, transport_errors
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

# The listings `pages()` walks: each one's answer read as (items, total_count or None).
LISTINGS: dict[str, Callable[[bytes], tuple[list[Any], int | None]]] = {
    "sessions": page_of,
    "recordings": recordings_page_of,
}


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    items: list[Any]  # sessions or recordings, as the listing gave them


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
        state = Attempts(what=f"webhooks of {app_id}")
        body = await self._retried(self.webhooks_url(app_id), {}, state)
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

    async def get_session(
        self, app_id: str, session_id: str, state: Attempts | None = None
    ) -> dict[str, Any]:
        """One session's details, breakout rooms included; retried as the policy says."""
        url = self.session_url(app_id, session_id)
        state = state if state is not None else Attempts(what=f"session {app_id}/{session_id}")
        return session_of(await self._retried(url, {"include_breakout_rooms": "true"}, state))

    def recordings_url(self, app_id: str, recording_id: str | None = None) -> str:
        url = f"{self._prefix}/{quote(app_id, safe='')}/recordings"
        return url if recording_id is None else f"{url}/{quote(recording_id, safe='')}"

    async def get_recording(self, app_id: str, rid: str, state: Attempts) -> dict[str, Any]:
        """One recording as it is now (`data`, or `data.recording`); retried."""
        _, data = envelope(await self._retried(self.recordings_url(app_id, rid), {}, state))
        inner = data.get("recording")
        return inner if isinstance(inner, dict) else data

    async def _retried(self, url: str, params: Mapping[str, str], state: Attempts) -> bytes:
        async def attempt() -> bytes:
            state.http += 1  # every request counts in the manifest's `attempts`
            return await self.get_body(url, params)

        return await with_retries(attempt, self._settings.retry, state, self._on_retry)

    async def pages(
        self,
        app_id: str,
        query: Mapping[str, str],
        per_page: int = PER_PAGE,
        *,
        listing: str = "sessions",
        state: Attempts | None = None,
    ) -> AsyncIterator[Page]:
        """Every page of an app's listing (`LISTINGS`), each request retried, until the end;
        `state`, if given, holds the attempts of every page (a recording unit's).

        The paging fields are optional: without them a short page is the last one, except a
        short first page, which may be a server capping per_page silently: page 2 tells (empty:
        it was all; more: the cap is the page size from now on). A page that repeats the one
        before means the server ignores page_no: a PermanentError, not a loop, unless page 1
        was short and so held everything.
        """
        url = self.recordings_url(app_id) if listing == "recordings" else self.sessions_url(app_id)
        read, seen, previous, page_size = LISTINGS[listing], 0, None, per_page
        for page_no in range(1, MAX_PAGES + 1):
            params = {**query, "per_page": str(per_page), "page_no": str(page_no)}
            # Each page its own attempts, unless a unit's state is given to count them all.
            attempts = state if state is not None else Attempts(what=f"listing {app_id}")
            items, total = read(await self._retried(url, params, attempts))
            ids = [s.get("id") if isinstance(s, dict) else None for s in items]
            if ids and ids == previous:
                if total is None and page_no == 2 and page_size < per_page:
                    return  # page 1 was short, so it held everything: nothing is missing
                raise PermanentError(
                    f"page {page_no} repeats page {page_no - 1}: the server "
                    f"seems to ignore page_no; later {listing} may be missing"
                )
            if page_no == 2 and items and page_size < per_page:
                log.info(
                    "app %s: the server serves %d %s a page, not %d",
                    app_id,
                    page_size,
                    listing,
                    per_page,
                )
            previous = ids
            seen += len(items)
            yield Page(page_no, items)
            if not items or (total is not None and seen >= total):
                return
            if total is None:
                if page_no == 1 and len(items) < per_page:
                    page_size = len(items)
                elif len(items) < page_size:
                    return
        raise PermanentError(f"more than {MAX_PAGES} pages of {listing}: gave up")
