"""The recordings API: a session's recordings (listed by its meeting id, kept by `session_id`,
whether or not the server honours the filter) and one recording's fresh download URL. Every
request goes through the API client, so it is paced, counted and mapped like any other."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from exporter.client import ApiClient
from exporter.config import Settings
from exporter.errors import PermanentError
from exporter.http import parse_expiry
from exporter.retry import Attempts, RetryHook, with_retries
from exporter.urls import Link

PER_PAGE = 100
MAX_PAGES = 1000  # a list that ignores every filter must still end
UPLOADED = "UPLOADED"


@dataclass(frozen=True, slots=True)
class Recording:
    id: object  # as the API gave it: checked before it names a file
    status: str
    session_id: str | None
    output_file_name: str | None = None
    file_size: int | None = None
    link: Link | None = None


def recording_of(doc: Mapping[str, Any]) -> Recording:
    """A recording object of the API as a Recording (missing or odd fields as None)."""
    size = doc.get("file_size", doc.get("fileSize"))
    if isinstance(size, str) and size.strip().isdigit():  # the webhook sends a string
        size = int(size.strip())
    url = doc.get("download_url")
    link = Link(url, parse_expiry(doc.get("download_url_expiry"))) if isinstance(url, str) else None
    sid, name = doc.get("session_id"), doc.get("output_file_name")
    return Recording(
        id=doc.get("id"),
        status=str(doc.get("status") or "UNKNOWN")[:40],
        session_id=sid if isinstance(sid, str) else None,
        output_file_name=name if isinstance(name, str) else None,
        file_size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        link=link if url else None,
    )


def data_of(body: bytes) -> dict[str, Any]:
    """The `data` object of a 2xx answer (a session's details, one recording)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PermanentError("malformed API answer: not JSON", http_status=200) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or doc.get("success") is False:
        raise PermanentError("malformed API answer: no 'data' object", http_status=200)
    return data


def page_of_recordings(body: bytes) -> tuple[list[Recording], int | None]:
    """(recordings, paging.total_count or None) of a listing answer (`data` a plain list)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PermanentError("malformed recordings listing: not JSON", http_status=200) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, dict) and isinstance(data.get("recordings"), list):
        data = data["recordings"]  # a shape some versions of the schema use
    if not isinstance(data, list) or (isinstance(doc, dict) and doc.get("success") is False):
        raise PermanentError("malformed recordings listing: no data list", http_status=200)
    paging = doc.get("paging")
    total = paging.get("total_count") if isinstance(paging, dict) else None
    ok = isinstance(total, int) and not isinstance(total, bool) and total >= 0
    return [recording_of(r) for r in data if isinstance(r, dict)], total if ok else None


class RecordingsApi:
    """The recording requests of one run, over the shared API client."""

    def __init__(self, settings: Settings, api: ApiClient, on_retry: RetryHook) -> None:
        self._s = settings
        self._api = api
        self._on_retry = on_retry

    def url(self, app_id: str, recording_id: str | None = None) -> str:
        base = self._api.sessions_url(app_id).removesuffix("/sessions") + "/recordings"
        return base if recording_id is None else f"{base}/{quote(recording_id, safe='')}"

    async def _get(self, url: str, params: Mapping[str, str] | None, state: Attempts) -> bytes:
        async def attempt() -> bytes:
            state.http += 1
            return await self._api.get_body(url, params)

        return await with_retries(attempt, self._s.retry, state, self._on_retry)

    async def of_session(self, app_id: str, session_id: str, state: Attempts) -> list[Recording]:
        """The session's recordings: its meeting id from the session's details, the list by
        that meeting id, and only those whose session_id is this session's."""
        details = await self._get(self._api.session_url(app_id, session_id), None, state)
        data = data_of(details)
        session = data["session"] if isinstance(data.get("session"), dict) else data
        meeting = session.get("associated_id")
        query = {"meeting_id": meeting} if isinstance(meeting, str) and meeting else {}
        found: list[Recording] = []
        seen, previous = 0, None
        for page_no in range(1, MAX_PAGES + 1):
            params = {**query, "page_no": str(page_no), "per_page": str(PER_PAGE)}
            page, total = page_of_recordings(await self._get(self.url(app_id), params, state))
            ids = [r.id for r in page]
            if not page or ids == previous:
                break
            previous, seen = ids, seen + len(page)
            for rec in page:
                if rec.session_id is None and isinstance(rec.id, str) and rec.id:
                    # The list left it out: the recording itself says which session it is of.
                    rec = await self.one(app_id, rec.id, state)
                if rec.session_id == session_id:
                    found.append(rec)
            if (total is not None and seen >= total) or (total is None and len(page) < PER_PAGE):
                break
        return found

    async def one(self, app_id: str, recording_id: str, state: Attempts) -> Recording:
        """One recording as it is now: status, size and a fresh download URL."""
        data = data_of(await self._get(self.url(app_id, recording_id), None, state))
        inner = data.get("recording")
        return recording_of(inner if isinstance(inner, dict) else data)
