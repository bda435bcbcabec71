"""A webhook's raw body -> its event name and the units it names (URL, expiry, ids); pure.

Shapes are the documented ones (reference/api-notes.md, "Webhooks"): `meeting.chatSynced` is
flat, the other events nest the session in `meeting`. Nothing here logs or keeps a value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.times import parse_rfc3339

EVENTS_FOR_KIND: dict[str, str] = {
    "chat": "meeting.chatSynced",  # attachments come with the chat
    "transcript": "meeting.transcript",
    "summary": "meeting.summary",
    "recording": "recording.statusUpdate",
}
KIND_OF_EVENT = {event: kind for kind, event in EVENTS_FOR_KIND.items()}
# Where the transcript and summary events name their URL and its expiry (top level).
_LINK_FIELDS = {
    "transcript": ("transcriptDownloadUrl", "transcriptDownloadUrlExpiry"),
    "summary": ("summaryDownloadUrl", "summaryDownloadUrlExpiry"),
}
# A name, so that it is safe in a log line and a metric label; RealtimeKit's are `a.bC`.
_EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True, slots=True)
class WebhookUnit:
    """One unit a delivery names, with the presigned URL that came with it."""

    kind: str  # "chat" | "transcript" | "summary" | "recording"
    session_id: str
    url: str  # presigned download URL (a secret: never log its query)
    expiry: datetime | None  # aware UTC; None if absent or unreadable
    app_hint: str | None  # organizedBy.id (recording: also recording.organizationId)
    meeting_id: str | None = None
    recording_id: str | None = None  # recording.id (else recordingId)
    output_file_name: str | None = None
    file_size: int | None = None  # fileSize is a string in the docs' example


class Rejected(ValueError):
    """A body that is not a documented delivery; str() is the reason, safe to log."""


def is_secret_event(event: str) -> bool:
    """livestreaming.* bodies hold a stream key: nothing of them is logged or kept."""
    return event.startswith("livestreaming.")


def parse_event(raw: bytes) -> tuple[str, list[WebhookUnit]]:
    """(event name, the units it names); Rejected(reason) for a body that cannot be one.

    Other events, and recordings not yet UPLOADED, name no unit. Session ids are returned as
    sent: the caller applies the id rule.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Rejected("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise Rejected("the body is not a JSON object")
    event = doc.get("event")
    if not isinstance(event, str):
        raise Rejected("the body has no string 'event'")
    if not _EVENT_NAME.match(event):
        raise Rejected("the 'event' field is not an event name")
    kind = KIND_OF_EVENT.get(event)
    if kind is None:
        return event, []
    if kind == "chat":
        return event, [_chat(doc)]
    if kind == "recording":
        return event, _recording(doc)
    return event, [_linked(doc, kind, event)]


def _chat(doc: Mapping[str, Any]) -> WebhookUnit:
    meeting = _object(doc, "meeting", "meeting.chatSynced", required=False)
    session_id = _text(doc.get("sessionId")) or _text(meeting.get("sessionId"))
    if session_id is None:
        raise Rejected("meeting.chatSynced has no string sessionId")
    url = _url(doc.get("chatDownloadUrl"), "meeting.chatSynced", "chatDownloadUrl")
    return WebhookUnit(
        kind="chat",
        session_id=session_id,
        url=url,
        expiry=parse_expiry(doc.get("chatDownloadUrlExpiry")),
        app_hint=_organizer(doc) or _organizer(meeting),
        meeting_id=_text(doc.get("meetingId")) or _text(meeting.get("id")),
    )


def _linked(doc: Mapping[str, Any], kind: str, event: str) -> WebhookUnit:
    meeting = _object(doc, "meeting", event, required=True)
    session_id = _text(meeting.get("sessionId"))
    if session_id is None:
        raise Rejected(f"{event} has no string meeting.sessionId")
    url_key, expiry_key = _LINK_FIELDS[kind]
    return WebhookUnit(
        kind=kind,
        session_id=session_id,
        url=_url(doc.get(url_key), event, url_key),
        expiry=parse_expiry(doc.get(expiry_key)),
        app_hint=_organizer(meeting) or _organizer(doc),
        meeting_id=_text(meeting.get("id")),
    )


def _recording(doc: Mapping[str, Any]) -> list[WebhookUnit]:
    event = "recording.statusUpdate"
    recording = _object(doc, "recording", event, required=True)
    if recording.get("status") != "UPLOADED":
        return []  # only an uploaded recording has a file to fetch
    meeting = _object(doc, "meeting", event, required=False)
    session_id = _text(meeting.get("sessionId")) or _text(recording.get("sessionId"))
    if session_id is None:
        raise Rejected(f"{event} has no string meeting.sessionId")
    recording_id = _text(recording.get("id")) or _text(recording.get("recordingId"))
    if recording_id is None:
        raise Rejected(f"{event} has no string recording.id")
    return [
        WebhookUnit(
            kind="recording",
            session_id=session_id,
            url=_url(recording.get("downloadUrl"), event, "recording.downloadUrl"),
            expiry=parse_expiry(recording.get("downloadUrlExpiry")),
            app_hint=_organizer(meeting) or _text(recording.get("organizationId")),
            meeting_id=_text(meeting.get("id")) or _text(recording.get("meetingId")),
            recording_id=recording_id,
            output_file_name=_text(recording.get("outputFileName")),
            file_size=_size(recording.get("fileSize")),
        )
    ]


def _object(doc: Mapping[str, Any], key: str, event: str, *, required: bool) -> dict[str, Any]:
    value = doc.get(key)
    if isinstance(value, dict):
        return value
    if value is None and not required:
        return {}
    raise Rejected(f"{event}: '{key}' is {'missing' if value is None else 'not an object'}")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _url(value: object, event: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise Rejected(f"{event} has no string {key}")
    return value


def _organizer(obj: Mapping[str, Any]) -> str | None:
    organizer = obj.get("organizedBy")
    return _text(organizer.get("id")) if isinstance(organizer, dict) else None


def _size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def parse_expiry(value: object) -> datetime | None:
    """An expiry as an aware UTC datetime: RFC 3339, or epoch seconds (or milliseconds);
    None if absent or unreadable."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value / 1000 if value > 1e11 else value)
            return datetime.fromtimestamp(seconds, UTC) if math.isfinite(seconds) else None
        moment = parse_rfc3339(value)
        return moment.astimezone(UTC) if moment is not None else None
    except (OverflowError, OSError, ValueError):  # year 10000, an integer of 400 digits
        return None
