"""Archives for the search tests, in the export's real format (render_archive's hand-made
archive, plus transcripts in each archived format), and the index searched in-process."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from exporter.archive import SEARCH_INDEX_NAME
from exporter.search.index import Filters, Hit, SearchIndex
from exporter.search.query import fold, parse, to_match
from exporter.search.update import Updated, update_folder
from tests.render_archive import Archive, Msg

APP = "app1"
Cue = tuple[float, str, str]  # offset in seconds, speaker, text


def transcript_body(fmt: str, cues: list[Cue]) -> bytes:
    """A transcript as the stand-in serves it (exporter/standin/content.py, `_small`)."""
    if fmt == "json":
        doc = [{"start": t, "end": t + 4, "name": n, "text": x} for t, n, x in cues]
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(("startTime", "endTime", "displayName", "transcript"))
        w.writerows((t, t + 4, n, x) for t, n, x in cues)
        return out.getvalue().encode()

    def stamp(s: float, sep: str) -> str:
        return f"00:{int(s) // 60:02d}:{int(s) % 60:02d}{sep}{int(s * 1000) % 1000:03d}"

    if fmt == "srt":
        return "".join(
            f"{i + 1}\n{stamp(t, ',')} --> {stamp(t + 4, ',')}\n{n}: {x}\n\n"
            for i, (t, n, x) in enumerate(cues)
        ).encode()
    return (
        "WEBVTT\n\n"
        + "".join(f"{stamp(t, '.')} --> {stamp(t + 4, '.')}\n<v {n}>{x}\n\n" for t, n, x in cues)
    ).encode()


def add_transcript(a: Archive, app: str, session: str, fmt: str, cues: list[Cue]) -> None:
    rel = f"{app}/{session}.transcript.{fmt}"
    a._store(app, session, "transcript", rel, transcript_body(fmt, cues))


def session(a: Archive, sid: str, *texts: str, day: int = 20, name: str = "Ana") -> None:
    """One message per text, a minute apart from 09:00 on 2026-11-<day>."""
    a.add_chat(
        APP,
        sid,
        [
            Msg(f"{sid}-m{i}", name, text, f"2026-11-{day:02d}T09:{i:02d}:00.000Z")
            for i, text in enumerate(texts)
        ],
    )


def update(root: Path, read: list[tuple[str, str]] | None = None) -> Updated:
    index = SearchIndex(root / SEARCH_INDEX_NAME)
    try:
        return update_folder(
            index, root, root / "manifest.jsonl", None if read is None else _append(read)
        )
    finally:
        index.close()


def _append(read: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    return lambda app, sid: read.append((app, sid))


def search(root: Path, query: str, author: str | None = None, **kw: object) -> list[Hit]:
    """The index brought up to date, then searched as the command does (text unmarked)."""
    update(root)
    index = SearchIndex(root / SEARCH_INDEX_NAME)
    try:
        filters = Filters(author=None if author is None else fold(author), **kw)  # type: ignore[arg-type]
        return index.search(to_match(parse(query)), filters, None)
    finally:
        index.close()


def texts(hits: list[Hit]) -> list[str]:
    return [h.text for h in hits]


__all__ = ["APP", "Archive", "Msg", "add_transcript", "search", "session", "texts", "update"]
