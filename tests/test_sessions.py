"""The SESSIONS parser: one test per rule of the spec's SESSIONS format, then properties."""

from __future__ import annotations

import io
import re
import string
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.sessions import (
    MAX_APP_ID,
    MAX_LINE_BYTES,
    MAX_SESSION_ID,
    InvalidLine,
    Pair,
    open_sessions,
    read_pairs,
)

ID = re.compile(r"[A-Za-z0-9_-]+")


def parse(data: bytes) -> list[Pair | InvalidLine]:
    return list(read_pairs(io.BytesIO(data)))


def pairs(data: bytes) -> list[tuple[str, str, int]]:
    items = parse(data)
    assert all(isinstance(item, Pair) for item in items), items
    return [(p.app_id, p.session_id, p.line) for p in items if isinstance(p, Pair)]


def only_invalid(data: bytes) -> InvalidLine:
    (item,) = parse(data)
    assert isinstance(item, InvalidLine), item
    return item


# --- separators -------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"a b", b"a,b", b"a , b", b"a\tb", b"  a  \t b  ", b"a ,b"])
def test_pair_separated_by_white_space_or_one_comma(line: bytes) -> None:
    """Runs of white space, or one comma with optional spaces around it, separate the two ids."""
    assert pairs(line + b"\n") == [("a", "b", 1)]


def test_double_comma_is_invalid() -> None:
    """`a,,b` is three comma-separated fields, one empty: invalid."""
    item = only_invalid(b"a,,b\n")
    assert "got 3" in item.reason
    assert (item.app_id, item.session_id) == ("a", None)


def test_three_comma_fields_are_invalid() -> None:
    """`a,b,c` has three fields: invalid, and the reason says so."""
    item = only_invalid(b"a,b,c\n")
    assert item.reason.startswith("expected 2 fields (APP_ID SESSION_ID), got 3")
    assert (item.line, item.app_id, item.session_id) == (1, "a", "b")


def test_three_space_fields_are_invalid() -> None:
    """`a b c` has three fields: invalid, with the first two kept for the manifest."""
    item = only_invalid(b"a b c\n")
    assert item.reason == "expected 2 fields (APP_ID SESSION_ID), got 3: 'a b c'"
    assert (item.app_id, item.session_id) == ("a", "b")


def test_one_field_is_invalid() -> None:
    """A lone id is invalid; its app_id is what could be read and session_id is None."""
    item = only_invalid(b"abc\n")
    assert "got 1" in item.reason
    assert (item.app_id, item.session_id) == ("abc", None)


def test_trailing_comma_is_invalid() -> None:
    """`a,` has an empty second field: invalid."""
    assert "empty" in only_invalid(b"a,\n").reason


def test_comma_and_white_space_mixed_is_invalid() -> None:
    """`a b,c` uses both kinds of separator: invalid rather than guessed."""
    assert "not both" in only_invalid(b"a b,c\n").reason


# --- ids --------------------------------------------------------------------------------------


def test_id_characters_outside_the_alphabet_are_invalid() -> None:
    """An id with a character outside [A-Za-z0-9_-] is invalid, the character named."""
    item = only_invalid(b"app.1 s1\n")
    assert "app id 'app.1'" in item.reason
    assert "'.'" in item.reason
    assert (item.app_id, item.session_id) == ("app.1", "s1")


def test_path_traversal_in_session_id_is_invalid() -> None:
    """A session id such as `../x` cannot name a path outside DIR: it is invalid."""
    assert "session id '../x'" in only_invalid(b"app ../x\n").reason


def test_app_id_of_32_characters_is_valid() -> None:
    """An app id of exactly 32 characters is accepted."""
    app = "a" * MAX_APP_ID
    assert pairs(f"{app} s\n".encode()) == [(app, "s", 1)]


def test_app_id_over_32_characters_is_invalid() -> None:
    """An app id over 32 characters is invalid."""
    item = only_invalid(f"{'a' * 33} s\n".encode())
    assert "app id is 33 characters long, over 32" in item.reason


