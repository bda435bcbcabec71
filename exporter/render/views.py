"""What a page shows of one session: its messages as views (attachments resolved to archived
copies, or shown as text), the words and names the filter searches, and its index row."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

from exporter.render.chat import Damaged, HashingReader, Message

if TYPE_CHECKING:
    from exporter.render.record import Unit

IMAGE_TYPES = frozenset({"png", "jpg", "jpeg", "gif", "webp", "avif", "bmp", "ico", "svg"})
# Files linked to their archived copy: types a browser shows inertly or hands to another
# program. An HTML, SVG, XML or extension-less file is not linked: opened from file:// it
# could run a stranger's script with the reader's local access.
LINKABLE = frozenset(
    {
        *(IMAGE_TYPES - {"svg"}),
        *(
            "heic",
            "pdf",
            "txt",
            "csv",
            "tsv",
            "json",
            "md",
            "log",
            "srt",
            "vtt",
            "rtf",
        ),
        *(
            "zip",
            "gz",
            "tgz",
            "tar",
            "bz2",
            "xz",
            "7z",
            "rar",
        ),
        *(
            "doc",
            "docx",
            "xls",
            "xlsx",
            "ppt",
            "pptx",
            "odt",
            "ods",
            "odp",
            "key",
            "pages",
            "numbers",
        ),
        *(
            "mp3",
            "m4a",
            "wav",
            "ogg",
            "oga",
            "flac",
            "mp4",
            "m4v",
            "mov",
            "webm",
            "mkv",
            "avi",
        ),
    }
)
# Recordings played in the page (a <video> or <audio> whose source is the archived file); any
# other type is only linked. A browser that cannot decode one (H.264 in some builds) still
# shows its controls, and the link.
VIDEO_TYPES = frozenset({"mp4", "m4v", "webm", "ogv", "mov"})
AUDIO_TYPES = frozenset({"mp3", "m4a", "aac", "wav", "ogg", "oga", "opus", "flac", "weba"})
_WORD = re.compile(r"\w+")
_CHUNK = 64 * 1024


def inside(rel: str, app: str) -> bool:
    """A manifest path that stays in DIR/<app>/ (a hand-edited line must not point out)."""
    parts = PurePosixPath(rel).parts
    return (
        len(parts) >= 2
        and parts[0] == app
        and not rel.startswith("/")
        and ".." not in parts
        and "\\" not in rel
    )


def href(to_dir: str, rel: str) -> str:
    """A relative link from a session page to a file of the archive."""
    return f"{to_dir}/{quote(rel)}" if to_dir != "." else quote(rel)


@dataclass(slots=True)
class MessageView:
    name: str
    time: str
    iso: str | None
    text: str
    pinned: bool
    edited: bool
    is_attachment: bool = False
    image: str | None = None
    file_href: str | None = None
    file_saved: str | None = None
    file_label: str = ""
    link: str | None = None


@dataclass(slots=True)
class Stats:
    """Gathered while the page streams: what the index shows of the session."""

    count: int = 0
    start: str = ""
    names: dict[str, None] = field(default_factory=dict)
    words: dict[str, None] = field(default_factory=dict)

    def add_words(self, text: str) -> None:
        # Every word, as `search` finds them (no cut: the filter must not search a subset).
        for word in _WORD.findall(filter_fold(text)):
            self.words[word] = None


def filter_fold(text: str) -> str:
    """The filter's folding, done the same way in filter.js and close to FTS5's unicode61
    remove_diacritics: compatibility forms unified, marks dropped, lower case."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def show_time(m: Message) -> tuple[str, str | None]:
    """(shown, machine-readable) time of a message: UTC, to the second."""
    return (m.created, None) if m.when is None else utc_text(m.when)


