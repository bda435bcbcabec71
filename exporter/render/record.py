"""What render keeps in SITE between runs, in one SQLite file: per session the fingerprint of
its inputs and its index row; per index page the digest of what was written. During a run, a
temporary table holds each unit's last manifest line, so that nothing grows in memory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from exporter.manifest import Record as Line
from exporter.sessions import app_id_problem, session_id_problem

# Bump when what a page shows changes in code (template changes are seen by their digest):
# every page is then rendered again.
# 2: recordings listed; 3: every word, folded, for the filter; 4: transcripts as conversations
RENDER_VERSION = "4"
KINDS = ("chat", "transcript", "summary", "attachment", "recording")
# The kinds a session has several of, and the folder of each: their units are told apart by
# the item's id (a message id, a recording id).
ITEM_FOLDERS = {"attachment": "attachments", "recording": "recordings"}
_BATCH = 1000
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
    app TEXT NOT NULL, sid TEXT NOT NULL, fp TEXT NOT NULL, start TEXT NOT NULL,
    names TEXT NOT NULL, messages INTEGER NOT NULL, kinds TEXT NOT NULL,
    seen INTEGER NOT NULL, PRIMARY KEY (app, sid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_order ON sessions(app, start DESC, sid);
-- Apart, so that marking a session seen does not rewrite its (kilobytes of) words.
CREATE TABLE IF NOT EXISTS words(
    wapp TEXT NOT NULL, wsid TEXT NOT NULL, words TEXT NOT NULL, PRIMARY KEY (wapp, wsid));
CREATE TABLE IF NOT EXISTS pages(name TEXT PRIMARY KEY, sha TEXT NOT NULL);
CREATE TEMP TABLE units(
    app TEXT NOT NULL, sid TEXT NOT NULL, kind TEXT NOT NULL, mid TEXT NOT NULL,
    path TEXT, sha TEXT, size INTEGER, PRIMARY KEY (app, sid, kind, mid)) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Unit:
    """One archived file of a session, as its last manifest line records it."""

    kind: str
    message_id: str  # the item's id: a message id (attachments), a recording id; else ""
    path: str
    sha256: str | None
    size: int | None


Key = tuple[str, str, str]  # (app, start, session id): a row's place in the index


@dataclass(frozen=True, slots=True)
class Row:
    """A session as the index shows it."""

    app: str
    sid: str
    start: str
    names: list[str]
    messages: int
    kinds: str
    words: str


def item_id(line: Line) -> str | None:
    """The item id of an attachment or recording line: its `message_id` or `recording_id`
    where the manifest has one, else read from its path
    `<app>/<session>.<attachments|recordings>/<id>[.<ext>]`."""
    if isinstance(line.item, str):
        return line.item if _MESSAGE_ID.fullmatch(line.item) else None
    prefix = f"{line.app_id}/{line.session_id}.{ITEM_FOLDERS[line.kind]}/"
    if line.path is None or not line.path.startswith(prefix):
        return None
    name = line.path[len(prefix) :].split(".", 1)[0]
    return name if _MESSAGE_ID.fullmatch(name) else None


class RenderRecord:
    def __init__(self, path: Path, templates: str = "") -> None:
        self.path = path
        self.version = f"{RENDER_VERSION}:{templates}"
        try:
            self.db = self._open()
        except sqlite3.DatabaseError:
            # A damaged record costs one full render, never a failed one.
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self.db = self._open()
        self.run = int(self._meta("run") or "0") + 1
        self._set_meta("run", str(self.run))
        self.db.commit()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA temp_store=FILE")  # the units table may be large: keep it on disk
        db.executescript(_SCHEMA)
        if self._meta_of(db, "version") != self.version:
            db.execute("DELETE FROM sessions")
            db.execute("DELETE FROM pages")
            db.execute("DELETE FROM words")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (self.version,))
        db.commit()
        return db

    @staticmethod
    def _meta_of(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _meta(self, key: str) -> str | None:
        return self._meta_of(self.db, key)

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.commit()
        self.db.close()

    # -- the manifest, one unit a row -------------------------------------------------------

    def load_manifest(self, lines: Iterable[Line]) -> None:
        """Each unit's last line (file order: a later line replaces an earlier one). A line
        whose ids could not be a file name of ours is passed over: ids become page paths."""
        batch: list[tuple[str, str, str, str, str | None, str | None, int | None]] = []
        for line in lines:
            if line.kind not in KINDS or line.app_id is None or line.session_id is None:
                continue
            if app_id_problem(line.app_id) or session_id_problem(line.session_id):
                continue
            mid = ""
            if line.kind in ITEM_FOLDERS:
                found = item_id(line)
                if found is None:
                    continue
                mid = found
            stored = line.path is not None and line.sha256 is not None
            batch.append(
                (
                    line.app_id,
                    line.session_id,
                    line.kind,
                    mid,
                    line.path if stored else None,
                    line.sha256 if stored else None,
                    line.bytes if stored else None,
                )
            )
            if len(batch) >= _BATCH:
                self._put_units(batch)
        self._put_units(batch)
        self.db.commit()

    def _put_units(
        self, batch: list[tuple[str, str, str, str, str | None, str | None, int | None]]
    ) -> None:
        self.db.executemany("INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        batch.clear()

    def sessions(self) -> Iterator[tuple[str, str]]:
        """Every session with an archived file, in (app, session) order, a batch at a time."""
        last = ("", "")
        while True:
            rows = self.db.execute(
                "SELECT DISTINCT app, sid FROM units WHERE path IS NOT NULL AND (app, sid) > (?, ?)"
                " ORDER BY app, sid LIMIT ?",
                (*last, _BATCH),
            ).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1]

    def units(self, app: str, sid: str) -> list[Unit]:
        return [
            Unit(kind, mid, path, sha, size)
            for kind, mid, path, sha, size in self.db.execute(
                "SELECT kind, mid, path, sha, size FROM units"
                " WHERE app = ? AND sid = ? AND path IS NOT NULL ORDER BY kind, mid",
                (app, sid),
            )
        ]

    # -- sessions rendered -----------------------------------------------------------------

    def fingerprint(self, app: str, sid: str) -> str | None:
        row = self.db.execute(
            "SELECT fp FROM sessions WHERE app = ? AND sid = ?", (app, sid)
        ).fetchone()
        return None if row is None else str(row[0])

    def touch(self, app: str, sid: str) -> None:
        self.db.execute(
            "UPDATE sessions SET seen = ? WHERE app = ? AND sid = ?", (self.run, app, sid)
        )

    def put(self, fp: str, row: Row) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.app,
                row.sid,
                fp,
                row.start,
                json.dumps(row.names, ensure_ascii=False),
                row.messages,
                row.kinds,
                self.run,
            ),
        )
        self.db.execute(
            "INSERT OR REPLACE INTO words VALUES (?, ?, ?)", (row.app, row.sid, row.words)
        )

    def drop(self, app: str, sid: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE app = ? AND sid = ?", (app, sid))
        self.db.execute("DELETE FROM words WHERE wapp = ? AND wsid = ?", (app, sid))

    def commit(self) -> None:
        self.db.commit()

    def gone(self) -> Iterator[tuple[str, str]]:
        """Sessions rendered before that this run no longer found, a batch at a time; they
        leave the record once all have been seen."""
        last = ("", "")
        while True:
            rows = self.db.execute(
                "SELECT app, sid FROM sessions WHERE seen != ? AND (app, sid) > (?, ?)"
                " ORDER BY app, sid LIMIT ?",
                (self.run, *last, _BATCH),
            ).fetchall()
            if not rows:
                break
            yield from rows
            last = rows[-1]
        self.db.execute(
            "DELETE FROM words WHERE (wapp, wsid) IN"
            " (SELECT app, sid FROM sessions WHERE seen != ?)",
            (self.run,),
        )
        self.db.execute("DELETE FROM sessions WHERE seen != ?", (self.run,))
        self.db.commit()

    # -- the index -------------------------------------------------------------------------

    def apps(self) -> list[tuple[str, int]]:
        return [
            (str(a), int(n))
            for a, n in self.db.execute(
                "SELECT app, COUNT(*) FROM sessions GROUP BY app ORDER BY app"
            )
        ]

    def page(self, after: Key | None, limit: int) -> tuple[list[Row], Key | None, str]:
        """One index page's rows (without their words) after `after`, in the index's order
        (app, newest first, session id); the key of its last row; a digest of the rows'
        fingerprints (their words are the sessions', so they change only with these)."""
        rows, digest = [], hashlib.sha256()
        for app, sid, start, names, messages, kinds, fp in self._after(
            "app, sid, start, names, messages, kinds, fp", after, limit
        ):
            rows.append(Row(app, sid, start, json.loads(names), messages, kinds, ""))
            digest.update(f"{app}\0{sid}\0{fp}\n".encode())
        last = None if not rows else (rows[-1].app, rows[-1].start, rows[-1].sid)
        return rows, last, digest.hexdigest()

    def page_words(self, after: Key | None, limit: int) -> Iterator[str]:
        """The filter's words of the same rows as page(after, limit), one row at a time."""
        for (words,) in self._after(
            "words", after, limit, " JOIN words ON wapp = app AND wsid = sid"
        ):
            yield str(words)

    def _after(self, columns: str, after: Key | None, limit: int, join: str = "") -> sqlite3.Cursor:
        args: tuple[str, ...]
        where, args = "", ()
        if after is not None:
            # Keyset paging in the order (app ASC, start DESC, sid ASC).
            where = " WHERE app > ? OR (app = ? AND (start < ? OR (start = ? AND sid > ?)))"
            args = (after[0], after[0], after[1], after[1], after[2])
        return self.db.execute(
            f"SELECT {columns} FROM sessions{join}{where}"  # noqa: S608 - our constants only
            " ORDER BY app, start DESC, sid LIMIT ?",
            (*args, limit),
        )

    def page_sha(self, name: str) -> str | None:
        row = self.db.execute("SELECT sha FROM pages WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_page(self, name: str, sha: str | None) -> None:
        if sha is None:
            self.db.execute("DELETE FROM pages WHERE name = ?", (name,))
        else:
            self.db.execute("INSERT OR REPLACE INTO pages VALUES (?, ?)", (name, sha))

    def page_names(self) -> list[str]:
        return [str(n) for (n,) in self.db.execute("SELECT name FROM pages")]
