"""One session's archived files -> the rows the index holds: every chat message and every
transcript utterance, with its time (an utterance's: the session's start plus its offset)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from exporter import transcript
from exporter.render.chat import REQUIRED, Damaged, HashingReader, payload_link

KINDS = ("chat", "transcript")
_MAX_TRANSCRIPT = 256 * 1024 * 1024  # read whole: a transcript of days is a few MB
_FIELD_LIMIT = 16 * 1024 * 1024  # render's limit too: a longer message is damage, not chat
_CHUNK = 64 * 1024


class Unreadable(Exception):
    """A session file that cannot be read as what the manifest says; names the file."""

    def __init__(self, rel: str, why: str) -> None:
        super().__init__(f"{rel}: {why}")
        self.rel = rel


@dataclass(frozen=True, slots=True)
class SessionFile:
    """One archived file of a session, as its last manifest line records it."""

    kind: str  # chat or transcript
    rel: str  # relative to the archive's root
    sha256: str
    size: int

    @property
    def format(self) -> str:
        return self.rel.rsplit(".", 1)[-1].lower() if self.kind == "transcript" else "csv"


class Row(NamedTuple):
    """One message or utterance. A tuple, not a frozen dataclass: made two million times in
    a build, where a frozen dataclass's __init__ costs several times as much."""

    ms: int | None  # the hit's time, milliseconds since the epoch (None: not known)
    author: str
    message_id: str
    kind: str
    text: str


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def ms_of(text: str) -> int | None:
    """An RFC 3339 time (a naive one read as UTC, as the export writes) in ms, or None."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return epoch_ms(moment)


def session_rows(files: list[tuple[SessionFile, Path]]) -> Iterator[Row]:
    """The rows of a session whose files (each with where to read it) are given: the chat's
    messages first, then the transcript's utterances, timed from the chat's first message.
    Unreadable (maybe after rows were yielded) when a file is damaged."""
    start: int | None = None
    for f, path in files:
        if f.kind != "chat":
            continue
        for row in _chat(f, path):
            if row.ms is not None and (start is None or row.ms < start):
                start = row.ms
            yield row
    for f, path in files:
        if f.kind == "transcript":
            yield from _utterances(f, path, start)


def _chat(f: SessionFile, path: Path) -> Iterator[Row]:
    """A chat CSV's messages, columns by header name, hashed while read (render.chat's rules
    of damage, without its per-message record: only what the index keeps is built)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as exc:
        raise Unreadable(f.rel, f"cannot be read: {exc.strerror or exc}") from None
    hashing = HashingReader(fh)
    old_limit = csv.field_size_limit(_FIELD_LIMIT)
    try:
        text = io.TextIOWrapper(
            io.BufferedReader(hashing, _CHUNK), encoding="utf-8-sig", newline=""
        )
        yield from _chat_rows(csv.reader(text, strict=True))
        hashing.finish(f.sha256, f.size)
    except Damaged as exc:
        raise Unreadable(f.rel, str(exc)) from None
    except UnicodeDecodeError:
        raise Unreadable(f.rel, "is not valid UTF-8") from None
    except csv.Error as exc:
        raise Unreadable(f.rel, f"is not a readable CSV ({exc})") from None
    except OSError as exc:
        raise Unreadable(f.rel, f"cannot be read: {exc.strerror or exc}") from None
    finally:
        csv.field_size_limit(old_limit)
        fh.close()


def _chat_rows(reader: Iterator[list[str]]) -> Iterator[Row]:
    header = next(reader, None)
    if header is None:
        raise Damaged("is empty (no header row)")
    columns = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise Damaged(f"has no column {', '.join(missing)}")
    width = len(header)
    i_id, i_name, i_kind = columns["id"], columns["displayName"], columns["payloadType"]
    i_payload, i_created = columns["payload"], columns["createdAt"]
    for number, row in enumerate(reader, start=2):
        if len(row) != width:
            if not row:
                continue  # a blank line
            raise Damaged(f"row {number} has {len(row)} fields, the header {width}")
        text = row[i_payload]
        if row[i_kind].strip() != "TEXT_MESSAGE":
            # An image or a file: its name, else its link, are the words it has.
            link, name, _ = payload_link(text)
            text = name or link or text
        if text.strip():
            yield Row(ms_of(row[i_created]), row[i_name], row[i_id], "chat", text)


def _utterances(f: SessionFile, path: Path, start: int | None) -> Iterator[Row]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_TRANSCRIPT + 1)
    except OSError as exc:
        raise Unreadable(f.rel, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) != f.size:
        raise Unreadable(f.rel, f"is {len(data)} bytes, the manifest says {f.size}")
    if hashlib.sha256(data).hexdigest() != f.sha256:
        raise Unreadable(f.rel, "does not match its SHA-256 in the manifest")
    try:
        said = transcript.parse(data, f.format)
    except transcript.Malformed as exc:
        raise Unreadable(f.rel, str(exc)) from None
    for u in said:
        if not u.text.strip():
            continue
        ms: int | None = None
        if u.at is not None:
            ms = epoch_ms(u.at)
        elif u.offset is not None and start is not None:
            ms = start + int(u.offset * 1000)
        yield Row(ms, u.speaker, u.ident, "transcript", u.text)
