"""The bucket as the run's destination (the pipeline's Archive): bodies stored as whole
objects, the manifest as objects, "is it intact" from listing pages (not a HEAD per unit),
multipart uploads of a killed run aborted, the run's temporary area made and removed."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import anyio

from exporter.archive import OURS
from exporter.errors import FatalError
from exporter.keyset import KeyIndex, key_of
from exporter.manifest import Manifest
from exporter.objectstore.client import Store
from exporter.objectstore.manifest import FOLDER, StoreManifest
from exporter.objectstore.state import StoreState
from exporter.objectstore.upload import PART_SIZE, StoreSpool, abort_stale_uploads, make_temp_area

log = logging.getLogger("exporter.objectstore")


class StoreArchive:
    def __init__(self, store: Store, part_size: int = PART_SIZE) -> None:
        self._store = store
        self.target = store.target
        self.part_size = part_size
        self.started = datetime.now(UTC)
        self.tmp_dir = make_temp_area()
        self.manifest = StoreManifest(store, Path(self.tmp_dir) / "manifest.read.jsonl")
        self.state: StoreState | None = None
        self.compact_at: int | None = None  # objects; None: the manifest module's default
        self._sizes: KeyIndex | None = None  # key_of(rel) -> size + 1, from the listing
        self._listing = anyio.Lock()
        self._error: FatalError | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    # -- the pipeline's Archive -------------------------------------------------------------

    async def load_manifest(self, manifest: Manifest) -> None:
        from exporter.objectstore.manifest import COMPACT_AT

        assert manifest is self.manifest
        await self.manifest.fetch()
        await anyio.to_thread.run_sync(self.manifest.load, abandon_on_cancel=True)
        if len(self.manifest.loaded) > (self.compact_at or COMPACT_AT):
            await self.manifest.compact(self.tmp_dir)

    async def clean_up(self) -> int:
        aborted = await abort_stale_uploads(self._store, self.started)
        if aborted:
            log.info("aborted %d multipart upload(s) left by an interrupted run", aborted)
        return 0

    async def is_intact(self, rel: str, size: object, sha256: object) -> bool:
        """The object is there with the recorded size (from the listing of PREFIX, made once:
        one request per 1,000 objects instead of a HEAD per unit)."""
        if not isinstance(size, int):
            return False
        sizes = await self._listed()
        return sizes.get(key_of(rel)) == size + 1

    async def _listed(self) -> KeyIndex:
        async with self._listing:
            if self._sizes is None:
                sizes = KeyIndex()
                async for rel, size in list_archived(self._store):
                    sizes.put(key_of(rel), size + 1)  # +1: KeyIndex values of 0 are fine too
                self._sizes = sizes
            return self._sizes

    def spool(self, rel: str) -> StoreSpool:
        return StoreSpool(self._store, self.target.key(rel), rel, self.tmp_dir, self.part_size)

    async def load_state(self) -> StoreState:
        self.state = await StoreState.read(self._store)
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
        except FatalError as exc:
            self._error = exc  # lines stay waiting; the final flush tries again

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
            except FatalError as exc:
                self._error = exc
                log.error("%d manifest line(s) could not be written", self.manifest.pending)

    def close(self) -> None:
        """Remove the run's temporary area."""
        self.manifest.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


async def list_archived(store: Store):  # type: ignore[no-untyped-def]
    """(rel, size) of every archived object under PREFIX: the manifest's objects and the
    program's own aside."""
    root = store.target.root
    async for page in store.list_pages(root):
        for obj in page:
            rel = obj["Key"][len(root) :]
            if rel.startswith(FOLDER) or os.path.basename(rel).startswith(OURS):
                continue
            yield rel, int(obj.get("Size", 0))
