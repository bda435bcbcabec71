"""Transcripts as archived -> utterances: the stand-in's four formats read against independent
readers (csv, json) and each other, and damaged files refused with a reason."""

from __future__ import annotations

import csv
import io
import json

import pytest

from exporter.standin import StandinConfig
from exporter.standin.content import expected_body
from exporter.transcript import Malformed, parse, when

CONFIG = StandinConfig(token="t", account_id="a")


def body(fmt: str, sid: str = "s-1") -> bytes:
    return expected_body(CONFIG, "app1", sid, "transcript", fmt)


@pytest.mark.parametrize("sid", ["s-1", "s-2", "s-3"])
def test_the_standins_csv_and_json_read_as_their_own_readers_read_them(sid: str) -> None:
    """Speaker, text and start of each utterance, as csv.DictReader and json.loads see them."""
    rows = list(csv.DictReader(io.StringIO(body("csv", sid).decode())))
    got = parse(body("csv", sid), "csv")
    assert [(u.speaker, u.text, u.offset) for u in got] == [
        (r["displayName"], r["transcript"], float(r["startTime"])) for r in rows
    ]
    doc = json.loads(body("json", sid))
    got = parse(body("json", sid), "json")
    assert [(u.speaker, u.text, u.offset) for u in got] == [
        (c["name"], c["text"], float(c["start"])) for c in doc
    ]


@pytest.mark.parametrize("fmt", ["vtt", "srt"])
def test_the_standins_cues_have_speaker_start_and_text(fmt: str) -> None:
    """VTT's `<v Name>` and SRT's `Name: ` are the speaker; starts are 4.5 s apart."""
    got = parse(body(fmt), fmt)
    assert 4 <= len(got) <= 9
    assert [u.offset for u in got] == [i * 4.5 for i in range(len(got))]
    assert all(u.speaker and u.text for u in got)
    assert [u.ident for u in got] == [str(i + 1) for i in range(len(got))]


def test_a_vtt_cue_with_an_id_markup_and_entities() -> None:
    """The cue id is kept, tags are dropped, entities read; NOTE blocks are passed over."""
    text = (
        "WEBVTT - title\n\nNOTE a comment\n\nintro\n01:02:03.250 --> 01:02:05.000 align:start\n"
        "<v.loud Ana Pérez><b>Hi</b> &lt;all&gt; &amp; you</v>\n\n00:09.000 --> 00:10.000\nbye\n"
    )
    first, second = parse(text.encode(), "vtt")
    assert (first.ident, first.speaker, first.text, first.offset) == (
        "intro",
        "Ana Pérez",
        "Hi <all> & you",
        3723.25,
    )
    assert (second.ident, second.speaker, second.text, second.offset) == ("2", "", "bye", 9.0)


def test_starts_in_every_spelling() -> None:
    assert when(4.5) == (4.5, None)
    assert when("4.5") == (4.5, None)
    assert when("01:00:04,5") == (3604.5, None)
    offset, at = when("2026-11-20T09:00:00Z")
    assert offset is None and at is not None and at.isoformat() == "2026-11-20T09:00:00+00:00"
    for bad in (-1, "nan", "inf", "soon", True, None, "1e99"):
        assert when(bad) == (None, None)


@pytest.mark.parametrize(
    ("fmt", "data", "why"),
    [
        ("csv", b"\xff\xfe", "UTF-8"),
        ("csv", b"", "empty"),
        ("csv", b"startTime,speaker\n0,Ana\n", "no text column"),
        ("csv", b"startTime,text\n0,a,b\n", "row 2"),
        ("json", b"{not json", "not valid JSON"),
        ("json", b'{"x": 1}', "no list"),
        ("json", b'"text"', "not a list"),
        ("vtt", b"00:00.000 --> 00:01.000\nhi\n", "WEBVTT"),
        ("srt", b"1\nhello there\n", "no time line"),
        ("srt", b"1\nsoon --> later\nhi\n", "not a time"),
        ("docx", b"x", "format"),
    ],
)
def test_a_damaged_transcript_says_why(fmt: str, data: bytes, why: str) -> None:
    with pytest.raises(Malformed, match=why):
        parse(data, fmt)


def test_srt_cues_a_missing_blank_line_ran_together_are_two_utterances() -> None:
    """The `srt` library splits them at the second cue's number and time line."""
    data = (
        b"1\r\n00:00:01,000 --> 00:00:02,000\r\nAna: hi\r\n"
        b"2\r\n00:01:03,250 --> 00:01:04,000\r\nBo: there\r\nand back\r\n\r\n"
    )
    assert [(u.ident, u.speaker, u.text, u.offset) for u in parse(data, "srt")] == [
        ("1", "Ana", "hi", 1.0),
        ("2", "Bo", "there\nand back", 63.25),
    ]
