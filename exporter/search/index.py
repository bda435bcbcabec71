"""The search index, one SQLite file: sessions with the fingerprint of their files, a row per
message or utterance, and an FTS5 table of their texts whose rowid is the hit's time (ms << 20,
plus a spread), so that "newest first" is FTS5's own rowid order and a LIMIT stops early."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from exporter.search.query import fold
from exporter.search.rows import KINDS, Row, SessionFile

SCHEMA_VERSION = "1"
PROGRAM = "rtk-export search"  # meta 'program': marks a file as an index of ours
TOKENIZER = "unicode61 remove_diacritics 2"
_LOW_BITS = 20
_LOW = (1 << _LOW_BITS) - 1
_MAX_MS = (1 << (63 - _LOW_BITS)) - 1  # rowids are signed 64-bit: ms up to the year 2248
_BATCH = 1000

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions(
    num INTEGER PRIMARY KEY, app TEXT NOT NULL, sid TEXT NOT NULL, fp TEXT,
    UNIQUE (app, sid));
-- Display names apart (a few hundred for millions of hits), each with its folded form.
CREATE TABLE IF NOT EXISTS people(
    num INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hits(
    id INTEGER PRIMARY KEY, session INTEGER NOT NULL, kind INTEGER NOT NULL,
    mid TEXT NOT NULL, author INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS hits_session ON hits(session);
-- columnsize=0: no per-row sizes, which only ranking (bm25) would read.
CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5(
    text, tokenize='{TOKENIZER}', columnsize=0);
CREATE TEMP TABLE IF NOT EXISTS units(
    app TEXT NOT NULL, sid TEXT NOT NULL, kind TEXT NOT NULL, rel TEXT NOT NULL,
    sha TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (app, sid, kind)) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Filters:
    app: str | None = None
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    author: str | None = None  # folded already (query.fold)
    limit: int = 50


@dataclass(frozen=True, slots=True)
class Hit:
    app: str
    session: str
    ms: int | None
    author: str
    message_id: str
    kind: str
    text: str  # the whole text, or the marked text (see SearchIndex.search)


def rowid_floor(ms: int) -> int:
    return max(0, min(ms, _MAX_MS)) << _LOW_BITS


def _clamp_ms(ms: int | None) -> int:
    return 0 if ms is None else max(1, min(ms, _MAX_MS))  # 0: the time is not known


class NotAnIndex(Exception):
    """A file chosen with --index that is not an index of ours: it is left alone."""


class SearchIndex:
    """`owned`: the path is one of our own names, so a damaged file there is ours to replace;
    any other path (--index) is replaced only when it holds an index of ours."""

    def __init__(self, path: Path, owned: bool = True) -> None:
        self.path = path
        self._people: dict[str, int] = {}  # display name -> its number in `people`
        try:
            self.db = self._open(owned)
        except NotAnIndex:
            raise
        except sqlite3.DatabaseError as exc:
            if not owned:
                raise NotAnIndex(f"{path} is not a readable search index ({exc})") from None
            # A damaged index, or one of another version, costs a rebuild, never a failure.
            self._remove()
            self.db = self._open(owned)

    def _remove(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _open(self, owned: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA temp_store=FILE")  # the units table grows with the manifest
            db.execute("PRAGMA cache_size=-16000")
            found: dict[str, str] = {}
            with contextlib.suppress(sqlite3.OperationalError):
                found = dict(db.execute("SELECT key, value FROM meta"))
            has_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if has_tables and found.get("program") != PROGRAM:
                if not owned:
                    raise NotAnIndex(f"{self.path} is not a search index of rtk-export")
                raise sqlite3.DatabaseError("not an index of ours")
            if has_tables and found.get("version") != SCHEMA_VERSION:
                if not owned:
                    # Ours, of another version: replaced as a damaged one would be.
                    db.close()
                    self._remove()
                    return self._open(owned)
                raise sqlite3.DatabaseError("an index of another version")
            db.executescript(_SCHEMA)
            if not has_tables:
                # Kept in the FTS5 table's config. A larger buffer of pending terms (default
                # 1 MB) and merges of 8 segments (default 4): FTS5 inserts of 200,000 messages
                # alone went from 1.59 to 0.69 CPU s, a whole build 4% faster (3.74 against
                # 3.89 s, best of 3), peak RSS unchanged (42 MB).
                db.execute("INSERT INTO words(words, rank) VALUES ('hashsize', 8388608)")
                db.execute("INSERT INTO words(words, rank) VALUES ('automerge', 8)")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (SCHEMA_VERSION,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('program', ?)", (PROGRAM,))
            db.execute("SELECT count(*) FROM words WHERE rowid = 0").fetchone()  # readable?
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- bringing it up to date ------------------------------------------------------------

    def load_units(self, units: Iterable[tuple[str, str, SessionFile]]) -> None:
        """Each session's files as the manifest has them now (the last line per unit wins)."""
        self.db.execute("DELETE FROM units")
        batch: list[tuple[str, str, str, str, str, int]] = []
        self.db.execute("BEGIN")
        for app, sid, f in units:
            batch.append((app, sid, f.kind, f.rel, f.sha256, f.size))
            if len(batch) >= _BATCH:
                self.db.executemany("INSERT OR REPLACE INTO units VALUES (?,?,?,?,?,?)", batch)
                batch.clear()
        self.db.executemany("INSERT OR REPLACE INTO units VALUES (?,?,?,?,?,?)", batch)
        self.db.execute("COMMIT")

    def remove_gone(self) -> int:
        """Sessions indexed before that the manifest no longer has intact leave the index."""
        gone = [
            n
            for (n,) in self.db.execute(
                "SELECT num FROM sessions s WHERE NOT EXISTS"
                " (SELECT 1 FROM units u WHERE u.app = s.app AND u.sid = s.sid)"
            )
        ]
        self.db.execute("BEGIN IMMEDIATE")
        for n in gone:
            self._drop_rows(n)
            self.db.execute("DELETE FROM sessions WHERE num = ?", (n,))
        self.db.execute("COMMIT")
        return len(gone)

    def changed(self) -> Iterator[tuple[str, str, str, list[SessionFile]]]:
        """(app, session, fingerprint, files) of every session whose files differ from what
        was indexed (or that was never indexed), a batch at a time."""
        self.db.execute("DROP TABLE IF EXISTS temp.todo")
        self.db.execute(
            "CREATE TEMP TABLE todo AS SELECT u.app, u.sid, u.fp FROM ("
            "  SELECT app, sid, group_concat(kind || ' ' || sha || ' ' || size || ' ' || rel,"
            "  '|') AS fp FROM (SELECT * FROM units ORDER BY app, sid, kind) GROUP BY app, sid"
            ") u LEFT JOIN sessions s ON s.app = u.app AND s.sid = u.sid"
            " WHERE s.fp IS NULL OR s.fp != u.fp ORDER BY u.app, u.sid"
        )
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT rowid, app, sid, fp FROM todo WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last, _BATCH),
            ).fetchall()
            if not rows:
                return
            for rowid, app, sid, fp in rows:
                files = [
                    SessionFile(kind, rel, sha, size)
                    for kind, rel, sha, size in self.db.execute(
                        "SELECT kind, rel, sha, size FROM units WHERE app = ? AND sid = ?"
                        " ORDER BY kind",
                        (app, sid),
                    )
                ]
                yield app, sid, fp, files
                last = rowid

    def pending(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM temp.todo").fetchone()[0])

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def put_session(self, app: str, sid: str, fp: str | None, rows: Iterable[Row]) -> int:
        """Replace the session's rows (inside a begin()/commit()); `fp` None marks it to be read
        again next time. Rows are written as they come, in batches; an exception from `rows`
        leaves the session with no rows, to be read again. The number of rows written."""
        # No savepoints: FTS5 writes a segment at each, and merging thousands of tiny segments
        # cost a third of a build.
        num = self._session_num(app, sid)
        self._drop_rows(num)
        try:
            written = self._insert(num, app, sid, rows)
        except BaseException:
            self.forget(app, sid)
            raise
        self.db.execute("UPDATE sessions SET fp = ? WHERE num = ?", (fp, num))
        return written

    def forget(self, app: str, sid: str) -> None:
        """The session's rows leave the index and it is read again next time."""
        num = self._session_num(app, sid)
        self._drop_rows(num)
        self.db.execute("UPDATE sessions SET fp = NULL WHERE num = ?", (num,))

    def _session_num(self, app: str, sid: str) -> int:
        self.db.execute("INSERT OR IGNORE INTO sessions(app, sid) VALUES (?, ?)", (app, sid))
        row = self.db.execute(
            "SELECT num FROM sessions WHERE app = ? AND sid = ?", (app, sid)
        ).fetchone()
        return int(row[0])

    def _person(self, name: str) -> int:
        num = self._people.get(name)
        if num is None:
            if len(self._people) > 100_000:
                self._people.clear()  # bounded: names are looked up again
            self.db.execute(
                "INSERT OR IGNORE INTO people(name, key) VALUES (?, ?)", (name, fold(name))
            )
            row = self.db.execute("SELECT num FROM people WHERE name = ?", (name,)).fetchone()
            num = self._people[name] = int(row[0])
        return num

    def _drop_rows(self, num: int) -> None:
        # Only when there are some: a DELETE on FTS5 flushes its pending writes (a segment),
        # which for a session never indexed before is pure cost.
        if (
            self.db.execute("SELECT 1 FROM hits WHERE session = ? LIMIT 1", (num,)).fetchone()
            is None
        ):
            return
        self.db.execute(
            "DELETE FROM words WHERE rowid IN (SELECT id FROM hits WHERE session = ?)", (num,)
        )
        self.db.execute("DELETE FROM hits WHERE session = ?", (num,))

    def _insert(self, num: int, app: str, sid: str, rows: Iterable[Row]) -> int:
        batch: list[tuple[int, int, int, str, int, str]] = []
        written = 0
        for n, row in enumerate(rows):
            # The low bits spread hits of one millisecond; the same row gets the same id.
            low = zlib.crc32(f"{app}/{sid}/{row.kind}/{row.message_id}/{n}".encode()) & _LOW
            rowid = (_clamp_ms(row.ms) << _LOW_BITS) | low
            kind = KINDS.index(row.kind)
            batch.append((rowid, num, kind, row.message_id, self._person(row.author), row.text))
            if len(batch) >= _BATCH:
                written += self._flush(batch)
        return written + self._flush(batch)

    def _flush(self, batch: list[tuple[int, int, int, str, int, str]]) -> int:
        ids = [b[0] for b in batch]
        taken = {
            int(i)
            for (i,) in self.db.execute(
                "SELECT id FROM hits WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        }
        if taken or len(set(ids)) != len(ids):
            batch[:] = self._spread(batch, taken)
        self.db.executemany("INSERT INTO hits VALUES (?, ?, ?, ?, ?)", [b[:5] for b in batch])
        self.db.executemany(
            "INSERT INTO words(rowid, text) VALUES (?, ?)", [(b[0], b[5]) for b in batch]
        )
        n = len(batch)
        batch.clear()
        return n

    def _spread(
        self, batch: list[tuple[int, int, int, str, int, str]], taken: set[int]
    ) -> list[tuple[int, int, int, str, int, str]]:
        """Two hits of one millisecond with the same low bits (rare): the later one moves to
        the next free id of its millisecond."""
        out = []
        for rowid, *rest in batch:
            base, low = rowid & ~_LOW, rowid & _LOW
            for step in range(_LOW + 1):
                candidate = base | ((low + step) & _LOW)
                if candidate in taken:
                    continue
                if (
                    step
                    and self.db.execute("SELECT 1 FROM hits WHERE id = ?", (candidate,)).fetchone()
                ):
                    taken.add(candidate)
                    continue
                break
            else:
                raise sqlite3.IntegrityError("more than a million hits in one millisecond")
            taken.add(candidate)
            out.append((candidate, *rest))
        return out  # type: ignore[return-value]

    # -- searching -------------------------------------------------------------------------

    def search(self, match: str, filters: Filters, marks: tuple[str, str] | None) -> list[Hit]:
        """Hits of an FTS5 expression (from query.to_match: never user text), newest first.
        With `marks` (open, close), the text comes marked, cut to a snippet when long;
        without, it is the whole text."""
        where: list[str] = ["words MATCH ?"]
        args: list[str | int] = [match]
        if filters.since_ms is not None:
            where.append("words.rowid >= ?")
            args.append(rowid_floor(max(filters.since_ms, 1)))
        if filters.until_ms is not None:
            where.append("words.rowid >= ? AND words.rowid < ?")  # a time not known is outside
            args += [rowid_floor(1), rowid_floor(filters.until_ms)]
        if filters.app is not None:
            where.append("s.app = ?")
            args.append(filters.app)
        if filters.author:
            where.append("h.author IN (SELECT num FROM people WHERE instr(key, ?) > 0)")
            args.append(filters.author)
        if marks is None:
            text = "words.text"
        else:
            text = (
                "CASE WHEN length(words.text) > 600 THEN snippet(words, 0, ?, ?, '…', 40)"
                " ELSE highlight(words, 0, ?, ?) END"
            )
            args = [*marks, *marks, *args]
        # CROSS JOIN keeps FTS5 the outer loop: its rowid order is the hits' time order.
        sql = (
            f"SELECT words.rowid, s.app, s.sid, h.kind, h.mid, p.name, {text}"  # noqa: S608
            " FROM words CROSS JOIN hits h ON h.id = words.rowid"
            " CROSS JOIN sessions s ON s.num = h.session CROSS JOIN people p ON p.num = h.author"
            f" WHERE {' AND '.join(where)} ORDER BY words.rowid DESC LIMIT ?"
        )
        out = []
        for rowid, app, sid, kind, mid, author, body in self.db.execute(
            sql, (*args, filters.limit)
        ):
            ms = rowid >> _LOW_BITS
            out.append(Hit(app, sid, ms or None, author, mid, KINDS[kind], body))
        return out

    def unindexed(self) -> int:
        """Sessions left out by an update because a file of theirs was damaged."""
        return int(self.db.execute("SELECT count(*) FROM sessions WHERE fp IS NULL").fetchone()[0])

    def counts(self) -> tuple[int, int]:
        """(sessions, rows) indexed."""
        sessions = self.db.execute("SELECT count(*) FROM sessions WHERE fp IS NOT NULL")
        rows = self.db.execute("SELECT count(*) FROM hits")
        return int(sessions.fetchone()[0]), int(rows.fetchone()[0])
