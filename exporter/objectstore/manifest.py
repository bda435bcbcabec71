"""The manifest as objects: `PREFIX/manifest/*.jsonl`, read in key order (= write order), a
new object at least every FLUSH_LINES lines or FLUSH_SECONDS and at the end, and compaction.

Reading streams every object into a local copy in the run's temporary area, then indexes it
as a local manifest is indexed (same decoder, same damaged-line tolerance). Object names are
`<ms since epoch, 15 digits>-<run_id>-<seq>.jsonl`; a compaction of objects A..C is written as
`<C's stem>~<gen>.jsonl`, which sorts after C and before anything newer, before A..C are deleted:
a reader listing at any moment reads every line (maybe twice: the last line wins, so that is
harmless), and a reader that finds a listed object gone starts over (the compacted one is then
listed). A crash midway leaves some of A..C beside the compacted object: read again, merged
again, nothing lost.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import anyio

from exporter.manifest import Manifest, Record
from exporter.objectstore.client import NotFound, Store
from exporter.objectstore.target import MANIFEST_FOLDER
from exporter.objectstore.upload import upload_file

log = logging.getLogger("exporter.objectstore")

FOLDER = MANIFEST_FOLDER
SUFFIX = ".jsonl"
FLUSH_LINES = 1000
FLUSH_SECONDS = 10.0
COMPACT_AT = 64  # objects: more at the start of a run, and they are merged into one
_RESTARTS = 5


def object_name(run_id: str, seq: int, now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:015d}-{run_id}-{seq:06d}{SUFFIX}"


def compacted_name(newest: str) -> str:
    """The name of a compaction whose newest object is `newest`: sorts just after it."""
    stem = newest.removesuffix(SUFFIX)
    stem, _, gen = stem.partition("~")
    return f"{stem}~{int(gen or 0) + 1:04d}{SUFFIX}"


class StoreManifest(Manifest):
    """A Manifest whose lines live in manifest objects; `path` is the local read copy."""

    def __init__(self, store: Store, cache: Path) -> None:
        super().__init__(cache)
        self._store = store
        self.folder = store.target.key(FOLDER)
        self.run_id = "run"
        self._seq = 0
        self._pending: list[bytes] = []
        self._full = anyio.Event()
        self.loaded: list[str] = []  # keys of the objects read, in order
        self.flush_lines = FLUSH_LINES
        self.written = 0  # lines of this run in manifest objects

    # -- reading ----------------------------------------------------------------------------

    async def fetch(self) -> None:
        """Copy every manifest object, in key order, into the local read copy."""
        for _ in range(_RESTARTS):
            try:
                await self._fetch_once()
                return
            except NotFound:
                # Compacted away between our listing and our GET: list again.
                log.info("a manifest object went away while reading; reading the list again")
        raise NotFound("the manifest objects kept changing while being read")

    async def _fetch_once(self) -> None:
        self.loaded = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as out:  # noqa: ASYNC230 - local, and written per chunk
            async for page in self._store.list_pages(self.folder):
                for obj in page:
                    key = obj["Key"]
                    if key.endswith(SUFFIX) and "/" not in key[len(self.folder) :]:
                        await self._copy(key, out)
                        self.loaded.append(key)

    async def _copy(self, key: str, out: object) -> None:
        import io

        assert isinstance(out, io.BufferedWriter)
        start = out.tell()
        c = self._store.client

        async def get() -> None:
            out.seek(start)
            out.truncate()
            resp = await c.get_object(Bucket=self._store.bucket, Key=key)
            last = b"\n"
            async with resp["Body"] as body:
                async for chunk in body.iter_chunks(256 * 1024):
                    out.write(chunk)
                    last = chunk[-1:] or last
            if last != b"\n":
                out.write(b"\n")  # a torn last line must not swallow the next object's first

        await self._store.call(f"GET {key}", get)

    # -- writing ----------------------------------------------------------------------------

    def open_for_append(self) -> None:
        """Nothing to open: lines wait in memory for the next manifest object."""

    def append(self, rec: Record) -> None:
        self._pending.append(rec.encode())
        if len(self._pending) >= self.flush_lines:
            self._full.set()

    def sync(self) -> None:
        """Lines are made durable by flush(), from the event loop."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write the lines waiting as one new manifest object; on failure they stay waiting."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        self._full = anyio.Event()
        self._seq += 1
        key = self.folder + object_name(self.run_id, self._seq)
        try:
            await self._store.put(key, b"".join(lines), ContentType="application/x-ndjson")
        except BaseException:
            self._pending[:0] = lines
            raise
        self.written += len(lines)

    async def keep_flushing(self, seconds: float = FLUSH_SECONDS) -> None:
        """Flush every `seconds`, or as soon as FLUSH_LINES lines wait (runs until cancelled)."""
        while True:
            with anyio.move_on_after(seconds):
                await self._full.wait()
            await self.flush()

    # -- compaction -------------------------------------------------------------------------

    def should_compact(self) -> bool:
        return len(self.loaded) > COMPACT_AT

    async def compact(self, tmp_dir: str) -> bool:
        """Merge the objects read into one (every unit's latest line), then delete them."""
        if len(self.loaded) < 2:
            return False
        merged = os.path.join(tmp_dir, "compacted.jsonl")
        size = await anyio.to_thread.run_sync(self._write_latest, merged)
        key = self.folder + compacted_name(self.loaded[-1][len(self.folder) :])
        with open(merged, "rb") as fh:  # noqa: ASYNC230 - a local file, read in a thread
            fd = fh.fileno()
            await upload_file(self._store, key, lambda o, n: os.pread(fd, n, o), size, {})
        os.unlink(merged)
        for old in self.loaded:
            if old != key:
                await self._store.delete(old)
        log.info("manifest: %d objects compacted into one", len(self.loaded))
        self.loaded = [key]
        return True

    def _write_latest(self, dest: str) -> int:
        with open(dest, "wb") as out:
            for rec in self.iter_latest():
                out.write(rec.encode())
            return out.tell()
