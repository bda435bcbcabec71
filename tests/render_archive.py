"""Hand-made archives for the render tests: chat CSVs, transcripts, summaries and attachment
files in a folder, with manifest lines that record their real sizes and SHA-256s."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from exporter.standin import CHAT_CSV_HEADER

# The stand-in's columns: the documented chat CSV export (reference/api-notes.md).
HEADER = CHAT_CSV_HEADER

# Every one of these must show as text and do nothing.
HOSTILE = (
    "<script>document.title='pwned-script'</script>",
    "<img src=x onerror=\"document.title='pwned-img'\">",
    "<svg onload=\"document.title='pwned-svg'\"></svg>",
    "</script><script>document.title='pwned-close'</script>",
    "<!-- <script>document.title='pwned-comment'</script> -->",
    '<meta http-equiv="refresh" content="0;url=javascript:document.title=\'pwned-meta\'">',
    "<style>body{display:none}</style>",
    "<a href=\"javascript:document.title='pwned-js'\">click</a>",
    "data:text/html,<script>document.title='pwned-data'</script>",
    "javascript:document.title='pwned-scheme'",
    "{{ 7*7 }} {% raw %} ${7*7}",
    "&lt;b&gt;entity&lt;/b&gt; & \u2028 \u2029 \\u003c",
    '<iframe src="https://example.invalid/"></iframe>',
    '<base href="https://example.invalid/">',
    '<form action="https://example.invalid/"><button>go</button></form>',
    '<link rel=stylesheet href="https://example.invalid/x.css">',
)


def png(width: int = 2, height: int = 2) -> bytes:
    """A valid RGB PNG of the given size."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + b"\x20\x80\xe0" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass
class Msg:
    id: str
    name: str
    payload: str
    created: str
    kind: str = "TEXT_MESSAGE"
    pinned: bool = False
    edited: bool = False


def chat_csv(session_id: str, messages: list[Msg], header: tuple[str, ...] = HEADER) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(header)
    for m in messages:
        values = {
            "id": m.id,
            "participantId": "p-" + m.name.encode().hex()[:8],
            "sessionId": session_id,
            "meetingId": "meeting-1",
            "displayName": m.name,
            "pinned": "true" if m.pinned else "false",
            "isEdited": "true" if m.edited else "false",
            "payloadType": m.kind,
            "payload": m.payload,
            "createdAt": m.created,
        }
        w.writerow([values[c] for c in header])
    return out.getvalue().encode()


@dataclass
class Archive:
    """DIR with its manifest; each `add_*` stores a file and appends its manifest line."""

    root: Path
    lines: list[dict[str, object]] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.jsonl"

    def _store(
        self, app: str, session: str, kind: str, rel: str, body: bytes, **extra: object
    ) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        self.line(
            app,
            session,
            kind,
            path=rel,
            bytes=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            **extra,
        )

    def line(
        self, app: str, session: str, kind: str, status: str = "exported", **kw: object
    ) -> None:
        doc: dict[str, object] = {
            "app_id": app,
            "session_id": session,
            "kind": kind,
            "status": status,
            "path": None,
            "bytes": None,
            "sha256": None,
            "attempts": 1,
            "error": None,
            "finished_at": "2026-11-20T10:00:00Z",
            "run_id": "run-test",
        }
        doc.update(kw)
        self.lines.append(doc)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.manifest, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")

    def add_chat(self, app: str, session: str, messages: list[Msg], **kw: object) -> Path:
        body = chat_csv(session, messages, **kw)  # type: ignore[arg-type]
        self._store(app, session, "chat", f"{app}/{session}.csv", body)
        return self.root / app / f"{session}.csv"

    def add_text(self, app: str, session: str, kind: str, body: str, fmt: str = "csv") -> None:
        name = f"{session}.transcript.{fmt}" if kind == "transcript" else f"{session}.summary.txt"
        self._store(app, session, kind, f"{app}/{name}", body.encode())

    def add_attachment(self, app: str, session: str, message_id: str, ext: str, body: bytes) -> str:
        rel = f"{app}/{session}.attachments/{message_id}{'.' + ext if ext else ''}"
        self._store(app, session, "attachment", rel, body, message_id=message_id)
        return rel


def simple_session(
    archive: Archive, app: str, session: str, start_minute: int, *texts: str
) -> None:
    """A session of one text message per given text, one minute apart from `start_minute`."""
    msgs = [
        Msg(
            f"{session}-m{i}",
            f"Person {i % 3}",
            text,
            f"2026-11-20T{8 + (start_minute + i) // 60:02d}:{(start_minute + i) % 60:02d}:00.000Z",
        )
        for i, text in enumerate(texts or ("hello",))
    ]
    archive.add_chat(app, session, msgs)
