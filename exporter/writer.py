"""Writer threads that put finished downloads on disk: create, write, fsync, rename into place;
and the spool a body arrives in (memory, then its temporary file, written off the event loop).

While fsyncs run, a file create on ext4 took a quarter of a millisecond here (248 us a call
under strace): on the event loop that stalled every download in flight, and a worker
thread per fsync (anyio.to_thread) cost a thread wake-up, a GIL hand-over and a loop wake-up per
file. Here a few long-lived threads take the files, and the loop is woken once per batch.
"""

from __future__ import annotations

import asyncio
import os
import threading
from contextlib import suppress
from dataclasses import dataclass
from queue import SimpleQueue
from types import TracebackType

import anyio

CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
IN_MEMORY = 1024 * 1024  # bytes of a body held before it spills to its temporary file


@dataclass(slots=True)
class _Job:
    fd: int | None  # an open temporary file, or None: create `tmp` first
    data: bytes  # still to be written
    tmp: str
    final: str
    future: asyncio.Future[None]


class FileWriter:
    """`await place(...)`: the file is complete, fsynced and under its final name, or the
    error is raised (an OSError from the disk) and the temporary file is gone; whatever was
    under the final name before stays.

    A job whose waiter is cancelled before its thread renames it is dropped, its temporary
    file removed; one cancelled later lands whole, and having no manifest line, is fetched
    again by the next run. An fd handed over is closed by the thread, never reused early.
    """

    def __init__(self, threads: int = 4) -> None:
        self._queue: SimpleQueue[_Job | None] = SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [
            threading.Thread(target=self._serve, name=f"rtk-export-writer-{i}", daemon=True)
            for i in range(threads)
        ]
        self._done: list[tuple[asyncio.Future[None], BaseException | None]] = []
        self._done_lock = threading.Lock()
        self._folders: set[str] = set()  # where files were renamed into
        # The first folder that could not be synced at the end, and why: the run's files may
        # then not survive a power cut, which the run must report (Run turns it into exit 2).
        self.folder_error: tuple[str, OSError] | None = None

    async def __aenter__(self) -> FileWriter:
        self._loop = asyncio.get_running_loop()
        for t in self._threads:
            t.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for _ in self._threads:
            self._queue.put(None)
        # Shielded, even from a signal's cancellation: jobs handed over are finished before
        # the threads end (an fd never left open, a file never half renamed), and the renames
        # are made durable. Bounded by the disk, as each fsync is.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._finish)

    def _finish(self) -> None:
        for t in self._threads:
            t.join()
        # A rename is durable once its folder is synced, and a new folder once its parent
        # (DIR) is: then exit 0 means every file the manifest names is on disk, not only its
        # data.
        folders = self._folders | {os.path.dirname(f) for f in self._folders}
        for folder in sorted(folders, key=len, reverse=True):  # inner folders first
            try:
                sync_folder(folder)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if self.folder_error is None:
                    self.folder_error = (folder, exc)

    async def place(self, tmp: str, final: str, data: bytes, fd: int | None = None) -> None:
        """Write `data` to `tmp` (created now unless `fd` is given, which then belongs to
        the writer), fsync, close, and rename to `final`."""
        assert self._loop is not None, "use FileWriter as an async context manager"
        future = self._loop.create_future()
        self._queue.put(_Job(fd, data, tmp, final, future))
        await future

    def _serve(self) -> None:
        # Several threads: concurrent fsyncs share the file system's journal commits, which
        # matters most on slow disks.
        assert self._loop is not None
        while (job := self._queue.get()) is not None:
            error = _run(job)
            if error is None:
                self._folders.add(os.path.dirname(job.final))
            with self._done_lock:
                self._done.append((job.future, error))
                first = len(self._done) == 1
            if first:  # one wake-up of the loop for all that finish before it runs
                # RuntimeError: the loop is closed, and nobody is waiting any more.
                with suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        for future, error in done:
            if future.done():  # its waiter was cancelled
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _run(job: _Job) -> BaseException | None:
    fd = job.fd
    if job.future.cancelled():  # nobody waits for it: no fsync for a file to be removed
        if fd is not None:
            os.close(fd)
            _remove(job.tmp)
        return None
    try:
        if fd is None:
            fd = create(job.tmp)
        try:
            write_all(fd, job.data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if job.future.cancelled():
            _remove(job.tmp)
            return None
        os.replace(job.tmp, job.final)
    except Exception as exc:  # handed to the waiter, which maps it (or lets a bug surface)
        with suppress(OSError):
            _remove(job.tmp)
        return exc
    return None


def create(tmp: str) -> int:
    """A new file; its folder is made on first use (or again, if removed during the run)."""
    try:
        return os.open(tmp, CREATE_FLAGS, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        return os.open(tmp, CREATE_FLAGS, 0o666)


def _remove(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def sync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spool:
    """One body on its way to `final`: held in memory up to IN_MEMORY bytes, then spilled to
    its temporary file `tmp` a batch at a time by a worker thread, so that no create or write
    runs on the event loop. `place()` hands it to the writer; `discard()` leaves nothing."""

    def __init__(self, writer: FileWriter, tmp: str, final: str) -> None:
        self._writer, self.tmp, self.final = writer, tmp, final
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._fd: int | None = None

    async def write(self, piece: bytes) -> None:
        self._held.append(piece)
        self._held_bytes += len(piece)
        if self._held_bytes > IN_MEMORY:
            data = self._take()
            self._fd = await anyio.to_thread.run_sync(self._spill, self._fd, data)

    def _take(self) -> bytes:
        data = b"".join(self._held)
        self._held.clear()  # one copy in memory while it waits for the disk, not two
        self._held_bytes = 0
        return data

    def _spill(self, fd: int | None, data: bytes) -> int:
        if fd is None:
            fd = create(self.tmp)
            self._fd = fd  # closed by discard() even if the write below fails
        write_all(fd, data)
        return fd

    async def place(self) -> None:
        """Write what is held, fsync, close and rename into place (see FileWriter.place)."""
        fd, self._fd = self._fd, None
        await self._writer.place(self.tmp, self.final, self._take(), fd)

    def discard(self) -> None:
        self._held.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        _remove(self.tmp)
