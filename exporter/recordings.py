"""Recordings: the value read from the API, a session's recordings (listed by its meeting id,
kept by `session_id`, whether or not the server honours the filter) and one recording's fresh
download URL. Every request is the API client's: paced, counted, mapped and paged alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.client import ApiClient
from exporter.http import parse_expiry
from exporter.retry import Attempts
from exporter.urls import Link

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


class RecordingsApi:
    """A session's recordings and one recording's fresh URL, over the run's API client."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    async def of_session(self, app_id: str, session_id: str, state: Attempts) -> list[Recording]:
        """The session's recordings: its meeting id from the session's details, the list by
        that meeting id, and only those whose session_id is this session's."""
        session = await self._api.get_session(app_id, session_id, state)
        meeting = session.get("associated_id")
        query = {"meeting_id": meeting} if isinstance(meeting, str) and meeting else {}
        found: list[Recording] = []
        async for page in self._api.pages(app_id, query, listing="recordings", state=state):
            for rec in map(recording_of, page.items):
                if rec.session_id is None and isinstance(rec.id, str) and rec.id:
                    # The list left it out: the recording itself says which session it is of.
                    rec = await self.one(app_id, rec.id, state)
                if rec.session_id == session_id:
                    found.append(rec)
        return found

    async def one(self, app_id: str, recording_id: str, state: Attempts) -> Recording:
        """One recording as it is now: status, size and a fresh download URL."""
        return recording_of(await self._api.get_recording(app_id, recording_id, state))
