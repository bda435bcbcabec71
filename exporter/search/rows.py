"""One session's archived files -> the rows the index holds: every chat message and every
transcript utterance, with its time (an utterance's: the session's start plus its offset)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from exporter.render.chat import Damaged, read_messages
from exporter.search import transcript

KINDS = ("chat", "transcript")
_MAX_TRANSCRIPT = 256 * 1024 * 1024  # read whole: a transcript of days is a few MB


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


@dataclass(frozen=True, slots=True)
class Row:
    ms: int | None  # the hit's time, milliseconds since the epoch (None: not known)
    author: str
    message_id: str
    kind: str
    text: str


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def session_rows(files: list[tuple[SessionFile, Path]]) -> Iterator[Row]:
    """The rows of a session whose files (each with where to read it) are given: the chat's
    messages first, then the transcript's utterances, timed from the chat's first message.
    Unreadable (maybe after rows were yielded) when a file is damaged."""
    start: int | None = None
    for f, path in files:
        if f.kind != "chat":
            continue
        try:
            for m in read_messages(path, f.sha256, f.size):
                ms = None if m.when is None else epoch_ms(m.when)
                if ms is not None and (start is None or ms < start):
                    start = ms
                text = m.text if m.kind == "TEXT_MESSAGE" else (m.file_name or m.link or m.text)
                if text.strip():
                    yield Row(ms, m.name, m.id, "chat", text)
        except Damaged as exc:
            raise Unreadable(f.rel, str(exc)) from None
    for f, path in files:
        if f.kind == "transcript":
            yield from _utterances(f, path, start)


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
