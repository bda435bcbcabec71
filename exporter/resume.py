"""Recording downloads that survive being cut off: the partial file and a small record of what
it holds (recording id, size, ETag, bytes held) stay beside the final name, and the next
attempt, in this run or a later one, continues with `Range` + `If-Range` on a fresh URL, or
starts again from zero when the server ignores the range or the object changed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from exporter import writer
from exporter.archive import partial_names, write_atomic, write_error
from exporter.errors import IncompleteDownload, TransientError
from exporter.http import transport_errors
from exporter.urls import Link

if TYPE_CHECKING:
    from exporter.download import Downloader
    from exporter.seam import Archive

T = TypeVar("T")

# aiohttp pauses reading the socket past 64 KiB unread by default: a recording (one a
# session, gigabytes) gets a larger buffer, for fewer pauses; bounded, so memory stays flat.
READ_BUFFER = 1 << 20
CHUNK = 256 * 1024
BATCH = 1 << 20  # bytes handed to a writer thread at once
SYNC_EVERY = 4 << 20  # the record's `held` moves at most this far behind the file
MAX_AGE = 7 * 86400.0  # partials not resumed for this long are removed
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)  # a 416's Content-Range


@dataclass(slots=True)
class ResumeRecord:
    """The sidecar: what the partial file is of, and how many of its bytes are safe."""

    recording_id: str
    size: int | None
    etag: str | None
    held: int
    updated: float

    @classmethod
    def load(cls, path: str) -> ResumeRecord | None:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            rec = cls(**{k: doc[k] for k in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        ok = isinstance(rec.recording_id, str) and isinstance(rec.held, int) and rec.held >= 0
        return rec if ok else None

    def save(self, path: str) -> None:
        self.updated = time.time()
        write_atomic(Path(path), json.dumps(asdict(self)) + "\n")


def content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes a-b/total` as (a, b, total or None for `*`), or None if unreadable."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def _strong(etag: str | None) -> str | None:
    # If-Range takes a strong validator only (RFC 9110 13.1.5).
    return etag if etag and not etag.startswith("W/") else None


def _write(fd: int, data: bytes) -> None:
    writer.write_all(fd, data)


class _Partial:
    """The open partial file: appends in batches by a thread, fsync and record at intervals."""

    def __init__(self, path: str, sidecar: str, record: ResumeRecord) -> None:
        self.path, self.sidecar, self.record = path, sidecar, record
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        os.ftruncate(self.fd, record.held)
        record.save(sidecar)  # from the first byte on, the partial says what it is of
        os.lseek(self.fd, record.held, os.SEEK_SET)
        self.written = record.held
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._synced = record.held
        self.digest = _hash_prefix(path, record.held)  # the SHA-256 covers the whole file

    def add(self, chunk: bytes) -> bytes | None:
        """Takes a chunk; returns a batch to write when one is full."""
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes < BATCH:
            return None
        data = b"".join(self._batch)
        self._batch.clear()
        self._batch_bytes = 0
        return data

    def write(self, data: bytes) -> None:
        """Blocking: hash and append, and every SYNC_EVERY bytes make them safe and say so.
        (In a thread, so hashing and writing overlap the next batch's arrival.)"""
        self.digest.update(data)
        _write(self.fd, data)
        self.written += len(data)
        if self.written - self._synced >= SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.fd)
        self._synced = self.record.held = self.written
        self.record.save(self.sidecar)

    def close_keeping(self) -> None:
        """Blocking: what is held so far made safe and recorded, for the next attempt."""
        try:
            if self._batch:
                data = b"".join(self._batch)
                self._batch.clear()
                self.digest.update(data)
                _write(self.fd, data)
                self.written += len(data)
            self.sync()
        finally:
            os.close(self.fd)


