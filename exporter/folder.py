"""DIR as the run's destination (the pipeline's Archive): bodies spooled and placed
atomically by writer threads, folders synced at the end, and, beside a `serve` on the same
folder, unit locks and clean-ups that leave the other process's files alone."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from exporter.archive import (
    file_matches,
    remove_old_partials,
    remove_stale_temps,
    temp_name,
)
from exporter.errors import DiskError, FatalError

if TYPE_CHECKING:
    from exporter.manifest import Manifest
    from exporter.runstate import RunState
    from exporter.sharing import UnitLocks
    from exporter.writer import Spool


class FolderArchive:
    """DIR as the run's destination: bodies spooled and placed atomically by writer threads,
    folders synced at the end."""

    def __init__(
        self,
        out_dir: Path,
        load_state: Callable[[Path], RunState] | None = None,
        *,
        role: str = "export",
    ) -> None:
        # The state's reader is handed in: runstate imports this module's names.
        self._load_state = load_state
        self.out_dir = out_dir
        self.role = role  # "export" or "serve": the other one may work on DIR at once
        self.shared = False
        self._units: UnitLocks | None = None
        self._root = os.fspath(out_dir)
        # Imported here: the command line reads this module's names at start-up, and
        # the writer's threads and anyio are 40 ms of imports a usage error need not pay.
        from exporter.writer import FileWriter, Spool

        self._writer = FileWriter()
        self._spool = Spool

    async def __aenter__(self) -> FolderArchive:
        from exporter.sharing import UnitLocks, serve_running

        # An export takes unit locks only while a serve works on DIR: a plain run pays nothing.
        self.shared = self.role == "serve" or serve_running(self.out_dir)
        if self.shared:
            self._units = UnitLocks(self.out_dir)
            self._units.open()
        await self._writer.__aenter__()
        return self

    def hold(self, key: int) -> AbstractAsyncContextManager[None]:
        return self._units.hold(key) if self._units is not None else nullcontext()

    def others_working(self) -> bool:
        """The other role works on DIR now: its temporary files may be in use."""
        from exporter.sharing import export_running, serve_running

        return (
            serve_running(self.out_dir) if self.role == "export" else export_running(self.out_dir)
        )

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._writer.__aexit__(et, e, tb)
        if self._units is not None:
            self._units.close()

    def close(self) -> None:
        return None  # nothing kept outside DIR

    def remove_stale(self) -> int:
        # Another process's temporary files may be downloads in flight: left for a later run.
        return 0 if self.others_working() else remove_stale_temps(self.out_dir)

    async def load_manifest(self, manifest: Manifest) -> None:
        import anyio

        await anyio.to_thread.run_sync(manifest.load, abandon_on_cancel=True)

    async def clean_up(self) -> int:
        import anyio

        return await anyio.to_thread.run_sync(self.remove_stale)

    async def is_intact(self, rel: str, size: object, sha256: object) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.intact, rel, size, sha256)

    async def load_state(self) -> RunState:
        import anyio

        assert self._load_state is not None, "FolderArchive(out_dir, RunState.load)"
        return await anyio.to_thread.run_sync(self._load_state, self.out_dir)

    def intact(self, rel: str, size: object, sha256: object) -> bool:
        """The archived copy of `rel` is there as recorded (blocking: use a thread)."""
        return file_matches(os.path.join(self._root, rel), size, sha256)

    async def open_stored(self, rel: str) -> IO[bytes]:
        """An archived file read back, e.g. a chat CSV for its attachments. An object-storage
        archive streams the object instead."""
        import anyio

        return await anyio.to_thread.run_sync(open, os.path.join(self._root, rel), "rb")

    def local_path(self, rel: str) -> str:
        """Where a resumable download of `rel` keeps its partial file and record: beside the
        final name here; an object-storage archive names a place in its local work area."""
        return os.path.join(self._root, rel)

    async def adopt(self, path: str, rel: str, sha256: str) -> None:
        """Place a complete local file as `rel`: a rename and a folder sync here (the hash
        is the caller's to record); an object-storage archive uploads it."""
        import anyio

        await anyio.to_thread.run_sync(self._adopt, path, rel)

    def _adopt(self, path: str, rel: str) -> None:
        from exporter.writer import sync_folder

        final = os.path.join(self._root, rel)
        os.replace(path, final)
        sync_folder(os.path.dirname(final))

    async def remove_old_partials(self, max_age: float, now: float) -> int:
        import anyio

        if self.others_working():  # a partial may be a download the other process resumes
            return 0
        return await anyio.to_thread.run_sync(remove_old_partials, self.out_dir, max_age, now)

    def spool(self, rel: str) -> Spool:
        # Plain strings: a Path per temporary name and folder cost a few per cent of the CPU
        # per pair.
        final = os.path.join(self._root, rel)
        return self._spool(self._writer, temp_name(final), final)

    @property
    def folder_error(self) -> FatalError | None:
        """Set once closed, if a folder could not be synced at the end."""
        if self._writer.folder_error is None:
            return None
        folder, exc = self._writer.folder_error
        return DiskError(f"cannot sync the folder {folder}: {exc.strerror or exc}")
