"""Whole objects: a body spooled (memory, then a temporary file), then stored as one PUT with
`Content-MD5`, or as a multipart upload whose every part carries its own, completed last.

Why a spool and not a stream into the upload: every object carries its SHA-256 in the user
metadata `sha256`, and S3 takes metadata when an upload starts (PutObject, or
CreateMultipartUpload before the first part), when the hash of a body still arriving is not
known. So the body lands first in the run's temporary area (memory up to IN_MEMORY, then a
file), hashed as it comes; then it is sent from there, a part at a time. Memory is bounded by
the concurrency times PART_SIZE (8 MiB: 128 MiB at the default 16, in the worst case of every
worker sending a part at once); the temporary area by the bodies in flight.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from contextlib import suppress
from datetime import datetime
from functools import partial
from typing import Any

import anyio

from exporter.lock import pid_alive
from exporter.objectstore.client import Store, content_md5

log = logging.getLogger("exporter.objectstore")

IN_MEMORY = 1024 * 1024  # bytes of a body held before it spills to its temporary file
PART_SIZE = 8 * 1024 * 1024  # bytes per part; a body up to this size goes as one PUT
MAX_PARTS = 10_000  # S3's limit: larger bodies get larger parts
TEMP_PREFIX = "rtk-export-"


def part_size_for(size: int, part_size: int) -> int:
    return max(part_size, -(-size // MAX_PARTS))


class StoreSpool:
    """One body on its way to `key`: `write()` it, then `place()` or `discard()`."""

    def __init__(self, store: Store, key: str, rel: str, tmp_dir: str, part_size: int) -> None:
        self._store, self.key, self.final = store, key, rel
        self._tmp_dir, self._part_size = tmp_dir, part_size
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._size = 0
        self._sha = hashlib.sha256()
        self._fd: int | None = None
        self._path: str | None = None

    async def write(self, piece: bytes) -> None:
        self._sha.update(piece)
        self._size += len(piece)
        self._held.append(piece)
        self._held_bytes += len(piece)
        if self._held_bytes > IN_MEMORY:
            data = self._take()
            await anyio.to_thread.run_sync(self._spill, data)

    def _take(self) -> bytes:
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        return data

    def _spill(self, data: bytes) -> None:
        if self._fd is None:
            self._fd, self._path = tempfile.mkstemp(dir=self._tmp_dir, suffix=".body")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    async def place(self) -> None:
        """Store the whole body under its key, or raise (an ExportError) leaving nothing."""
        meta = {"sha256": self._sha.hexdigest()}
        try:
            if self._fd is None and self._size <= self._part_size:
                await self._store.put(self.key, self._take(), Metadata=meta)
                return
            if self._held:
                await anyio.to_thread.run_sync(self._spill, self._take())
            await upload_file(self._store, self.key, self._read, self._size, meta, self._part_size)
        finally:
            self.discard()

    def _read(self, offset: int, n: int) -> bytes:
        assert self._fd is not None
        return os.pread(self._fd, n, offset)

    def discard(self) -> None:
        self._held.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            with suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None


async def upload_file(
    store: Store,
    key: str,
    read: Any,
    size: int,
    meta: dict[str, str],
    part_size: int = PART_SIZE,
) -> None:
    """`size` bytes from `read(offset, n)` (blocking: run in a thread) under `key`: one PUT
    when small, else a multipart upload completed after its last part, aborted on failure."""
    if size <= part_size:
        data = await anyio.to_thread.run_sync(read, 0, size)
        await store.put(key, data, Metadata=meta)
        return
    c = store.client
    created = await store.call(
        f"create upload {key}",
        lambda: c.create_multipart_upload(Bucket=store.bucket, Key=key, Metadata=meta),
    )
    upload_id = created["UploadId"]
    done = False
    try:
        step = part_size_for(size, part_size)
        parts = []
        for number, offset in enumerate(range(0, size, step), start=1):
            data = await anyio.to_thread.run_sync(read, offset, min(step, size - offset))
            md5 = content_md5(data)
            resp = await store.call(
                f"part {number} of {key}",
                partial(
                    c.upload_part,
                    Bucket=store.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=md5,
                ),
            )
            del data
            parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        await store.call(
            f"complete upload {key}",
            lambda: c.complete_multipart_upload(
                Bucket=store.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            ),
        )
        done = True
    finally:
        if not done:
            # Shielded: a cancelled run still leaves no upload behind when it can help it
            # (a killed one's are aborted by the next run).
            with anyio.CancelScope(shield=True), suppress(Exception):
                await c.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=upload_id)


async def abort_stale_uploads(store: Store, started: datetime) -> int:
    """Abort the multipart uploads under PREFIX begun before this run (which holds the lock):
    left by a killed run of ours. How many."""
    c = store.client
    aborted = 0
    kw: dict[str, Any] = {"Bucket": store.bucket, "Prefix": store.target.root}
    while True:
        page = await store.call("list uploads", partial(c.list_multipart_uploads, **kw))
        for up in page.get("Uploads") or ():
            initiated = up.get("Initiated")
            if isinstance(initiated, datetime) and initiated >= started:
                continue
            await store.call(
                f"abort upload {up['Key']}",
                partial(
                    c.abort_multipart_upload,
                    Bucket=store.bucket,
                    Key=up["Key"],
                    UploadId=up["UploadId"],
                ),
            )
            aborted += 1
        if not page.get("IsTruncated"):
            return aborted
        kw["KeyMarker"] = page.get("NextKeyMarker")
        kw["UploadIdMarker"] = page.get("NextUploadIdMarker")


def make_temp_area() -> str:
    """The run's temporary area, named with its pid so that a later run can tell a dead
    run's area from a live one's and remove it."""
    remove_dead_areas()
    return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")


def remove_dead_areas() -> None:
    base = tempfile.gettempdir()
    with suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            pid = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                # Only an hour after its last change: a pid may be reused by another host's
                # container sharing /tmp, whose area must not vanish under it.
                with suppress(OSError):
                    if time.time() - entry.stat().st_mtime > 3600:
                        shutil.rmtree(entry.path, ignore_errors=True)
