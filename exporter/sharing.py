"""One folder, several processes: `serve` and export runs (the cron backstop) at once. Who
else works on DIR (so that nobody removes another's temporary files), and a lock per unit
(so that no file is written by two processes at once), both released by the kernel when
their holder dies."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import anyio

from exporter.archive import LOCK_NAME, SERVE_LOCK_NAME, UNITS_LOCK_NAME

_WAIT = (0.02, 0.5)  # first and longest poll while another process holds a unit


def held_by_another(path: Path) -> bool:
    """Some other live process holds flock(2) on `path` (a missing file: nobody does)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # our own probe's lock goes with it; a holder's is another description
    return False


def export_running(out_dir: Path) -> bool:
    return held_by_another(out_dir / LOCK_NAME)


def serve_running(out_dir: Path) -> bool:
    return held_by_another(out_dir / SERVE_LOCK_NAME)


class UnitLocks:
    """A byte-range lock (fcntl F_SETLK) per unit key on DIR/.rtk-export-units.lock: one file
    whatever the number of units, one syscall to take and one to give back.

    POSIX record locks belong to the process, so units of this process that hash to the same
    byte are counted here and the byte given back with the last of them.
    """

    SPAN = 1 << 31

    def __init__(self, out_dir: Path) -> None:
        self._path = out_dir / UNITS_LOCK_NAME
        self._fd: int | None = None
        self._held: dict[int, int] = {}

    def open(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # every record lock of this process on the file goes with it
            self._fd = None
            self._held.clear()

    @asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        """Hold unit `key` against other processes, waiting (polling) while one holds it."""
        assert self._fd is not None, "open() first"
        byte = key % self.SPAN
        if self._held.get(byte, 0) == 0:
            wait = _WAIT[0]
            while not self._try(byte):
                await anyio.sleep(wait)
                wait = min(wait * 2, _WAIT[1])
        self._held[byte] = self._held.get(byte, 0) + 1
        try:
            yield
        finally:
            self._held[byte] -= 1
            if self._held[byte] == 0:
                del self._held[byte]
                if self._fd is not None:
                    with suppress(OSError):
                        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, byte)

    def _try(self, byte: int) -> bool:
        assert self._fd is not None
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True
