"""Webhook payloads -> units: the documented shapes (api-notes, "Webhooks"), and hostile ones,
which only ever raise Rejected with a reason that holds nothing of the payload."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.webhooks.events import (
    EVENTS_FOR_KIND,
    Rejected,
    WebhookUnit,
    is_secret_event,
    parse_event,
    parse_expiry,
)

SID = "05e57591-d89e-45c9-ae44-08dc1eaad0e0"
MID = "bbb8940e-1b97-402a-97d6-2708b7feca41"
ORG = "c94c437b-592a-4a39-b9e2-47ef1451e43b"
QUERY = "X-Amz-Signature=deadbeefSECRET"
MEETING = {
    "id": MID,
    "sessionId": SID,
    "title": "Weekly sync",
    "status": "LIVE",
    "createdAt": "2026-06-03T10:00:00.000Z",
    "startedAt": "2026-06-03T10:00:00.000Z",
    "endedAt": "2026-06-03T10:30:00.000Z",
    "organizedBy": {"id": ORG, "name": "Example organization"},
}
# The docs' examples, with presigned-looking URLs.
DOCUMENTED: dict[str, dict[str, Any]] = {
    "chat": {
        "event": "meeting.chatSynced",
        "title": "Weekly sync",
        "endedAt": "2026-06-03T10:30:00.000Z",
        "createdAt": "2026-06-03T10:00:00.000Z",
        "meetingId": MID,
        "sessionId": SID,
        "startedAt": "2026-06-03T10:00:00.000Z",
        "chatDownloadUrl": f"https://example.com/chat.json?{QUERY}",
        "chatDownloadUrlExpiry": "2026-06-10T10:30:00.000Z",
        "organizedBy": {"id": ORG, "name": "Example organization"},
    },
    "transcript": {
        "event": "meeting.transcript",
        "meeting": MEETING,
        "transcriptDownloadUrl": f"https://example.com/transcript.csv?{QUERY}",
        "transcriptDownloadUrlExpiry": "2026-06-10T10:30:00.000Z",
    },
    "summary": {
        "event": "meeting.summary",
        "meeting": {"id": MID, "sessionId": SID, "organizedBy": {"id": ORG, "name": "Org"}},
        "summaryDownloadUrl": f"https://example.com/summary.txt?{QUERY}",
        "summaryDownloadUrlExpiry": "2026-06-10T10:30:00.000Z",
    },
    "recording": {
        "event": "recording.statusUpdate",
        "recording": {
            "id": "97cb480d-5840-4528-ace3-919b5e386c68",
            "recordingId": "97cb480d-5840-4528-ace3-919b5e386c68",
            "status": "UPLOADED",
            "downloadUrl": f"https://example.com/recording.mp4?{QUERY}",
            "audioDownloadUrl": f"https://example.com/recording.mp3?{QUERY}",
            "downloadUrlExpiry": "2026-06-10T10:30:00.000Z",
            "fileSize": "2044680",
            "outputFileName": "weekly-sync.mp4",
            "meetingId": "50c8940e-1b97-402a-97d6-2708b7feca41",
            "recordingDuration": 1800,
            "organizationId": ORG,
            "roomUUID": SID,
        },
        "meeting": MEETING,
    },
}
LIVESTREAM = {
    "event": "livestreaming.statusUpdate",
    "streamId": "d231d346-c422-43a6-a324-c0d65b79c8a7",
    "status": "LIVE",
    "streamKey": "stream-key-SECRET",
    "meeting": {k: MEETING[k] for k in ("id", "title", "status", "organizedBy")},
}
EXPIRY = datetime(2026, 6, 10, 10, 30, tzinfo=UTC)


def _raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("kind", list(DOCUMENTED))
def test_each_documented_example_names_its_unit(kind: str) -> None:
    """Each archivable event's docs example gives one unit: kind, session, URL, expiry, app."""
    event, units = parse_event(_raw(DOCUMENTED[kind]))
    assert event == EVENTS_FOR_KIND[kind]
    assert len(units) == 1
    unit = units[0]
    assert (unit.kind, unit.session_id, unit.app_hint) == (kind, SID, ORG)
    assert unit.url.endswith(QUERY) and unit.url.startswith("https://example.com/")
    assert unit.expiry == EXPIRY and unit.expiry.tzinfo is not None
    assert unit.meeting_id == MID


def test_a_recording_carries_its_id_name_and_size_read_from_a_string() -> None:
    """recording.id, outputFileName, and fileSize (a string in the docs) as an int."""
    (unit,) = parse_event(_raw(DOCUMENTED["recording"]))[1]
    assert unit.recording_id == "97cb480d-5840-4528-ace3-919b5e386c68"
    assert unit.output_file_name == "weekly-sync.mp4"
    assert unit.file_size == 2044680


