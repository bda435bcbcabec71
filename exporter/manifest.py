"""The manifest: its line format (a `Status`, a typed `Record`, one decoder), append and flush,
the index of each unit's latest line, and the recently failed units, found in the same pass.

Loading keeps only a 64-bit key -> file offset index of each unit's last line (a few dozen
bytes per unit); the line itself is read back from disk when its unit comes up again.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from exporter.errors import DiskError, ExportError
from exporter.keyset import KeyIndex, key_of
from exporter.sessions import Pair, session_id_problem
from exporter.times import now_rfc3339, parse_rfc3339

log = logging.getLogger(__name__)


class Status(StrEnum):
    EXPORTED = "exported"
    SKIPPED = "skipped"
    FAILED = "failed"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"


# The manifest key naming the item of a kind with several per session.
ITEM_KEYS = {"attachment": "message_id", "recording": "recording_id"}


def unit_key(kind: str, item: str | None = None) -> str:
    """What tells a unit apart within its session: the kind, and its item if it has one."""
    return kind if item is None else f"{kind}/{item}"


DONE = frozenset({Status.EXPORTED, Status.SKIPPED})  # the unit's file is archived
_STATUSES = frozenset(s.value for s in Status)


# Not frozen, though nothing changes a Record once made: a frozen dataclass's __init__ sets
# each field through object.__setattr__, 4.7 us against 0.7 us for these 13 fields here, once
# per unit and once per line of a manifest of millions read back at every start.
@dataclass(slots=True)
class Record:
    """One manifest line: the outcome of one unit in one run."""

    app_id: str | None
    session_id: str | None
    kind: str
    status: Status
    run_id: str
    path: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    attempts: int = 0
    error: dict[str, Any] | None = None
    finished_at: str = ""
    line: int | None = None  # for `invalid`: the SESSIONS line number
    # The item within the session, for the kinds that have several: `message_id` of an
    # attachment, `recording_id` of a recording (null: the session has none).
    item: str | None = None
    # A unit that came in a webhook (`rtk-export serve`): "webhook", and the delivery's
    # rtk-uuid. None for the units of an export, whose lines keep their old shape.
    source: str | None = None
    delivery_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "app_id": self.app_id,
            "session_id": self.session_id,
            "kind": self.kind,
            "status": self.status,
            "path": self.path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "attempts": self.attempts,
            "error": self.error,
            "finished_at": self.finished_at,
            "run_id": self.run_id,
        }
        if self.line is not None:
            doc["line"] = self.line
        if self.kind in ITEM_KEYS:
            doc[ITEM_KEYS[self.kind]] = self.item
        if self.source is not None:
            doc["source"] = self.source
            doc["delivery_id"] = self.delivery_id
        return doc

    def encode(self) -> builtins.bytes:  # `bytes` is a field here
        return (
            json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        )


def record(
    *,
    app_id: str | None,
    session_id: str | None,
    kind: str,
    status: Status,
    run_id: str,
    attempts: int = 0,
    path: str | None = None,
    size: int | None = None,
    sha256: str | None = None,
    error: ExportError | None = None,
    line: int | None = None,
    item: str | None = None,
) -> Record:
    """A line finished now."""
    return Record(
        app_id=app_id,
        session_id=session_id,
        kind=kind,
        status=status,
        run_id=run_id,
        path=path,
        bytes=size,
        sha256=sha256,
        attempts=attempts,
        error=error.as_record() if error else None,
        finished_at=now_rfc3339(),
        line=line,
        item=item,
    )


class Damaged(ValueError):
    """A line that cannot be trusted (torn, not JSON, edited by hand, from a newer version)."""


def decode(raw: bytes) -> Record | None:
    """A manifest line as a Record; None for a line with nothing to resume (blank, or an
    `invalid` SESSIONS line); Damaged saying what is wrong otherwise. The one decoder."""
    if not raw.endswith(b"\n"):
        # kill -9 or a full disk while writing: the unit will be done again.
        raise Damaged("is incomplete (interrupted write)")
    if not raw.strip():
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Damaged("is not valid JSON") from None
    if isinstance(doc, dict) and doc.get("status") == Status.INVALID:
        return None
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("app_id"), str)
        and isinstance(doc.get("session_id"), str)
    ):
        raise Damaged("has no app_id/session_id")
    status, kind = doc.get("status"), doc.get("kind", "chat")
    if not isinstance(status, str) or status not in _STATUSES:
        raise Damaged(f"has unknown status {str(status)[:40]!r}")
    if not isinstance(kind, str):
        raise Damaged("has a 'kind' that is not a string")
    size, digest, path = doc.get("bytes"), doc.get("sha256"), doc.get("path")
    size_ok = isinstance(size, int) and not isinstance(size, bool) and size >= 0
    digest_ok = isinstance(digest, str) and len(digest) == 64
    if status in DONE and not (size_ok and digest_ok):
        raise Damaged(f"says {status} but has no valid bytes and sha256")
    attempts, error, line = doc.get("attempts"), doc.get("error"), doc.get("line")
    item = doc.get(ITEM_KEYS[kind]) if kind in ITEM_KEYS else None
    source, delivery = doc.get("source"), doc.get("delivery_id")
    return Record(
        app_id=doc["app_id"],
        session_id=doc["session_id"],
        kind=kind,
        status=Status(status),
        run_id=str(doc.get("run_id", "")),
        path=path if isinstance(path, str) else None,
        bytes=size if size_ok else None,
        sha256=digest if digest_ok else None,
        attempts=attempts if isinstance(attempts, int) else 0,
        error=error if isinstance(error, dict) else None,
        finished_at=str(doc.get("finished_at") or ""),
        line=line if isinstance(line, int) else None,
        item=item if isinstance(item, str) else None,
        source=source if isinstance(source, str) else None,
        delivery_id=delivery if isinstance(delivery, str) else None,
    )


def _key(rec: Record) -> int:
    return key_of(rec.app_id or "", rec.session_id or "", unit_key(rec.kind, rec.item))


class Manifest:
    """Append-only JSON Lines file with an index of each unit's latest line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = KeyIndex()
        self.damaged_lines = 0
        # Units whose latest line is `failed`, with when: discovery retries those of the last
        # 7 days. Grows with the failed units only.
        self._failed: dict[tuple[str, str], dict[str, datetime | None]] = {}
        self._out: IO[bytes] | None = None
        self._end = 0  # the size of the manifest file open for append
        self._reader: IO[bytes] | None = None
        self._indexed = 0  # how far the file has been read into the index
        # Another process appends too (O_APPEND keeps whole writes apart): a torn line of ours
        # is then left for readers to pass over, since cutting the file could cut theirs.
        self.shared = False

    def load(self) -> None:
        """Index the latest line of every unit and note the failed ones, in one pass; warn
        about, and pass over, damaged lines."""
        if not self.path.exists():
            return
        failed = self._failed
        with open(self.path, "rb") as fh:
            offset = 0
            for number, raw in enumerate(fh, start=1):
                here, offset = offset, offset + len(raw)
                try:
                    rec = decode(raw)
                except Damaged as exc:
                    # Passed over: the unit's earlier line, if any, is checked against its
                    # file again, else the unit is exported again. Never a crash.
                    log.warning("manifest %s line %d %s; ignored", self.path, number, exc)
                    self.damaged_lines += 1
                    continue
                if rec is None:
                    continue
                self.index.put(_key(rec), here)
                if rec.status is Status.FAILED:
                    kinds = failed.setdefault((rec.app_id or "", rec.session_id or ""), {})
                    kinds[unit_key(rec.kind, rec.item)] = parse_rfc3339(rec.finished_at)
                elif failed:
                    pair = (rec.app_id or "", rec.session_id or "")
                    known = failed.get(pair)
                    if known is not None:
                        known.pop(unit_key(rec.kind, rec.item), None)
                        if not known:
                            del failed[pair]
            self._indexed = offset

    def refresh(self) -> None:
        """Index the lines appended since load() or the last refresh, by this process or
        another one on the same folder (serve beside an export): one stat() when none were."""
        try:
            if os.stat(self.path).st_size <= self._indexed:
                return
        except FileNotFoundError:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._indexed)
            offset = self._indexed
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a line another process is writing right now: read it next time
                here, offset = offset, offset + len(raw)
                rec = _quiet(raw)
                if rec is not None:
                    self.index.put(_key(rec), here)
            self._indexed = offset

    def recent_failures(self, apps: frozenset[str], not_before: datetime) -> list[Pair]:
        """Pairs of `apps` with a unit whose latest line is `failed` and not older than
        `not_before` (found by load())."""
        out = []
        for (app, sid), kinds in self._failed.items():
            if (
                app in apps
                and session_id_problem(sid) is None
                and any(when is not None and when >= not_before for when in kinds.values())
            ):
                out.append(Pair(app, sid, 0))
        return out

    def latest(
        self, app_id: str, session_id: str, kind: str, item: str | None = None
    ) -> Record | None:
        """The last line recorded for this unit before this run, or None."""
        offset = self.index.get(key_of(app_id, session_id, unit_key(kind, item)))
        if offset is None:
            return None
        if self._reader is None:
            self._reader = open(self.path, "rb")  # noqa: SIM115 - kept open for the run
        self._reader.seek(offset)
        rec = _quiet(self._reader.readline())
        # A 64-bit key can collide: trust the line only if it names this very unit.
        if rec is None or (rec.app_id, rec.session_id, rec.kind, rec.item) != (
            app_id,
            session_id,
            kind,
            item,
        ):
            return None
        return rec

    def iter_lines(self) -> Iterator[Record]:
        """Every readable line naming a unit, in file order, streamed."""
        for _, rec in self._scan():
            yield rec

    def iter_latest(self) -> Iterator[Record]:
        """Every unit's last line, in file order: one sequential pass, nothing collected."""
        for offset, rec in self._scan():
            if self.index.get(_key(rec)) == offset:
                yield rec

    def _scan(self) -> Iterator[tuple[int, Record]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            offset = 0
            for raw in fh:
                here, offset = offset, offset + len(raw)
                rec = _quiet(raw)
                if rec is not None:
                    yield here, rec

    def open_for_append(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: a line that cannot be written must not linger in a buffer, to be half
        # written again by close() after append() has cut it off.
        self._out = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        # A line torn by a crash must not swallow the first line of this run.
        if self._out.tell() > 0:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._out.write(b"\n")
        # Where this run's next line starts. The run holds the lock, so only it appends:
        # kept here rather than asked of the kernel (an lseek per line, on the event loop).
        self._end = self._out.tell()

    def append(self, rec: Record) -> None:
        """Write one line and hand it to the OS at once: a crash loses only units in flight.

        A line the disk refuses (full, a file-size limit, an I/O error) stops the run with a
        DiskError: outcomes that cannot be recorded must not be exported on. Whatever part of
        the line did get written is cut off again, so the manifest stays whole lines.
        """
        assert self._out is not None, "open_for_append() first"
        line = rec.encode()
        data = memoryview(line)
        fd, start = self._out.fileno(), self._end
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as exc:
            if not self.shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            raise DiskError(
                f"cannot write the manifest {self.path}: {exc.strerror or exc}"
            ) from None
        self._end = start + len(line)

    def sync(self) -> None:
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())

    def close(self) -> None:
        if self._out is not None:
            try:
                self.sync()
            finally:
                self._out.close()
                self._out = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _quiet(raw: bytes) -> Record | None:
    """decode(), with damaged lines (already reported by load()) as None."""
    try:
        return decode(raw)
    except Damaged:
        return None