def utc_text(w: datetime) -> tuple[str, str]:
    """(shown, machine-readable) form of a UTC time, to the second: messages and utterances."""
    day = f"{w.year:04d}-{w.month:02d}-{w.day:02d}"
    clock = f"{w.hour:02d}:{w.minute:02d}:{w.second:02d}"
    return f"{day} {clock} UTC", f"{day}T{clock}Z"


@dataclass(frozen=True, slots=True)
class RecordingView:
    name: str  # the file's name
    player: str | None  # "video", "audio", or None (not played in the page)
    href: str | None  # the archived file, relative; None when its type is not linked
    size: str  # " (1.2 MiB)", or ""


def recording_view(to_dir: str, rel: str, size: int | None) -> RecordingView:
    """How a session page shows one archived recording (`rel` already checked `inside`)."""
    ext = PurePosixPath(rel).suffix.lower().lstrip(".")
    player = "video" if ext in VIDEO_TYPES else "audio" if ext in AUDIO_TYPES else None
    link = href(to_dir, rel) if ext in LINKABLE or player else None
    return RecordingView(rel.rsplit("/", 1)[-1], player, link, _size(size))


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f" ({n} {unit})" if unit == "bytes" else f" ({n:.1f} {unit})"
        n = n / 1024  # type: ignore[assignment]
    return ""


class Views:
    """Turns a session's messages into views, resolving attachments against the archive."""

    def __init__(self, out_dir: Path, app: str, to_dir: str, attachments: dict[str, Unit]):
        self.out_dir = out_dir
        self.app = app
        self.to_dir = to_dir
        self.attachments = attachments
        self.stats = Stats()

    def messages(self, messages: Iterator[Message]) -> Iterator[MessageView]:
        stats = self.stats
        for m in messages:
            stats.count += 1
            if m.name not in stats.names:
                stats.names[m.name] = None
            shown, iso = show_time(m)
            if stats.count == 1:
                stats.start = shown
            view = MessageView(m.name, shown, iso, m.text, m.pinned, m.edited)
            if m.kind in ("IMAGE_MESSAGE", "FILE_MESSAGE"):
                self._attachment(m, view)
                stats.add_words(m.file_name or "")
            else:
                stats.add_words(m.text)
            yield view

    def _attachment(self, m: Message, view: MessageView) -> None:
        image = m.kind == "IMAGE_MESSAGE"
        view.is_attachment = True
        view.text = ""
        # A payload we cannot read is shown as text; one read whole that names no link, not.
        view.link = m.link or (None if m.file_name else m.text.strip() or None)
        view.file_label = (m.file_name or ("Image" if image else "File")) + _size(m.file_size)
        unit = self.attachments.get(m.id)
        if unit is None or not inside(unit.path, self.app):
            return
        if not (self.out_dir / unit.path).is_file():
            return
        ext = PurePosixPath(unit.path).suffix.lower().lstrip(".")
        link = href(self.to_dir, unit.path)
        if image and ext not in ("html", "htm", "xhtml", "xml"):
            # An <img> only ever decodes an image (an SVG in one runs no script), whatever
            # the file holds: an image message is shown inline even without an extension.
            view.image = link
        elif ext in LINKABLE:
            view.file_href = link
        else:
            view.file_saved = unit.path


def read_text(path: Path, sha256: str | None, size: int | None) -> Iterator[str]:
    """A transcript or summary as text chunks, checked against the manifest at the end."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Damaged(f"cannot be read: {exc.strerror or exc}") from None
    hashing = HashingReader(fh)
    try:
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := hashing.read(_CHUNK):
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)
        hashing.finish(sha256, size)
    except OSError as exc:
        raise Damaged(f"cannot be read: {exc.strerror or exc}") from None
    finally:
        fh.close()


def relative_root(out_dir: Path, site: Path) -> str:
    """The archive's root as seen from a session page (SITE/<app>/), in URL form."""
    rel = os.path.relpath(out_dir.resolve(), (site / "_").resolve())
    return rel.replace(os.sep, "/")