def test_a_recording_falls_back_to_recordingid_and_organizationid() -> None:
    """Without recording.id: recordingId; without organizedBy: recording.organizationId."""
    doc = copy.deepcopy(DOCUMENTED["recording"])
    del doc["recording"]["id"]
    doc["recording"]["recordingId"] = "rec-2"
    del doc["meeting"]["organizedBy"]
    doc["recording"]["organizationId"] = "app-from-recording"
    (unit,) = parse_event(_raw(doc))[1]
    assert (unit.recording_id, unit.app_hint) == ("rec-2", "app-from-recording")


@pytest.mark.parametrize("status", ["RECORDING", "UPLOADING", "ERRORED", None, 7])
def test_a_recording_not_uploaded_names_no_unit(status: object) -> None:
    """Only UPLOADED recordings carry a file: others are acknowledged, nothing to export."""
    doc = copy.deepcopy(DOCUMENTED["recording"])
    doc["recording"]["status"] = status
    del doc["recording"]["downloadUrl"]
    assert parse_event(_raw(doc)) == ("recording.statusUpdate", [])


@pytest.mark.parametrize(
    "event",
    ["meeting.started", "meeting.ended", "meeting.participantJoined", "meeting.someday"],
)
def test_other_events_name_no_unit(event: str) -> None:
    """Events with nothing to archive (and unknown ones) are read, with no unit."""
    assert parse_event(_raw({"event": event, "meeting": MEETING})) == (event, [])


def test_a_livestream_event_is_secret_and_names_no_unit() -> None:
    """livestreaming.* holds a stream key: marked secret, no unit, whatever its shape."""
    event, units = parse_event(_raw(LIVESTREAM))
    assert is_secret_event(event) and units == []
    assert parse_event(_raw({"event": "livestreaming.statusUpdate", "meeting": 1}))[1] == []
    assert not any(is_secret_event(e) for e in EVENTS_FOR_KIND.values())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe{", "not JSON"),
        (b"{'event': 1}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[]", "not a JSON object"),
        (b'"meeting.chatSynced"', "not a JSON object"),
        (b"{}", "no string 'event'"),
        (b'{"event": 5}', "no string 'event'"),
        (b'{"event": "a\\nb"}', "not an event name"),
        (b'{"event": ""}', "not an event name"),
    ],
)
def test_bodies_that_are_not_events_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    """Not JSON, not an object, no event name: Rejected, saying which."""
    with pytest.raises(Rejected, match=reason):
        parse_event(raw)


@pytest.mark.parametrize(
    ("kind", "path", "value", "reason"),
    [
        ("chat", ("sessionId",), None, "no string sessionId"),
        ("chat", ("sessionId",), 12, "no string sessionId"),
        ("chat", ("chatDownloadUrl",), None, "no string chatDownloadUrl"),
        ("chat", ("chatDownloadUrl",), ["x"], "no string chatDownloadUrl"),
        ("transcript", ("meeting",), None, "'meeting' is missing"),
        ("transcript", ("meeting",), "x", "'meeting' is not an object"),
        ("transcript", ("meeting", "sessionId"), "", "no string meeting.sessionId"),
        ("transcript", ("transcriptDownloadUrl",), None, "no string transcriptDownloadUrl"),
        ("summary", ("summaryDownloadUrl",), 1, "no string summaryDownloadUrl"),
        ("recording", ("recording",), None, "'recording' is missing"),
        ("recording", ("recording",), [1], "'recording' is not an object"),
        ("recording", ("recording", "downloadUrl"), None, "no string recording.downloadUrl"),
        ("recording", ("meeting", "sessionId"), None, "no string meeting.sessionId"),
    ],
)
def test_archivable_events_without_the_fields_they_need_are_rejected(
    kind: str, path: tuple[str, ...], value: object, reason: str
) -> None:
    """A missing or ill-typed session id or URL is a reason, not a unit."""
    doc = copy.deepcopy(DOCUMENTED[kind])
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(Rejected, match=reason):
        parse_event(_raw(doc))


