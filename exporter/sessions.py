"""SESSIONS lines -> Pair | InvalidLine, lazily and in constant memory (pure: reads only the
stream it is given), and the readers of a file and of a pipe. De-duplication is the
pipeline's (see keyset)."""

from __future__ import annotations

import os
import re
import select
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO

import anyio
import anyio.lowlevel

from exporter.urls import Link

# Longest physical line, terminator excluded. Real lines are under 250 bytes; a longer one is
# garbage (a binary file, a minified dump) and is skipped without ever being held whole.
MAX_LINE_BYTES = 8192
MAX_APP_ID = 32
# The longest archive name is `<session_id>.transcript.json` (+16), and downloads go to a
# temporary name beside it (a few dozen more): 200 keeps both under the 255-byte file-name
# limit of ext4, NTFS and SMB shares.
MAX_SESSION_ID = 200

_BAD_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_HEADER = re.compile(r"app_id\s*,\s*session_id", re.IGNORECASE)
# Archives get copied to Windows shares, where neither `CON.csv` nor a folder `aux` can exist.
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)]
)
_BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 64 * 1024
_SHOW = 80  # longest excerpt of a bad value quoted in a reason
_KEEP = 64  # longest field kept on an InvalidLine for the manifest
_TWO_FIELDS = "expected 2 fields (APP_ID SESSION_ID)"
READ_BATCH = 512  # SESSIONS lines read per trip to a worker thread


@dataclass(frozen=True, slots=True)
class Pair:
    app_id: str
    session_id: str
    line: int


@dataclass(frozen=True, slots=True)
class Unit:
    """One (pair, kind): what is exported, paced, retried and recorded as one."""

    app_id: str
    session_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class Minted(Unit):
    """A unit that came with its download URL (a webhook delivery): exported with no API
    request while that URL lives; an expired one (or a 403) costs one paced request."""

    link: Link | None = None
    delivery_id: str = ""
    # A recording's identity, as the delivery gave it.
    recording_id: str | None = None
    output_file_name: str | None = None
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """A line that is not a pair; app_id and session_id hold what could be read of it."""

    line: int
    reason: str
    app_id: str | None
    session_id: str | None


@contextmanager
def open_sessions(path: str) -> Iterator[BinaryIO]:
    """Open SESSIONS as bytes; `-` is standard input, which is left open on exit.

    A missing or unreadable file raises open()'s OSError for the caller to report. A file
    literally named `-` is reached as `./-`.
    """
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as stream:
        yield stream


def read_pairs(stream: BinaryIO) -> Iterator[Pair | InvalidLine]:
    """Yield a Pair or an InvalidLine for each meaningful line, numbered from 1."""
    header_allowed = True
    for number, (content, complete) in enumerate(_physical_lines(stream), start=1):
        if number == 1 and content.startswith(_BOM):
            content = content[len(_BOM) :]
        # Tested on bytes so that a comment may hold anything (a Latin-1 note, a long rule).
        if content.lstrip().startswith(b"#"):
            continue
        item: Pair | InvalidLine
        if not complete:
            item = InvalidLine(number, f"line longer than {MAX_LINE_BYTES} bytes", None, None)
        elif (nul := content.find(b"\x00")) >= 0:
            item = InvalidLine(number, f"NUL byte at byte {nul + 1}", None, None)
        else:
            try:
                text = content.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                bad = content[exc.start : exc.start + 4]
                reason = f"not valid UTF-8 ({exc.reason}) at byte {exc.start + 1}: {bad!r}"
                item = InvalidLine(number, reason, None, None)
            else:
                if not text or text.startswith("#"):
                    continue
                if header_allowed and _HEADER.fullmatch(text):
                    header_allowed = False
                    continue
                item = _parse(number, text)
        header_allowed = False
        yield item


