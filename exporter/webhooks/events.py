"""A delivery's body -> its event name and the units it names (kind, session, URL, expiry,
the app hint): pure, and total: anything that is not a documented shape is `Rejected` with a
reason safe to log, never another exception."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from exporter.http import parse_expiry

EVENTS_FOR_KIND = {
    "chat": "meeting.chatSynced",
    "transcript": "meeting.transcript",
    "summary": "meeting.summary",
    "recording": "recording.statusUpdate",
}
UPLOADED = "UPLOADED"


@dataclass(frozen=True, slots=True)
class WebhookUnit:
    kind: str  # "chat" | "transcript" | "summary" | "recording"
    session_id: str
    url: str  # a presigned URL: a secret, never logged with its query
    expiry: float | None  # epoch seconds, as exporter.urls.Link keeps it
    app_hint: str | None  # organizedBy.id (a recording's organizationId as a fallback)
    meeting_id: str | None = None
    recording_id: str | None = None
    output_file_name: str | None = None
    file_size: int | None = None


class Rejected(ValueError):
    """A signed body that names nothing usable; str() is the reason, safe to log."""


def is_secret_event(event: str) -> bool:
    """livestreaming.* carries a stream key: nothing of it is logged or kept."""
    return event.startswith("livestreaming.")


def _str(doc: Any, *path: str) -> str | None:
    for name in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(name)
    return doc if isinstance(doc, str) and doc else None


def _need(value: str | None, what: str, event: str) -> str:
    if value is None:
        raise Rejected(f"{event} without {what}")
    return value


def _size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():  # the docs' example: a string
        return int(value.strip())
    return None


def parse_event(raw: bytes) -> tuple[str, list[WebhookUnit]]:
    """(event, units): the four archivable events give one unit each (a recording not yet
    UPLOADED none); any other event, none. Rejected when the body cannot be read."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Rejected("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise Rejected("the body is not a JSON object")
    event = doc.get("event")
    if not isinstance(event, str) or not event:
        raise Rejected("the body names no event")
    if len(event) > 100:
        raise Rejected("the event name is too long")
    if event == "meeting.chatSynced":  # flat: no meeting object
        return event, [_unit("chat", doc, event, "chatDownloadUrl", _str(doc, "sessionId"))]
    if event == "meeting.transcript":
        sid = _str(doc, "meeting", "sessionId")
        return event, [_unit("transcript", doc, event, "transcriptDownloadUrl", sid)]
    if event == "meeting.summary":
        sid = _str(doc, "meeting", "sessionId")
        return event, [_unit("summary", doc, event, "summaryDownloadUrl", sid)]
    if event == "recording.statusUpdate":
        return event, _recording(doc, event)
    return event, []


def _unit(kind: str, doc: dict[str, Any], event: str, url_key: str, sid: str | None) -> WebhookUnit:
    meeting = doc.get("meeting") if isinstance(doc.get("meeting"), dict) else doc
    return WebhookUnit(
        kind=kind,
        session_id=_need(sid, "a session id", event),
        url=_need(_str(doc, url_key), url_key, event),
        expiry=parse_expiry(doc.get(url_key + "Expiry")),
        app_hint=_str(meeting, "organizedBy", "id") or _str(doc, "organizedBy", "id"),
        meeting_id=_str(doc, "meetingId") or _str(meeting, "id"),
    )


def _recording(doc: dict[str, Any], event: str) -> list[WebhookUnit]:
    rec = doc.get("recording")
    if not isinstance(rec, dict):
        raise Rejected(f"{event} without a recording object")
    if rec.get("status") != UPLOADED:
        return []
    sid = _str(doc, "meeting", "sessionId") or _str(rec, "sessionId")
    return [
        WebhookUnit(
            kind="recording",
            session_id=_need(sid, "a session id", event),
            url=_need(_str(rec, "downloadUrl"), "recording.downloadUrl", event),
            expiry=parse_expiry(rec.get("downloadUrlExpiry")),
            app_hint=_str(doc, "meeting", "organizedBy", "id") or _str(rec, "organizationId"),
            meeting_id=_str(rec, "meetingId") or _str(doc, "meeting", "id"),
            recording_id=_need(
                _str(rec, "id") or _str(rec, "recordingId"), "a recording id", event
            ),
            output_file_name=_str(rec, "outputFileName"),
            file_size=_size(rec.get("fileSize")),
        )
    ]
