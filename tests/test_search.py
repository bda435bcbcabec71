"""The search index over a folder archive in the export's format: what matches (words, phrases,
prefixes, folding), the filters, newest first, a hostile corpus, and the incremental update."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.archive import SEARCH_INDEX_NAME
from exporter.search import index as index_module
from exporter.search.index import Filters, NotAnIndex, SearchIndex
from exporter.search.query import QueryError, parse, to_match
from tests.search_archive import APP, Archive, Msg, add_transcript, search, session, texts, update


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def a(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "dir")


def test_words_match_in_any_order_and_all_must_match(a: Archive) -> None:
    """`budget deadline` finds the messages with both words, wherever they are."""
    session(
        a, "s1", "the deadline for the budget", "budget only", "deadline only", "Budget? DEADLINE!"
    )
    assert sorted(texts(search(a.root, "budget deadline"))) == [
        "Budget? DEADLINE!",
        "the deadline for the budget",
    ]


def test_a_phrase_matches_its_words_in_order_and_words_do_not_need_to(a: Archive) -> None:
    """`"new york"` needs the two words side by side, in order; `new york` does not."""
    session(a, "s1", "new york city", "york is new", "new, york")
    assert sorted(texts(search(a.root, '"new york"'))) == ["new york city", "new, york"]
    assert len(search(a.root, "new york")) == 3


def test_a_prefix_matches_words_that_start_with_it(a: Archive) -> None:
    """`resum*` finds resume, résumé and resumption, not presume."""
    session(a, "s1", "my resume", "Résumé attached", "resumption of talks", "presume nothing")
    assert sorted(texts(search(a.root, "resum*"))) == [
        "Résumé attached",
        "my resume",
        "resumption of talks",
    ]
    assert texts(search(a.root, '"of tal"*')) == ["resumption of talks"]


def test_case_and_accents_fold_both_ways(a: Archive) -> None:
    """`resume` finds `Résumé`, `RÉSUMÉ` finds `resume`, `koln` finds `Köln` (composed or
    decomposed), `zoe` finds `Zoë`."""
    session(a, "s1", "Résumé attached", "plain resume", "Grüße aus Köln", "Zoe\u0308 says hi")
    assert sorted(texts(search(a.root, "resume"))) == ["Résumé attached", "plain resume"]
    assert sorted(texts(search(a.root, "RÉSUMÉ"))) == ["Résumé attached", "plain resume"]
    assert texts(search(a.root, "koln")) == ["Grüße aus Köln"]
    assert texts(search(a.root, "Ko\u0308ln")) == ["Grüße aus Köln"]
    assert texts(search(a.root, "zoe")) == ["Zoe\u0308 says hi"]


def test_hits_are_newest_first_and_limited(a: Archive) -> None:
    """Across sessions and apps, the newest hit comes first; --limit keeps the first N."""
    session(a, "old", "ping one", "ping two", day=18)
    session(a, "new", "ping three", day=21)
    a.add_chat("app2", "mid", [Msg("m1", "Bo", "ping four", "2026-11-19T12:00:00Z")])
    hits = search(a.root, "ping")
    assert texts(hits) == ["ping three", "ping four", "ping two", "ping one"]
    assert [(h.app, h.session) for h in hits[:2]] == [(APP, "new"), ("app2", "mid")]
    assert hits[0].ms == ms("2026-11-21T09:00:00")
    assert texts(search(a.root, "ping", limit=2)) == ["ping three", "ping four"]


def test_each_filter_narrows_the_hits(a: Archive) -> None:
    """--app, --since (inclusive), --until (exclusive) and --from (a part of the name, case
    and accents aside) each keep only what they name."""
    a.add_chat(
        APP,
        "s1",
        [
            Msg("m1", "Zoë Ångström", "status report", "2026-11-20T09:00:00Z"),
            Msg("m2", "José Pérez", "status update", "2026-11-20T10:00:00Z"),
            Msg("m3", "Ana", "status quo", "2026-11-20T11:00:00Z"),
        ],
    )
    a.add_chat("app2", "s2", [Msg("m4", "Ana", "status elsewhere", "2026-11-20T12:00:00Z")])
    assert texts(search(a.root, "status", app="app2")) == ["status elsewhere"]
    assert texts(search(a.root, "status", app=APP, since_ms=ms("2026-11-20T10:00:00"))) == [
        "status quo",
        "status update",
    ]
    assert texts(search(a.root, "status", until_ms=ms("2026-11-20T10:00:00"))) == ["status report"]
    assert texts(search(a.root, "status", author="ANGSTR")) == ["status report"]
    assert texts(search(a.root, "status", author="jose pe")) == ["status update"]
    assert texts(search(a.root, "status", author="ana")) == ["status elsewhere", "status quo"]
    assert search(a.root, "status", author="nobody") == []


HOSTILE = [
    'NEAR(alpha beta, 2) "unclosed',
    "alpha AND OR NOT beta",
    "text:alpha ^beta {col1 col2}: gamma",
    "'); DROP TABLE hits; -- alpha",
    "alpha\x00beta after nul",
    "\u202eetirw\u202c alpha rtl override",
    "\x1b[2J\x1b]0;pwned\x07 alpha escapes",
    "* alpha * * \"\" ''",
]


def test_a_hostile_corpus_is_indexed_as_words_and_searched_safely(a: Archive) -> None:
    """FTS5 syntax, SQL, NUL, direction overrides and escapes in messages are stored as typed
    and found by their words; each of them typed as a query is a plain query or a QueryError,
    never an SQLite error; a 10 KB message is found by its last word."""
    long_text = "filler " * 1460 + "needle"
    assert len(long_text) > 10_000
    session(a, "s1", *HOSTILE, long_text)
    hits = search(a.root, "alpha")
    assert sorted(texts(hits)) == sorted(HOSTILE)
    assert texts(search(a.root, "needle")) == [long_text]
    assert texts(search(a.root, "drop table")) == ["'); DROP TABLE hits; -- alpha"]
    assert texts(search(a.root, "pwned")) == ["\x1b[2J\x1b]0;pwned\x07 alpha escapes"]
    assert texts(search(a.root, '"after nul"')) == ["alpha\x00beta after nul"]
    index = SearchIndex(a.root / SEARCH_INDEX_NAME)
    try:
        for text in [*HOSTILE, long_text, "NEAR(", '"', "*", "a\x00b", "\u202e"]:
            try:
                match = to_match(parse(text))
            except QueryError:
                continue
            index.search(match, Filters(), ("[", "]"))  # no sqlite3.Error
        assert index.db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
        assert index.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        index.close()


def test_incremental_update_reads_only_added_and_changed_sessions(a: Archive) -> None:
    """After the first build, an added session and a changed one are read again and nothing
    else; a session whose last line no longer records a file leaves the index; an update with
    the manifest as it was reads nothing at all."""
    for sid in ("s1", "s2", "s3"):
        session(a, sid, f"hello from {sid}")
    read: list[tuple[str, str]] = []
    first = update(a.root, read)
    assert sorted(read) == [(APP, "s1"), (APP, "s2"), (APP, "s3")]
    assert first.read == 3 and first.rows == 3
    session(a, "s4", "hello from s4")
    session(a, "s2", "hello again from s2", "second message")
    a.line(APP, "s3", "chat", status="failed", error={"kind": "http", "message": "gone"})
    read.clear()
    second = update(a.root, read)
    assert sorted(read) == [(APP, "s2"), (APP, "s4")]
    assert second.removed == 1
    assert sorted(texts(search(a.root, "hello"))) == [
        "hello again from s2",
        "hello from s1",
        "hello from s4",
    ]
    read.clear()
    third = update(a.root, read)
    assert third.fresh and read == []


def test_a_transcript_utterance_is_timed_from_the_chat_and_parsed_in_every_format(
    a: Archive,
) -> None:
    """An utterance's time is the session's start (its first message) plus its offset, and its
    speaker is the author, from CSV, JSON, VTT and SRT alike."""
    for n, fmt in enumerate(("csv", "json", "vtt", "srt")):
        sid = f"t-{fmt}"
        session(a, sid, "opening words", day=10 + n)
        add_transcript(
            a,
            APP,
            sid,
            fmt,
            [(0.0, "Ana Pérez", "welcome all"), (64.5, "李小龍", f"agenda in {fmt}")],
        )
    hits = search(a.root, "agenda")
    assert [(h.session, h.kind, h.author) for h in hits] == [
        ("t-srt", "transcript", "李小龍"),
        ("t-vtt", "transcript", "李小龍"),
        ("t-json", "transcript", "李小龍"),
        ("t-csv", "transcript", "李小龍"),
    ]
    assert hits[3].ms == ms("2026-11-10T09:01:04.500")
    assert hits[0].text == "agenda in srt"


def test_a_transcript_without_chat_has_no_time_and_no_time_filter_keeps_it(a: Archive) -> None:
    """No chat, no session start: the utterance is found, shown without a time, last, and left
    out by --since and --until."""
    session(a, "chat", "agenda item", day=1)
    add_transcript(a, APP, "alone", "csv", [(3.0, "Bo", "agenda later")])
    hits = search(a.root, "agenda")
    assert [(h.session, h.ms) for h in hits] == [
        ("chat", ms("2026-11-01T09:00:00")),
        ("alone", None),
    ]
    assert texts(search(a.root, "agenda", since_ms=0)) == ["agenda item"]
    assert texts(search(a.root, "agenda", until_ms=ms("2030-01-01T00:00:00"))) == ["agenda item"]


def test_a_damaged_file_leaves_its_session_out_until_it_is_whole_again(a: Archive) -> None:
    """A chat CSV that differs from its manifest record is reported and not indexed; the other
    sessions are; once a new export records it whole, the next update reads it."""
    session(a, "good", "apple pie")
    session(a, "bad", "apple tart")
    path = a.root / APP / "bad.csv"
    whole = path.read_bytes()
    path.write_bytes(whole.replace(b"tart", b"TART"))
    first = update(a.root)
    assert [d.split(":")[0] for d in first.damaged] == [f"{APP}/bad.csv"]
    assert texts(search(a.root, "apple")) == ["apple pie"]
    path.write_bytes(whole)
    a.line(APP, "bad", "chat", status="skipped", path=f"{APP}/bad.csv", bytes=len(whole),
           sha256=a.lines[1]["sha256"])  # fmt: skip
    read: list[tuple[str, str]] = []
    assert update(a.root, read).damaged == []
    assert read == [(APP, "bad")]
    assert sorted(texts(search(a.root, "apple"))) == ["apple pie", "apple tart"]


def test_a_manifest_line_pointing_outside_its_app_folder_is_never_read(
    a: Archive, tmp_path: Path
) -> None:
    """A hand-edited line naming `../secret.csv` or another app's folder is passed over."""
    session(a, "s1", "inside")
    secret = tmp_path / "secret.csv"
    secret.write_bytes(
        b"id,displayName,payloadType,payload,createdAt\r\nx,Eve,TEXT_MESSAGE,inside,z\r\n"
    )
    for rel in ("../secret.csv", "app9/s1.csv", f"{APP}/../../secret.csv"):
        a.line(APP, "s2", "chat", path=rel, bytes=secret.stat().st_size, sha256="0" * 64)
    assert texts(search(a.root, "inside")) == ["inside"]


