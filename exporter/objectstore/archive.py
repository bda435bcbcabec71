"""The bucket as the run's destination (the pipeline's Archive): bodies stored as whole
objects, the manifest as objects, "is it intact" from listing pages (not a HEAD per unit),
multipart uploads of a killed run aborted, the run's temporary area made and removed."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import anyio

from exporter.archive import OURS, remove_old_partials
from exporter.errors import ExportError, FatalError
from exporter.keyset import KeyIndex, key_of
from exporter.manifest import Manifest
from exporter.objectstore.client import NotFound, Store, StoreError
from exporter.objectstore.partials import partials_area, remove_empty_folders
from exporter.objectstore.target import MANIFEST_FOLDER
from exporter.objectstore.upload import (
    PART_SIZE,
    StoreSpool,
    abort_stale_uploads,
    make_temp_area,
    upload_file,
)
from exporter.writer import write_all

if TYPE_CHECKING:
    from exporter.objectstore.manifest import StoreManifest
    from exporter.objectstore.state import StoreState

log = logging.getLogger("exporter.objectstore")


class StoreArchive:
    """Built by exporter.objectstore.run, which hands in the manifest's and the state's
    makers (so that this module stays low in the import floors)."""

    def __init__(
        self,
        store: Store,
        make_manifest: Callable[[Store, Path], StoreManifest],
        read_state: Callable[[Store], Awaitable[StoreState]],
        part_size: int = PART_SIZE,
        *,
        serving: bool = False,
    ) -> None:
        self._store = store
        # serve: a run that lasts for days beside replicas and export runs, so "is it there"
        # asks the store each time, and only uploads a day old are taken for a killed run's.
        self.serving = serving
        self.target = store.target
        self.part_size = part_size
        self.started = datetime.now(UTC)
        self.tmp_dir = make_temp_area()
        self.partials = partials_area(self.target, self.tmp_dir)
        self.manifest = make_manifest(store, Path(self.tmp_dir) / "manifest.read.jsonl")
        self._read_state = read_state
        self.state: StoreState | None = None
        self._sizes: KeyIndex | None = None  # key_of(rel) -> size + 1, from the listing
        self._listing = anyio.Lock()
        self._error: FatalError | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        # Replicas of `serve` coordinate by claims on inbox items; objects are whole, so two
        # writers of one key cannot tear it (see exporter.webhooks).
        self.shared = False

    # -- the pipeline's Archive -------------------------------------------------------------

    async def load_manifest(self, manifest: Manifest) -> None:
        """Read the manifest objects; merge them into one when there are many."""
        assert manifest is self.manifest
        await self.manifest.fetch()
        await anyio.to_thread.run_sync(self.manifest.load, abandon_on_cancel=True)
        if self.manifest.should_compact():
            await self.manifest.compact(self.tmp_dir)

    async def clean_up(self) -> int:
        before = self.started - timedelta(days=1) if self.serving else self.started
        aborted = await abort_stale_uploads(self._store, before)
        if aborted:
            log.info("aborted %d multipart upload(s) left by an interrupted run", aborted)
        return 0

    async def is_intact(self, rel: str, size: object, sha256: object) -> bool:
        """The object is there with the recorded size (from the listing of PREFIX, made once:
        one request per 1,000 objects instead of a HEAD per unit)."""
        if not isinstance(size, int):
            return False
        if self.serving:
            return await self._size_of(rel) == size
        sizes = await self._listed()
        return sizes.get(key_of(rel)) == size + 1

    async def _size_of(self, rel: str) -> int | None:
        key, c = self.target.key(rel), self._store.client
        try:
            head = await self._store.call(
                f"HEAD {key}", lambda: c.head_object(Bucket=self._store.bucket, Key=key)
            )
        except NotFound:
            return None
        return int(head.get("ContentLength", -1))

    async def _listed(self) -> KeyIndex:
        async with self._listing:
            if self._sizes is None:
                sizes = KeyIndex()
                async for rel, size in list_archived(self._store):
                    sizes.put(key_of(rel), size + 1)  # +1: KeyIndex values of 0 are fine too
                self._sizes = sizes
            return self._sizes

    def hold(self, key: int) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    def spool(self, rel: str) -> StoreSpool:
        return StoreSpool(self._store, self.target.key(rel), rel, self.tmp_dir, self.part_size)

    # -- what the media kinds need (attachments, recordings) ------------------------------

    async def open_stored(self, rel: str) -> IO[bytes]:
        """The object streamed into the temporary area and opened there (its name already
        removed: closing it frees the space); NotFound, or StoreDown when the store stays
        down."""
        key = self.target.key(rel)
        fd, path = tempfile.mkstemp(dir=self.tmp_dir, suffix=".read")
        try:
            os.unlink(path)

            async def get() -> None:
                os.ftruncate(fd, 0)  # a retry starts the copy again
                os.lseek(fd, 0, os.SEEK_SET)
                resp = await self._store.client.get_object(Bucket=self._store.bucket, Key=key)
                async with resp["Body"] as body:
                    async for chunk in body.iter_chunks(1024 * 1024):
                        await anyio.to_thread.run_sync(write_all, fd, chunk)

            await self._store.call(f"GET {key}", get)
            os.lseek(fd, 0, os.SEEK_SET)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def local_path(self, rel: str) -> str:
        """`rel` in the partials area of this target (see objectstore.partials)."""
        return os.path.join(self.partials, rel)

    async def adopt(self, path: str, rel: str, sha256: str) -> None:
        """Upload the complete local file as `rel` (one PUT, or a multipart upload, with
        Content-MD5 and its `sha256`), then remove it.

        A download cut off is continued locally (`Range` on the partial file), and the object
        uploaded only once the file is whole, from its first byte: the metadata `sha256` must
        be given when an upload starts, the parts of an unfinished upload cannot be read back
        to hash them again, and hashlib's running state cannot be saved; so an upload cut off
        (an aborted multipart upload) starts again from the local file, never from the
        network."""
        fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size

            def read(offset: int, n: int) -> bytes:
                return os.pread(fd, n, offset)

            key = self.target.key(rel)
            meta = {"sha256": sha256}
            await upload_file(self._store, key, read, size, meta, self.part_size)
        finally:
            os.close(fd)
        await anyio.to_thread.run_sync(os.unlink, path)

    async def remove_old_partials(self, max_age: float, now: float) -> int:
        def clean() -> int:
            removed = remove_old_partials(Path(self.partials), max_age, now)
            remove_empty_folders(self.partials)
            return removed

        return await anyio.to_thread.run_sync(clean)

    async def load_state(self) -> StoreState:
        self.state = await self._read_state(self._store)
        return self.state

    @property
    def folder_error(self) -> FatalError | None:
        """The manifest could not be written at the end (the store stayed down)."""
        return self._error

    async def __aenter__(self) -> StoreArchive:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._flush_loop)
        return self

    async def _flush_loop(self) -> None:
        try:
            await self.manifest.keep_flushing()
        except ExportError as exc:
            self._error = _fatal(exc)  # lines stay waiting; the final flush tries again

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        # Shielded, even from a signal: what finished is recorded.
        with anyio.CancelScope(shield=True):
            try:
                await self.manifest.flush()
                self._error = None
            except ExportError as exc:
                self._error = _fatal(exc)
                log.error("%d manifest line(s) could not be written", self.manifest.pending)

    def close(self) -> None:
        """Remove the run's temporary area."""
        self.manifest.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _fatal(exc: ExportError) -> FatalError:
    """A manifest object the store refuses stops the run: outcomes must be recordable."""
    if isinstance(exc, FatalError):
        return exc
    return StoreError(f"the manifest cannot be written: {exc.message}")


async def list_archived(store: Store) -> AsyncIterator[tuple[str, int]]:
    """(rel, size) of every archived object under PREFIX: the manifest's objects and the
    program's own aside."""
    root = store.target.root
    async for page in store.list_pages(root):
        for obj in page:
            rel = obj["Key"][len(root) :]
            if rel.startswith(MANIFEST_FOLDER) or os.path.basename(rel).startswith(OURS):
                continue
            yield rel, int(obj.get("Size", 0))