def _physical_lines(stream: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """Yield (content, complete) per line, terminator dropped; an over-long line yields only
    its first bytes with complete=False, and the rest of it is read and dropped in chunks."""
    limit = MAX_LINE_BYTES + 2  # room for CRLF after a line of the maximum length
    while raw := stream.readline(limit):
        if raw.endswith(b"\n"):
            content = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            yield content, len(content) <= MAX_LINE_BYTES
        elif len(raw) < limit:  # the last line, without a terminator
            content = raw[:-1] if raw.endswith(b"\r") else raw
            yield content, len(content) <= MAX_LINE_BYTES
        else:
            yield raw, False
            while (rest := stream.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass


def _parse(number: int, text: str) -> Pair | InvalidLine:
    """Split a stripped, non-blank line into two fields and check both ids."""
    fields: list[str]
    reason: str | None = None
    if "," in text:
        fields = [field.strip() for field in text.split(",")]
        if len(fields) != 2:
            reason = f"{_TWO_FIELDS}, got {len(fields)} separated by commas: {_show(text)}"
        elif not all(fields):
            reason = f"{_TWO_FIELDS}, got an empty one: {_show(text)}"
        elif any(len(field.split()) > 1 for field in fields):
            reason = f"{_TWO_FIELDS} split by white space or one comma, not both: {_show(text)}"
    else:
        fields = text.split()
        if len(fields) != 2:
            reason = f"{_TWO_FIELDS}, got {len(fields)}: {_show(text)}"
    if reason is None:
        reason = _check_id("app id", fields[0], MAX_APP_ID) or _check_id(
            "session id", fields[1], MAX_SESSION_ID
        )
    if reason is None:
        return Pair(fields[0], fields[1], number)
    return InvalidLine(number, reason, _kept(fields, 0), _kept(fields, 1))


def app_id_problem(value: str) -> str | None:
    """Why `value` cannot be an app id (as SESSIONS lines are checked), or None if it can."""
    return _check_id("app id", value, MAX_APP_ID) if value else "app id is empty"


def session_id_problem(value: str) -> str | None:
    """Why `value` cannot be a session id, or None: ids from the API are checked like lines."""
    return _check_id("session id", value, MAX_SESSION_ID) if value else "session id is empty"


def _check_id(label: str, value: str, max_len: int) -> str | None:
    """Why `value` (non-empty) cannot be an id, or None if it can."""
    if bad := _BAD_CHAR.search(value):
        return f"{label} {_show(value)} has a character outside [A-Za-z0-9_-]: {bad.group()!r}"
    if len(value) > max_len:
        return f"{label} is {len(value)} characters long, over {max_len}: {_show(value)}"
    if value.upper() in _RESERVED:
        return f"{label} {value!r} is a reserved device name on Windows"
    return None


def _show(value: str) -> str:
    """Quote a value for a message: escaped, so no control character reaches a log or terminal."""
    quoted = repr(value)
    return quoted if len(quoted) <= _SHOW else quoted[: _SHOW - 3] + "..."


def _kept(fields: list[str], index: int) -> str | None:
    if index >= len(fields):
        return None
    return fields[index][:_KEEP] or None


def _take(it: Iterator[Pair | InvalidLine], n: int) -> list[Pair | InvalidLine]:
    out = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out


def count_lines(path: str) -> int | None:
    """Lines of a regular SESSIONS file that may hold a pair (not blank, not a comment): the
    display's total, an upper bound (a header, duplicates and bad lines count too). None for
    a FIFO or a device, which a second reader would take lines from."""
    try:
        with open(path, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                return None
            count = 0
            for raw in stream:  # an over-long line costs a long read, never a crash: bytes
                content = raw.strip()
                if content and not content.startswith(b"#"):
                    count += 1
            return count
    except OSError:
        return None  # the reading proper reports it


async def read_file(path: str) -> AsyncIterator[Pair | InvalidLine]:
    """The items of a SESSIONS file, read a batch at a time in a worker thread."""
    with open_sessions(path) as stream:
        it = read_pairs(stream)
        while batch := await anyio.to_thread.run_sync(
            _take, it, READ_BATCH, abandon_on_cancel=True
        ):
            for item in batch:
                yield item


async def read_live(stream: BinaryIO) -> AsyncIterator[Pair | InvalidLine]:
    """Pairs from a pipe, each as soon as its line arrives.

    A daemon thread reads, so that a pipe left open by the writer can neither hold back the
    pairs already written (it hands over what it has whenever the pipe runs dry) nor keep the
    process alive after a signal (anyio's worker threads are joined at exit).
    """
    send, recv = anyio.create_memory_object_stream[list[Pair | InvalidLine]](4)
    token = anyio.lowlevel.current_token()
    failure: list[BaseException] = []

    def hand_over(batch: list[Pair | InvalidLine]) -> None:
        anyio.from_thread.run(send.send, batch, token=token)

    def pump() -> None:
        try:
            batch: list[Pair | InvalidLine] = []
            for item in read_pairs(stream):
                batch.append(item)
                if len(batch) >= READ_BATCH or not _more_waiting(stream):
                    hand_over(batch)
                    batch = []
            if batch:
                hand_over(batch)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.RunFinishedError):
            return
        except Exception as exc:  # handed to the reading task, which raises it
            failure.append(exc)
        with suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(send.close, token=token)

    threading.Thread(target=pump, name="rtk-export-stdin", daemon=True).start()
    async with recv:
        async for batch in recv:
            for item in batch:
                yield item
    if failure:
        raise failure[0]


def _more_waiting(stream: BinaryIO) -> bool:
    """Whether reading on would not block: bytes (or EOF) wait in the pipe."""
    try:
        return bool(select.select([stream.fileno()], [], [], 0)[0])
    except (OSError, ValueError):  # not a real file: it never blocks
        return True
