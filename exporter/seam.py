"""The archive's seam: `Archive`, where a run keeps what it exports, and `BodySpool`, one body on
its way in. Drawn apart from the names and bytes (archive.py) that it speaks of; FolderArchive
(folder.py) and StoreArchive (objectstore/archive.py) are its two implementations."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import IO, Protocol

from exporter.errors import FatalError
from exporter.manifest import Manifest
from exporter.runstate import RunState


class BodySpool(Protocol):
    """One body on its way into the archive under `final`."""

    final: str

    async def write(self, piece: bytes) -> None: ...

    async def place(self) -> None: ...

    def discard(self) -> None: ...


class Archive(Protocol):
    """Where a run keeps what it exports, its manifest and its discovery state. Entered (async
    with) around the workers; `folder_error` is a FatalError found at the end, or None."""

    async def __aenter__(self) -> Archive: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def load_manifest(self, manifest: Manifest) -> None: ...

    async def clean_up(self) -> int: ...

    async def is_intact(self, rel: str, size: object, sha256: object) -> bool: ...

    def spool(self, rel: str) -> BodySpool: ...

    async def open_stored(self, rel: str) -> IO[bytes]:
        """An archived file read back, e.g. a chat CSV for its attachments (OSError or an
        ExportError when it cannot be)."""
        ...

    def local_path(self, rel: str) -> str:
        """The local name beside which a resumable download of `rel` keeps its partial file
        and record (see `partial_names`)."""
        ...

    async def adopt(self, path: str, rel: str, sha256: str) -> None:
        """Place the complete local file `path` (whose SHA-256 is `sha256`) as `rel`."""
        ...

    async def remove_old_partials(self, max_age: float, now: float) -> int:
        """Remove resumable partials not resumed for `max_age` seconds; how many."""
        ...

    async def load_state(self) -> RunState: ...

    # Another process may write units and manifest lines beside this one (serve and an
    # export on one folder): re-read the manifest's new lines before each unit.
    shared: bool

    def hold(self, key: int) -> AbstractAsyncContextManager[None]:
        """Unit `key` held against the other processes on this archive (or a no-op)."""
        ...

    def close(self) -> None:
        """After the run: remove what it kept locally (an object store's temporary area)."""
        ...

    @property
    def folder_error(self) -> FatalError | None: ...