def test_session_id_over_200_characters_is_invalid() -> None:
    """A session id over 200 characters is invalid (its file name would near 255 bytes)."""
    assert pairs(f"a {'s' * MAX_SESSION_ID}\n".encode())
    item = only_invalid(f"a {'s' * 201}\n".encode())
    assert "session id is 201 characters long, over 200" in item.reason
    assert item.session_id == "s" * 64


@pytest.mark.parametrize("name", ["CON", "prn", "Aux", "nul", "COM1", "com9", "LPT1", "lpt9"])
def test_windows_device_names_are_invalid(name: str) -> None:
    """An id that is a Windows device name, in any case, is invalid, as app or session id."""
    assert "reserved device name" in only_invalid(f"{name} s1\n".encode()).reason
    assert "reserved device name" in only_invalid(f"app {name}\n".encode()).reason


@pytest.mark.parametrize("name", ["COM0", "COM10", "CONS", "LPT", "NULL"])
def test_names_near_device_names_are_valid(name: str) -> None:
    """Names that only look like device names are valid ids."""
    assert pairs(f"{name} {name}\n".encode()) == [(name, name, 1)]


def test_long_offending_value_is_truncated_in_the_reason() -> None:
    """A reason quotes a bad value escaped and cut to about 80 characters."""
    item = only_invalid(b"a " + "\u202e".encode() + b"x" * 500 + b"\n")
    assert "\\u202e" in item.reason
    assert len(item.reason) < 160
    assert item.session_id is not None
    assert len(item.session_id) == 64


# --- lines ------------------------------------------------------------------------------------


def test_blank_lines_are_ignored() -> None:
    """Empty and white-space-only lines are skipped, and line numbers still count them."""
    assert pairs(b"\n  \n\t\na b\n \r\n") == [("a", "b", 4)]


@pytest.mark.parametrize("line", [b"# a comment", b"   # indented", b"\t#", b"#\xff\xfe latin-1"])
def test_comment_lines_are_ignored(line: bytes) -> None:
    """A line whose first non-space character is `#` is skipped, whatever bytes follow."""
    assert pairs(line + b"\na b\n") == [("a", "b", 2)]


def test_trailing_hash_is_not_a_comment() -> None:
    """Only whole-line comments exist: `a b # note` has three fields."""
    assert "got 4" in only_invalid(b"a b # note\n").reason


@pytest.mark.parametrize(
    "header", [b"app_id,session_id", b"APP_ID , Session_Id", b" app_id,session_id "]
)
def test_csv_header_first_line_is_ignored(header: bytes) -> None:
    """A first line `app_id,session_id` (any case, spaces around the comma) is a header."""
    assert pairs(header + b"\na,b\n") == [("a", "b", 2)]


def test_csv_header_after_comments_is_ignored() -> None:
    """The header may follow comments and blank lines: it is the first meaningful line."""
    assert pairs(b"# export list\n\napp_id,session_id\na,b\n") == [("a", "b", 4)]


def test_csv_header_later_is_a_pair() -> None:
    """After the first meaningful line, `app_id,session_id` is an ordinary pair."""
    assert pairs(b"a,b\napp_id,session_id\n") == [("a", "b", 1), ("app_id", "session_id", 2)]


def test_space_separated_header_is_a_pair() -> None:
    """Only the CSV form is a header; `app_id session_id` is a pair of valid ids."""
    assert pairs(b"app_id session_id\n") == [("app_id", "session_id", 1)]


def test_crlf_and_lf_endings_are_accepted() -> None:
    """CRLF and LF endings may mix; neither leaves a stray character in an id."""
    assert pairs(b"a b\r\nc,d\ne f\r\n") == [("a", "b", 1), ("c", "d", 2), ("e", "f", 3)]


def test_last_line_without_newline_is_read() -> None:
    """A last line without a terminator is still a line."""
    assert pairs(b"a b\nc d") == [("a", "b", 1), ("c", "d", 2)]
    assert pairs(b"a b\r") == [("a", "b", 1)]


