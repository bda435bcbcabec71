"""The manifest: one JSON line per unit of work, appended and flushed as each one ends.

Loading it keeps only a 64-bit key -> file offset index of each unit's last line (a few dozen
bytes per unit); the line itself is read back from disk when its unit comes up again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from exporter.errors import DiskError, ExportError
from exporter.keyset import KeyIndex, key_of

log = logging.getLogger(__name__)

STATUSES = frozenset({"exported", "skipped", "failed", "invalid", "unavailable"})
DONE = frozenset({"exported", "skipped"})


def file_matches(path: Path, size: object, sha256: object) -> bool:
    """The file is there with exactly the recorded size and SHA-256 (blocking: use a thread)."""
    if not isinstance(size, int) or not isinstance(sha256, str):
        return False
    try:
        if os.stat(path).st_size != size:
            return False
        # file_digest reads into one reused buffer: a fresh 1 MiB read() per small file left
        # the allocator fragmented enough to grow RSS with the number of files verified.
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256")
    except OSError:
        return False
    return digest.hexdigest() == sha256


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def now_rfc3339() -> str:
    return rfc3339_utc(time.time())


def rfc3339_utc(when: float) -> str:
    """`when` (epoch seconds, >= 0) in UTC to the millisecond, `2026-11-28T09:15:02.123Z`;
    one strftime per distinct second, as a manifest line per pair made it a visible cost."""
    whole = int(when)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((when - whole) * 1000):03d}Z"


def unit_key(app_id: str, session_id: str, kind: str) -> int:
    return key_of(app_id, session_id, kind)


def record(*, app_id: str | None, session_id: str | None, kind: str, status: str, run_id: str,
           attempts: int = 0, path: str | None = None, size: int | None = None,
           sha256: str | None = None, error: ExportError | None = None,
           line: int | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "app_id": app_id, "session_id": session_id, "kind": kind, "status": status,
        "path": path, "bytes": size, "sha256": sha256, "attempts": attempts,
        "error": error.as_record() if error else None,
        "finished_at": now_rfc3339(), "run_id": run_id,
    }
    if line is not None:
        rec["line"] = line
    return rec


def _line_problem(rec: dict[str, Any]) -> str | None:
    """What is wrong with a parsed line (edited by hand, written by a newer version), or None."""
    status = rec.get("status")
    if status not in STATUSES:
        return f"has unknown status {str(status)[:40]!r}"
    if not isinstance(rec.get("kind", "chat"), str):
        return "has a 'kind' that is not a string"
    if status in DONE:
        size, digest = rec.get("bytes"), rec.get("sha256")
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0
                or not isinstance(digest, str) or len(digest) != 64):
            return f"says {status} but has no valid bytes and sha256"
    return None


class Manifest:
    """Append-only JSON Lines file with an index of each unit's latest line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = KeyIndex()
        self.damaged_lines = 0
        self._out: IO[bytes] | None = None
        self._reader: IO[bytes] | None = None

    def load(self) -> None:
        """Index the latest line of every unit; warn about, and pass over, damaged lines."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            offset = 0
            for number, raw in enumerate(fh, start=1):
                here, offset = offset, offset + len(raw)
                rec = self._parse(raw, number)
                if rec is not None:
                    self.index.put(unit_key(rec["app_id"], rec["session_id"], rec["kind"]), here)

    def _parse(self, raw: bytes, number: int) -> dict[str, Any] | None:
        if not raw.endswith(b"\n"):
            # kill -9 or a full disk while writing: the unit will be done again.
            log.warning("manifest %s line %d is incomplete (interrupted write); ignored",
                        self.path, number)
            self.damaged_lines += 1
            return None
        if not raw.strip():
            return None
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("manifest %s line %d is not valid JSON; ignored", self.path, number)
            self.damaged_lines += 1
            return None
        if isinstance(rec, dict) and rec.get("status") == "invalid":
            return None  # a bad SESSIONS line of an earlier run: nothing to resume
        if not (isinstance(rec, dict) and isinstance(rec.get("app_id"), str)
                and isinstance(rec.get("session_id"), str)):
            log.warning("manifest %s line %d has no app_id/session_id; ignored", self.path, number)
            self.damaged_lines += 1
            return None
        problem = _line_problem(rec)
        if problem is not None:
            # Passed over, as a torn line is: the unit's earlier line, if any, is checked
            # against its file again, else the unit is exported again. Never a crash.
            log.warning("manifest %s line %d %s; ignored", self.path, number, problem)
            self.damaged_lines += 1
            return None
        rec.setdefault("kind", "chat")
        return rec

    def latest(self, app_id: str, session_id: str, kind: str) -> dict[str, Any] | None:
        """The last line recorded for this unit before this run, or None."""
        offset = self.index.get(unit_key(app_id, session_id, kind))
        if offset is None:
            return None
        if self._reader is None:
            self._reader = open(self.path, "rb")  # noqa: SIM115 - kept open for the run
        self._reader.seek(offset)
        rec = _decode(self._reader.readline())
        # A 64-bit key can collide: trust the line only if it names this very unit.
        if rec is None or (rec["app_id"], rec["session_id"], rec["kind"]) != (
                app_id, session_id, kind):
            return None
        return rec

    def iter_lines(self) -> Iterator[dict[str, Any]]:
        """Every readable line naming a unit, in file order, streamed."""
        for _, rec in self._scan():
            yield rec

    def iter_latest(self) -> Iterator[dict[str, Any]]:
        """Every unit's last line, in file order: one sequential pass, nothing collected."""
        for offset, rec in self._scan():
            if self.index.get(unit_key(rec["app_id"], rec["session_id"], rec["kind"])) == offset:
                yield rec

    def _scan(self) -> Iterator[tuple[int, dict[str, Any]]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            offset = 0
            for raw in fh:
                here, offset = offset, offset + len(raw)
                rec = _decode(raw)
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

    def append(self, rec: dict[str, Any]) -> None:
        """Write one line and hand it to the OS at once: a crash loses only units in flight.

        A line the disk refuses (full, a file-size limit, an I/O error) stops the run with a
        DiskError: outcomes that cannot be recorded must not be exported on. Whatever part of
        the line did get written is cut off again, so the manifest stays whole lines.
        """
        assert self._out is not None, "open_for_append() first"
        data = memoryview(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()
                          + b"\n")
        fd = self._out.fileno()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise DiskError(f"cannot write the manifest {self.path}: "
                            f"{exc.strerror or exc}") from None

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


def _decode(raw: bytes) -> dict[str, Any] | None:
    """A manifest line as a dict with its ids and kind, or None if it is not one."""
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(rec, dict) and isinstance(rec.get("app_id"), str)
            and isinstance(rec.get("session_id"), str)):
        return None
    rec.setdefault("kind", "chat")
    return rec
