"""The site as a whole: sessions rendered again only when their inputs changed, pages of
sessions that left the manifest removed, and the index pages (1,000 sessions each) rewritten
only when their content changed."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from exporter.archive import SITE_RECORD_NAME, is_temp_name
from exporter.manifest import Manifest
from exporter.render import conversation, pages
from exporter.render.chat import Damaged, read_messages
from exporter.render.record import ITEM_FOLDERS, RenderRecord, Row, Unit
from exporter.render.views import (
    LINKABLE,
    Views,
    filter_fold,
    href,
    inside,
    read_text,
    recording_view,
    relative_root,
)

PAGE_SIZE = 1000  # sessions on one index page
_COMMIT_EVERY = 200


@dataclass(slots=True)
class Outcome:
    rendered: int = 0
    unchanged: int = 0
    damaged: list[str] = field(default_factory=list)  # paths relative to DIR
    removed: int = 0
    index_pages: int = 0
    index_written: int = 0


class SessionDamaged(Exception):
    def __init__(self, rel: str, why: str) -> None:
        super().__init__(f"{rel}: {why}")
        self.rel = rel
        self.why = why


def render_site(
    out_dir: Path,
    manifest_path: Path,
    site: Path,
    warn: Callable[[str], None] = lambda _line: None,
) -> Outcome:
    """Render what changed since the last run into `site`; damaged inputs are reported to
    `warn` and their sessions left out."""
    site.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(site)
    outcome = Outcome()
    record = RenderRecord(site / SITE_RECORD_NAME, pages.DIGEST)
    try:
        manifest = Manifest(manifest_path)
        try:
            record.load_manifest(manifest.iter_lines())
        finally:
            manifest.close()
        to_dir = relative_root(out_dir, site)
        for n, (app, sid) in enumerate(record.sessions(), start=1):
            units = record.units(app, sid)
            fp = fingerprint(units, out_dir, to_dir)
            page = site / app / f"{sid}.html"
            if record.fingerprint(app, sid) == fp and page.is_file():
                record.touch(app, sid)
                outcome.unchanged += 1
            else:
                try:
                    row = render_session(out_dir, site, to_dir, app, sid, units)
                except SessionDamaged as exc:
                    warn(f"{out_dir / exc.rel}: {exc.why}")
                    outcome.damaged.append(exc.rel)
                    record.drop(app, sid)
                    page.unlink(missing_ok=True)
                else:
                    record.put(fp, row)
                    outcome.rendered += 1
            if n % _COMMIT_EVERY == 0:
                record.commit()
        record.commit()
        for app, sid in record.gone():
            (site / app / f"{sid}.html").unlink(missing_ok=True)
            outcome.removed += 1
        write_index(record, site, outcome)
    finally:
        record.close()
    return outcome


def fingerprint(units: list[Unit], out_dir: Path, to_dir: str) -> str:
    """What a session page depends on: the manifest's record of each file, and the file as it
    is on disk now (size and mtime: a file damaged since is read, and found, again)."""
    h = hashlib.sha256(f"{to_dir}\n".encode())
    for u in units:
        try:
            st = os.stat(out_dir / u.path)
            disk = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            disk = "missing"
        h.update(f"{u.kind}\0{u.message_id}\0{u.path}\0{u.sha256}\0{u.size}\0{disk}\n".encode())
    return h.hexdigest()


def render_session(
    out_dir: Path, site: Path, to_dir: str, app: str, sid: str, units: list[Unit]
) -> Row:
    """Write one session's page; its index row. SessionDamaged names the file at fault."""
    by_kind = {u.kind: u for u in units if u.kind not in ITEM_FOLDERS}
    recordings = [u for u in units if u.kind == "recording"]
    for u in (*by_kind.values(), *recordings):
        if not inside(u.path, app):
            raise SessionDamaged(u.path, "is not a path in the archive")
    attachments = {u.message_id: u for u in units if u.kind == "attachment"}
    views = Views(out_dir, app, to_dir, attachments)
    chat = by_kind.get("chat")
    messages: Iterator[Any] = iter(())
    start = ""
    if chat is not None:
        messages = views.messages(
            _named(chat.path, read_messages(out_dir / chat.path, chat.sha256, chat.size))
        )
        first = next(messages, None)  # the header shows the start: its first message's time
        start = views.stats.start
        if first is not None:
            messages = _chain(first, messages)
    talk = by_kind.get("transcript")
    said = None
    if talk is not None:
        try:
            said = conversation.read(out_dir / talk.path, talk.path, talk.sha256, talk.size)
        except Damaged as exc:
            raise SessionDamaged(talk.path, str(exc)) from None
        if said.raw is not None:
            said.raw = _named(talk.path, said.raw)
    extras: list[dict[str, Any]] = []
    if (x := by_kind.get("summary")) is not None:
        chunks = _named(x.path, read_text(out_dir / x.path, x.sha256, x.size))
        extras.append({"title": "Summary", "chunks": chunks})
    files: list[dict[str, str | None]] = [
        {"href": href(to_dir, f.path), "label": f"{kind} ({f.path.rsplit('/', 1)[-1]})", "size": ""}
        for kind in ("chat", "transcript", "summary")
        if (f := by_kind.get(kind)) is not None
    ]
    # Played in the page or linked, never read: by the attachments' rule, only a type that
    # opens inertly is linked.
    shown = [recording_view(to_dir, r.path, r.size) for r in recordings]
    files += [{"href": r.href, "label": f"recording ({r.name})", "size": r.size} for r in shown]
    played = [r for r in shown if r.player]
    context = {
        "app": app,
        "sid": sid,
        "start": start,
        "chat": chat is not None,
        "messages": messages,
        "stats": views.stats,
        "transcript": said,
        "transcript_href": href(to_dir, talk.path) if talk and _linkable(talk.path) else None,
        "transcript_name": talk.path.rsplit("/", 1)[-1] if talk is not None else "",
        "extras": extras,
        "files": files,
        "recordings": played,
        "index_href": "../index.html",
    }
    pages.write_atomic(site / app / f"{sid}.html", pages.session_page(context))
    kinds: list[str] = [k for k in ("chat", "transcript", "summary") if k in by_kind]
    for n, what in ((len(attachments), "attachment"), (len(recordings), "recording")):
        if n:
            kinds.append(f"{n} {what}{'' if n == 1 else 's'}")
    stats = views.stats
    words = " ".join((sid.lower(), *map(filter_fold, stats.names), *stats.words))
    return Row(app, sid, start, list(stats.names), stats.count, ", ".join(kinds), words)