def _hash_prefix(path: str, length: int) -> hashlib._Hash:
    """SHA-256 over the first `length` bytes already kept (blocking)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        left = length
        while left > 0:
            block = fh.read(min(left, BATCH))
            if not block:
                raise OSError("the partial file is shorter than its record")
            digest.update(block)
            left -= len(block)
    return digest


class RecordingDownload:
    """Downloads one recording to `rel`, resuming a partial left by an earlier attempt."""

    def __init__(self, archive: Archive, downloader: Downloader) -> None:
        self._archive = archive
        self._dl = downloader

    async def fetch(
        self, link: Link, rel: str, recording_id: str, size: int | None
    ) -> tuple[int, str]:
        """(size, SHA-256 hex) of the recording placed at `rel`, or an ExportError (the
        partial kept for the next attempt)."""
        import anyio

        path, sidecar = partial_names(self._archive.local_path(rel))
        record = await _on_disk(self._resumable, path, sidecar, recording_id, size)
        headers = {"Accept-Encoding": "identity"}
        if record is not None:
            headers["Range"] = f"bytes={record.held}-"
            if _strong(record.etag):
                headers["If-Range"] = record.etag or ""
        resp = await self._dl.open(link, headers, frozenset({200, 206, 416}), READ_BUFFER)
        async with resp:
            etag = resp.headers.get("ETag")
            if resp.status == 416 and self._complete(resp, record):
                # Held whole already (its placing failed, or the run died just before it):
                # placed now, not downloaded again.
                assert record is not None
                whole = (await _on_disk(_hash_prefix, path, record.held)).hexdigest()
                await self._place(path, sidecar, rel, whole)
                return record.held, whole
            if resp.status == 416 or (resp.status == 206 and not self._continues(resp, record)):
                # The range no longer fits the object (it changed, or shrank): from zero.
                await _on_disk(_forget, path, sidecar)
                raise TransientError("recording changed since the partial download; restarting")
            if resp.status == 200 or record is None:
                # The server ignored the range, or If-Range found the object changed: the
                # body is the whole object, whatever the partial held.
                total = resp.content_length if resp.content_length is not None else size
                record = ResumeRecord(recording_id, total, etag, 0, 0.0)
            elif record.size is None:
                record.size = (content_range(resp.headers.get("Content-Range")) or (0, 0, None))[2]
            total = record.size
            partial = await _on_disk(_Partial, path, sidecar, record)
            loop = asyncio.get_running_loop()
            # One batch is hashed and written by a thread while the next one arrives.
            pending: asyncio.Future[None] | None = None
            received = record.held
            try:
                with transport_errors("recording download failed"):
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        received += len(chunk)
                        if total is not None and received > total:
                            raise IncompleteDownload("recording is longer than announced")
                        batch = partial.add(chunk)
                        if batch is not None:
                            if pending is not None:
                                await pending
                            pending = loop.run_in_executor(None, partial.write, batch)
                if pending is not None:
                    await pending
            except OSError as exc:  # the disk's, not the network's (those are mapped above)
                await _settle(pending, partial)
                raise write_error(exc, path) from None
            except BaseException:
                await _settle(pending, partial)
                raise
            await anyio.to_thread.run_sync(_keep, partial)
            held = partial.written
            if total is not None and held != total:
                raise IncompleteDownload(f"recording has {held} of {total} bytes; will resume")
            sha256 = partial.digest.hexdigest()
            await self._place(path, sidecar, rel, sha256)
            return held, sha256

    async def _place(self, path: str, sidecar: str, rel: str, sha256: str) -> None:
        """The complete partial placed as `rel`, then its record forgotten (an object store
        uploads it whole: see objectstore.archive.StoreArchive.adopt)."""
        try:
            await self._archive.adopt(path, rel, sha256)
        except OSError as exc:
            raise write_error(exc, rel) from None
        await _on_disk(_forget, sidecar, sidecar)

    @staticmethod
    def _complete(resp: aiohttp.ClientResponse, record: ResumeRecord | None) -> bool:
        """A 416 to a range from the partial's end, of an object of the partial's size (and
        ETag, when both are known): the partial is the whole object."""
        found = _UNSATISFIED.match(resp.headers.get("Content-Range") or "")
        if record is None or record.size is None or found is None:
            return False
        etag = resp.headers.get("ETag")
        same_tag = not (etag and record.etag) or etag == record.etag
        return record.held == record.size == int(found.group(1)) and same_tag

    @staticmethod
    def _continues(resp: aiohttp.ClientResponse, record: ResumeRecord | None) -> bool:
        """A 206 continues the partial: it starts where it stops, of the same object."""
        found = content_range(resp.headers.get("Content-Range"))
        if record is None or found is None:
            return False
        start, _, total = found
        etag = resp.headers.get("ETag")
        same_size = record.size is None or total is None or total == record.size
        same_tag = not (etag and record.etag) or etag == record.etag
        return start == record.held and same_size and same_tag

    @staticmethod
    def _resumable(
        path: str, sidecar: str, recording_id: str, size: int | None
    ) -> ResumeRecord | None:
        """The partial's record if it is worth resuming (blocking), after trimming the file to
        the bytes the record vouches for; None (and nothing kept) otherwise."""
        record = ResumeRecord.load(sidecar)
        try:
            have = os.stat(path).st_size
        except FileNotFoundError:
            have = -1
        if (
            record is None
            or have < 0
            or record.recording_id != recording_id
            or (size is not None and record.size is not None and record.size != size)
        ):
            _forget(path, sidecar)
            return None
        record.held = min(record.held, have)
        return record if record.held > 0 else None


async def _on_disk(func: Callable[..., T], *args: Any) -> T:
    """`func(*args)` in a thread, its OSError as the error tree says (a full disk stops the
    run; another write error fails the unit)."""
    import anyio

    try:
        return await anyio.to_thread.run_sync(func, *args)
    except OSError as exc:
        raise write_error(exc, os.path.basename(str(args[0]))) from None


async def _settle(pending: asyncio.Future[None] | None, partial: _Partial) -> None:
    """After a failure or a cancellation: the write in flight finished, then what is held
    made safe and recorded (shielded: a signal must not lose the bytes already received)."""
    import anyio

    with anyio.CancelScope(shield=True):
        if pending is not None:
            with contextlib.suppress(OSError):  # its error is the one being raised, or moot
                await pending
        await anyio.to_thread.run_sync(_keep, partial)


def _keep(partial: _Partial) -> None:
    try:
        partial.close_keeping()
    except OSError as exc:
        raise write_error(exc, partial.path) from None


def _forget(path: str, sidecar: str) -> None:
    for name in (path, sidecar):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