def test_bom_on_first_line_is_stripped() -> None:
    """A UTF-8 byte-order mark before the first line is dropped, header or pair."""
    assert pairs(b"\xef\xbb\xbfa b\n") == [("a", "b", 1)]
    assert pairs(b"\xef\xbb\xbfapp_id,session_id\na b\n") == [("a", "b", 2)]


def test_bom_on_a_later_line_is_invalid() -> None:
    """A byte-order mark inside the file is not white space: that id is invalid."""
    assert isinstance(parse(b"a b\n\xef\xbb\xbfc d\n")[1], InvalidLine)


def test_invalid_utf8_is_invalid_line() -> None:
    """A line that is not UTF-8 is invalid, the reason naming the byte and the problem."""
    item = only_invalid(b"caf\xe9 s1\n")
    assert item.reason.startswith("not valid UTF-8 (invalid continuation byte) at byte 4")
    assert (item.app_id, item.session_id) == (None, None)


def test_nul_byte_is_invalid_line() -> None:
    """A NUL byte makes the line invalid, and nothing of it is kept."""
    item = only_invalid(b"a\x00 b\n")
    assert item == InvalidLine(1, "NUL byte at byte 2", None, None)


def test_over_long_line_is_invalid_and_skipped() -> None:
    """A line over 8192 bytes is invalid, and the next line keeps its own number."""
    data = b"a " + b"x" * MAX_LINE_BYTES + b"\nc d\n"
    assert parse(data) == [
        InvalidLine(1, "line longer than 8192 bytes", None, None),
        Pair("c", "d", 2),
    ]


def test_line_of_exactly_8192_bytes_is_read() -> None:
    """A line of exactly 8192 bytes before its CRLF is within the limit."""
    line = b" " * (MAX_LINE_BYTES - 3) + b"a b"
    assert pairs(line + b"\r\n" + line + b"\n" + line) == [
        ("a", "b", 1),
        ("a", "b", 2),
        ("a", "b", 3),
    ]
    assert isinstance(parse(b" " + line + b"\n")[0], InvalidLine)


def test_over_long_comment_is_ignored() -> None:
    """A comment longer than the limit is still a comment."""
    assert pairs(b"#" + b"=" * 100_000 + b"\na b\n") == [("a", "b", 2)]


def test_invalid_lines_do_not_stop_the_rest() -> None:
    """An invalid line is reported in place and the lines after it are still read."""
    items = parse(b"a b\nbad\nc d\n")
    assert [type(i) for i in items] == [Pair, InvalidLine, Pair]
    assert [i.line for i in items] == [1, 2, 3]


def test_duplicates_are_kept() -> None:
    """De-duplication is the pipeline's job: a repeated pair is yielded each time."""
    assert pairs(b"a b\na,b\n") == [("a", "b", 1), ("a", "b", 2)]


def test_pairs_are_yielded_lazily() -> None:
    """The first pair is yielded before the rest of the stream is read."""
    stream = io.BytesIO(b"a b\n" + b"c d\n" * 100_000)
    assert next(read_pairs(stream)) == Pair("a", "b", 1)
    assert stream.tell() < 64 * 1024


# --- open_sessions ----------------------------------------------------------------------------


def test_open_sessions_reads_a_file(tmp_path: Path) -> None:
    """A path is opened as bytes and closed on exit."""
    path = tmp_path / "sessions.txt"
    path.write_bytes(b"a b\n")
    with open_sessions(str(path)) as stream:
        assert list(read_pairs(stream)) == [Pair("a", "b", 1)]
    assert stream.closed