def test_a_recording_without_any_id_is_rejected() -> None:
    """A recording needs an id to be named in the archive."""
    doc = copy.deepcopy(DOCUMENTED["recording"])
    del doc["recording"]["id"], doc["recording"]["recordingId"]
    with pytest.raises(Rejected, match=r"no string recording\.id"):
        parse_event(_raw(doc))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-10T10:30:00.000Z", EXPIRY),
        ("2026-06-10T12:30:00+02:00", EXPIRY),
        (EXPIRY.timestamp(), EXPIRY),
        (int(EXPIRY.timestamp() * 1000), EXPIRY),
        ("2026-06-10T10:30:00", None),  # no offset: not RFC 3339
        ("9999-12-31T23:59:59-23:59", None),  # past year 9999 in UTC
        (10**400, None),
        (float("nan"), None),
        (True, None),
        (None, None),
        ({"at": 1}, None),
    ],
)
def test_expiry_is_aware_utc_or_none(value: object, expected: datetime | None) -> None:
    """RFC 3339 with an offset, or epoch seconds/milliseconds; anything else None."""
    got = parse_expiry(value)
    assert got == expected
    if got is not None:
        assert got.utcoffset() is not None and got.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2044680", 2044680), (17, 17), ("-1", None), (-1, None), ("1e3", None), ("١٢", None),
     (True, None), ("9" * 30, None), (1.5, None)],
)  # fmt: skip
def test_file_size_is_a_non_negative_int_or_none(value: object, expected: int | None) -> None:
    """fileSize as sent (string or number); nonsense becomes None, never an error."""
    doc = copy.deepcopy(DOCUMENTED["recording"])
    doc["recording"]["fileSize"] = value
    assert parse_event(_raw(doc))[1][0].file_size == expected


# -- properties

_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
_times = st.one_of(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.integers(946684800, 4102444800),
    st.none(),
    st.text(max_size=10),
)


@st.composite
def documented(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(kind, a payload of the documented shape with drawn values, what its unit must say)."""
    kind = draw(st.sampled_from(list(DOCUMENTED)))
    doc = copy.deepcopy(DOCUMENTED[kind])
    sid, app, expiry = draw(_ids), draw(_ids), draw(_times)
    url = "https://" + draw(st.text(min_size=1, max_size=60))
    if kind == "chat":
        doc.update(sessionId=sid, chatDownloadUrl=url, chatDownloadUrlExpiry=expiry)
        doc["organizedBy"] = {"id": app}
    else:
        doc["meeting"] = {**doc["meeting"], "sessionId": sid, "organizedBy": {"id": app}}
        holder = doc["recording"] if kind == "recording" else doc
        prefix = "" if kind == "recording" else kind
        key = f"{prefix}DownloadUrl" if prefix else "downloadUrl"
        holder[key], holder[key + "Expiry"] = url, expiry
    return kind, doc, {"kind": kind, "session_id": sid, "url": url, "app_hint": app}


@given(documented())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_documented_shapes_with_any_values_give_their_unit(
    case: tuple[str, dict[str, Any], dict[str, Any]],
) -> None:
    """Whatever the ids, URL and expiry hold, the unit says exactly what the payload said."""
    kind, doc, want = case
    event, units = parse_event(_raw(doc))
    assert event == EVENTS_FOR_KIND[kind]
    (unit,) = units
    assert {k: getattr(unit, k) for k in want} == want
    assert unit.expiry is None or unit.expiry.utcoffset() is not None


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["meeting.chatSynced", "UPLOADED", "recording.statusUpdate", SID]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["event", "sessionId", "meeting", "recording", "status", "downloadUrl", "fileSize",
             "chatDownloadUrl", "organizedBy", "id", "transcriptDownloadUrl", "x"]
        ),
        inner,
        max_size=6,
    ),
    max_leaves=30,
)  # fmt: skip


def _parses_or_rejects(raw: bytes) -> None:
    try:
        event, units = parse_event(raw)
    except Rejected as exc:
        assert str(exc) and "SECRET" not in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(event, str)
    for unit in units:
        assert isinstance(unit, WebhookUnit)
        assert isinstance(unit.session_id, str) and unit.session_id
        assert isinstance(unit.url, str) and unit.url


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_rejected(raw: bytes) -> None:
    """Arbitrary bytes: an event or Rejected, never another exception."""
    _parses_or_rejects(raw)


@given(_json)
@settings(max_examples=400)
def test_any_json_parses_or_is_rejected(doc: object) -> None:
    """Arbitrary JSON of the payloads' vocabulary: an event or Rejected, never a crash."""
    _parses_or_rejects(json.dumps(doc).encode())


@given(st.sampled_from(list(DOCUMENTED)), st.data())
@settings(max_examples=400)
def test_documented_shapes_with_any_field_replaced_parse_or_are_rejected(
    kind: str, data: st.DataObject
) -> None:
    """Any field of a documented payload, at any depth, swapped for any JSON (strings
    marked SECRET): a unit or Rejected, and no reason ever repeats a value it was sent."""
    doc = copy.deepcopy(DOCUMENTED[kind])
    parent: Any = doc
    while True:
        key = data.draw(st.sampled_from(sorted(parent)))
        if isinstance(parent[key], dict) and data.draw(st.booleans()):
            parent = parent[key]
            continue
        break
    marked = _json.map(lambda v: f"SECRET-{v}" if isinstance(v, str) else v)
    parent[key] = data.draw(marked)
    _parses_or_rejects(json.dumps(doc).encode())
