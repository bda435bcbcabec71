"""The payload reader and the signature check, as pure functions: the documented shapes give
their units, hostile bodies give `Rejected` (never another exception), and a signature
verifies only the exact bytes it signed."""

from __future__ import annotations

import base64
import contextlib
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from exporter.webhooks.events import Rejected, parse_event
from exporter.webhooks.signature import verify

URL = "https://bucket.example.invalid/chat.csv?X-Amz-Signature=abc"


def test_the_documented_shapes_give_their_units() -> None:
    chat = {
        "event": "meeting.chatSynced",
        "sessionId": "s1",
        "chatDownloadUrl": URL,
        "chatDownloadUrlExpiry": "2026-12-07T10:00:00Z",
        "organizedBy": {"id": "app1"},
    }
    event, (unit,) = parse_event(json.dumps(chat).encode())
    assert (event, unit.kind, unit.session_id, unit.url, unit.app_hint) == (
        "meeting.chatSynced",
        "chat",
        "s1",
        URL,
        "app1",
    )
    assert unit.expiry is not None
    transcript = {
        "event": "meeting.transcript",
        "meeting": {"sessionId": "s2"},
        "transcriptDownloadUrl": URL,
    }
    assert parse_event(json.dumps(transcript).encode())[1][0].kind == "transcript"
    rec = {
        "event": "recording.statusUpdate",
        "meeting": {"sessionId": "s3"},
        "recording": {
            "id": "r1",
            "status": "UPLOADED",
            "downloadUrl": URL,
            "fileSize": "2044680",
            "outputFileName": "r1.mp4",
        },
    }
    (unit,) = parse_event(json.dumps(rec).encode())[1]
    assert (unit.kind, unit.recording_id, unit.file_size) == ("recording", "r1", 2044680)
    rec["recording"]["status"] = "RECORDING"
    assert parse_event(json.dumps(rec).encode())[1] == []
    assert parse_event(b'{"event": "meeting.started", "meeting": {}}') == ("meeting.started", [])


def test_an_archivable_event_without_its_fields_is_rejected() -> None:
    for body in (
        b"nope",
        b"[]",
        b'{"event": 3}',
        b'{"event": "meeting.chatSynced"}',
        b'{"event": "meeting.summary", "meeting": {"sessionId": "s"}}',
    ):
        try:
            parse_event(body)
        except Rejected as exc:
            assert str(exc)
        else:
            raise AssertionError(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "event",
        "sessionId",
        "chatDownloadUrl",
        "meeting",
        "recording",
        "transcriptDownloadUrl",
        "organizedBy",
        "status",
        "downloadUrl",
        "id",
    ]
)
events = st.sampled_from(
    [
        "meeting.chatSynced",
        "meeting.transcript",
        "meeting.summary",
        "recording.statusUpdate",
        "livestreaming.statusUpdate",
    ]
)


@given(st.dictionaries(keys, json_values | events, max_size=8))
def test_hostile_objects_are_units_or_rejected(doc: dict[str, object]) -> None:
    try:
        _, units = parse_event(json.dumps(doc).encode())
    except Rejected:
        return
    for unit in units:
        assert isinstance(unit.session_id, str) and isinstance(unit.url, str)


@given(st.binary(max_size=200))
def test_hostile_bytes_never_raise_anything_but_rejected(raw: bytes) -> None:
    with contextlib.suppress(Rejected):
        parse_event(raw)


def test_a_signature_verifies_only_the_bytes_it_signed() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = b'{"event": "meeting.chatSynced"}'
    sig = base64.b64encode(key.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()
    public = key.public_key()
    assert verify(public, raw, sig)
    assert not verify(public, raw + b" ", sig)  # re-serialized: not the signed bytes
    assert not verify(public, raw, "not base64!!")
    assert not verify(public, raw, "")
    assert not verify(public, raw, sig[:-4] + "AAA=")