def _linkable(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower().lstrip(".") in LINKABLE


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _named(rel: str, source: Iterator[Any]) -> Iterator[Any]:
    """The source, its damage reported with the file's name (relative to DIR)."""
    try:
        yield from source
    except Damaged as exc:
        raise SessionDamaged(rel, str(exc)) from None


def write_index(record: RenderRecord, site: Path, outcome: Outcome) -> None:
    """index.html, index-2.html, ...: by app, newest first, at most PAGE_SIZE sessions each;
    a page whose inputs did not change is not made again."""
    apps = record.apps()
    total = sum(n for _, n in apps)
    count = max(1, math.ceil(total / PAGE_SIZE))
    names = [page_name(i) for i in range(1, count + 1)]
    app_links, seen = [], 0
    for app, n in apps:
        app_links.append(
            {"app": app, "count": n, "href": f"{names[seen // PAGE_SIZE]}#app-{quote(app)}"}
        )
        seen += n
    after = None
    for number, name in enumerate(names, start=1):
        batch, last, rows_digest = record.page(after, PAGE_SIZE)
        context = _index_context(batch, number, count, total, app_links, names)
        # What the page is made of, without making it: a rerun that changed nothing on this
        # page neither renders nor writes it.
        inputs = hashlib.sha256(
            f"{pages.DIGEST}\0{rows_digest}\0".encode()
            + json.dumps(context, sort_keys=True).encode()
        ).hexdigest()
        path = site / name
        if record.page_sha(name) != inputs or not path.is_file():
            pages.write_atomic(path, pages.index_page(context, record.page_words(after, PAGE_SIZE)))
            record.set_page(name, inputs)
            outcome.index_written += 1
        after = last
    for name in record.page_names():
        if name not in names:
            (site / name).unlink(missing_ok=True)
            record.set_page(name, None)
    record.commit()
    outcome.index_pages = count


def page_name(number: int) -> str:
    return "index.html" if number == 1 else f"index-{number}.html"


def _index_context(
    batch: list[Row],
    number: int,
    count: int,
    total: int,
    app_links: list[dict[str, Any]],
    names: list[str],
) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for r in batch:
        if not groups or groups[-1]["app"] != r.app:
            groups.append({"app": r.app, "rows": []})
        groups[-1]["rows"].append(
            {
                "href": f"{quote(r.app)}/{quote(r.sid)}.html",
                "sid": r.sid,
                "start": r.start,
                "iso": f"{r.start[:10]}T{r.start[11:19]}Z" if r.start.endswith(" UTC") else None,
                "names": r.names,
                "messages": r.messages,
                "kinds": r.kinds,
            }
        )
    first = (number - 1) * PAGE_SIZE + 1
    return {
        "page": number,
        "pages": count,
        "total": total,
        "first": first,
        "last": first + len(batch) - 1,
        "apps": app_links,
        "page_links": [
            {"n": i, "href": name, "here": i == number} for i, name in enumerate(names, start=1)
        ],
        "groups": groups,
        "shown": len(batch),
    }


def _remove_stale_temps(site: Path) -> None:
    """Temporary pages a killed run left behind, in SITE and its app folders."""
    for top in os.scandir(site):
        if top.is_file(follow_symlinks=False) and is_temp_name(top.name):
            os.unlink(top.path)
        elif top.is_dir(follow_symlinks=False):
            for entry in os.scandir(top.path):
                if entry.is_file(follow_symlinks=False) and is_temp_name(entry.name):
                    os.unlink(entry.path)