def test_hits_of_one_millisecond_with_the_same_spread_all_get_their_own_id(
    a: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the spread of two hits collide (forced here), the later one takes the next free
    id of the same millisecond: nothing is lost, the time is unchanged."""
    monkeypatch.setattr(index_module.zlib, "crc32", lambda data: 7)
    a.add_chat(
        APP,
        "s1",
        [Msg(f"m{i}", "Ana", f"same moment {i}", "2026-11-20T09:00:00.250Z") for i in range(5)],
    )
    a.add_chat(APP, "s2", [Msg("n1", "Bo", "same moment too", "2026-11-20T09:00:00.250Z")])
    hits = search(a.root, "moment")
    assert len(hits) == 6
    assert {h.ms for h in hits} == {ms("2026-11-20T09:00:00.250")}


def test_a_damaged_index_is_rebuilt_and_a_foreign_file_is_left_alone(
    a: Archive, tmp_path: Path
) -> None:
    """Garbage under our own name costs a rebuild; a file chosen with --index that is not an
    index of ours is refused and kept byte for byte."""
    session(a, "s1", "kept safe")
    (a.root / SEARCH_INDEX_NAME).write_bytes(b"not sqlite at all" * 100)
    assert texts(search(a.root, "kept")) == ["kept safe"]
    foreign = tmp_path / "notes.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE notes(x)")
    db.commit()
    db.close()
    before = foreign.read_bytes()
    for path in (foreign, a.manifest):
        content = path.read_bytes()
        with pytest.raises(NotAnIndex):
            SearchIndex(path, owned=False)
        assert path.read_bytes() == content
    assert foreign.read_bytes() == before


def test_the_json_of_hits_is_text_as_typed(a: Archive) -> None:
    """The unmarked text of a hit is the message byte for byte (what --json prints)."""
    text = 'He said "hi",\r\nthen left \u202e\x1b[31m'
    session(a, "s1", text)
    (hit,) = search(a.root, "left")
    assert hit.text == text and hit.kind == "chat" and hit.message_id == "s1-m0"
    assert json.loads(json.dumps(hit.text)) == text
