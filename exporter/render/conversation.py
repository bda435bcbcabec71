"""A transcript on a session page: its utterances (speaker, start, text) when the archived file
reads as one, else its text as archived with a note saying why; never a failed page."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from exporter import transcript
from exporter.render.chat import Damaged
from exporter.render.views import read_text, utc_text

MAX_PARSED = 64 * 1024 * 1024  # larger is shown as archived, streamed (days of talk are MBs)


@dataclass(frozen=True, slots=True)
class Said:
    speaker: str
    time: str  # shown: an offset from the session's start (0:01:04), or a UTC time
    iso: str | None  # the <time> element's datetime: a duration (PT64.5S) or a UTC time
    text: str


@dataclass(slots=True)
class Conversation:
    said: list[Said] = field(default_factory=list)
    raw: Iterator[str] | None = None  # the file as archived, when it is shown so
    note: str = ""  # why it is shown raw


def read(path: Path, rel: str, sha256: str | None, size: int | None) -> Conversation:
    """The transcript at `path` (`rel` in DIR: its name says its format). Damaged when it is not
    the file the manifest records; a file that does not parse is shown raw, with a note."""
    fmt = PurePosixPath(rel).suffix.lower().lstrip(".")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PARSED + 1)
    except OSError as exc:
        raise Damaged(f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_PARSED:
        note = f"it is over {MAX_PARSED // (1024 * 1024)} MiB"
        return Conversation(raw=read_text(path, sha256, size), note=note)
    if size is not None and len(data) != size:
        raise Damaged(f"is {len(data)} bytes, the manifest says {size}")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise Damaged("does not match its SHA-256 in the manifest")
    try:
        utterances = transcript.parse(data, fmt)
    except transcript.Malformed as exc:
        raw = data.decode("utf-8", errors="replace")
        return Conversation(raw=iter((raw,)), note=f"it {exc}")
    said = [_said(u) for u in utterances if u.text.strip() or u.speaker.strip()]
    if not said:
        return Conversation(
            raw=iter((data.decode("utf-8", errors="replace"),)), note="it has no utterance"
        )
    return Conversation(said=said)


def _said(u: transcript.Utterance) -> Said:
    if u.at is not None:
        return Said(u.speaker, *utc_text(u.at), u.text)
    if u.offset is not None:
        whole = int(u.offset)
        h, rest = divmod(whole, 3600)
        shown = f"{h}:{rest // 60:02d}:{rest % 60:02d}"
        return Said(u.speaker, shown, f"PT{u.offset:.3f}".rstrip("0").rstrip(".") + "S", u.text)
    return Said(u.speaker, "", None, u.text)