def test_open_sessions_dash_is_stdin_left_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-` reads standard input's bytes and leaves standard input open."""
    fake_stdin = io.TextIOWrapper(io.BytesIO(b"a,b\n"))
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    with open_sessions("-") as stream:
        assert list(read_pairs(stream)) == [Pair("a", "b", 1)]
    assert not fake_stdin.closed


def test_open_sessions_missing_file_raises_oserror(tmp_path: Path) -> None:
    """A missing file raises an OSError that names it."""
    with pytest.raises(OSError, match=r"nope\.txt"), open_sessions(str(tmp_path / "nope.txt")):
        pass


# --- properties -------------------------------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "_-"
DEVICES = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)}
app_ids = st.text(ID_CHARS, min_size=1, max_size=MAX_APP_ID).filter(
    lambda s: s.upper() not in DEVICES
)
session_ids = st.text(ID_CHARS, min_size=1, max_size=MAX_SESSION_ID).filter(
    lambda s: s.upper() not in DEVICES
)
separators = st.sampled_from([" ", "\t", ",", " , ", "  \t ", ", ", "\t,"])
endings = st.sampled_from(["\n", "\r\n"])
filler = st.lists(
    st.sampled_from(["", "   ", "\t", "# comment", "  #", "#app_id,session_id"]), max_size=2
)


@given(
    st.lists(st.tuples(app_ids, session_ids, separators, endings, filler), max_size=30),
    st.booleans(),
    st.booleans(),
)
def test_valid_pairs_round_trip(
    rows: list[tuple[str, str, str, str, list[str]]], bom: bool, final_newline: bool
) -> None:
    """Valid pairs, however separated and interleaved with blanks and comments, come back
    exactly, each with its physical line number."""
    text, number = "", 0
    expected: list[tuple[str, str, int]] = []
    for app, session, sep, end, extra in rows:
        for line in extra:
            text += line + end
            number += 1
        text += app + sep + session + end
        number += 1
        expected.append((app, session, number))
    if not final_newline:
        text = text.rstrip("\r\n")
    first = rows[0] if rows else None
    if (
        first
        and (first[0].lower(), first[1].lower()) == ("app_id", "session_id")
        and "," in first[2]
    ):
        expected.pop(0)  # that first pair reads as a header, as it should
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    items = parse(data)
    kept = [(p.app_id, p.session_id, p.line) for p in items if isinstance(p, Pair)]
    assert kept == expected
    assert all(isinstance(i, Pair) for i in items)


# Pieces that reach every branch more often than uniform random bytes do.
PIECES = [
    b"a",
    b"Z9",
    b" ",
    b"\t",
    b",",
    b"\n",
    b"\r",
    b"#",
    b"\xff",
    b"\x00",
    b"CON",
    b"\xef\xbb\xbf",
]


@settings(max_examples=300)
@given(st.binary(max_size=2000) | st.lists(st.sampled_from(PIECES)).map(b"".join))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Any bytes parse without raising; pairs are valid ids and line numbers increase."""
    items = parse(data)
    lines = [item.line for item in items]
    assert lines == sorted(set(lines))
    for item in items:
        if isinstance(item, Pair):
            assert ID.fullmatch(item.app_id) and len(item.app_id) <= MAX_APP_ID
            assert ID.fullmatch(item.session_id) and len(item.session_id) <= MAX_SESSION_ID
        else:
            assert item.reason
            assert item.app_id is None or len(item.app_id) <= 64
            assert item.session_id is None or len(item.session_id) <= 64


class _Endless(io.RawIOBase):
    """A stream of `size` bytes of one huge line then `tail`, made up as it is read."""

    def __init__(self, size: int, tail: bytes) -> None:
        self._left = size
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        if self._left > 0:
            n = min(len(buffer), self._left)
            buffer[:n] = b"x" * n
            self._left -= n
            return n
        n = min(len(buffer), len(self._tail))
        buffer[:n] = self._tail[:n]
        self._tail = self._tail[n:]
        return n


def test_50_mb_line_is_read_in_bounded_memory() -> None:
    """A 50 MB line is skipped without ever being held: the peak stays under 2 MB."""
    stream = io.BufferedReader(_Endless(50 * 1024 * 1024, b"\na b\n"))
    tracemalloc.start()
    try:
        items = list(read_pairs(stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert items == [InvalidLine(1, "line longer than 8192 bytes", None, None), Pair("a", "b", 2)]
    assert peak < 2 * 1024 * 1024
