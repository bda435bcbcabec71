"""The exclusive lock on DIR: one run at a time, released by the kernel when its holder dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from exporter.archive import LOCK_NAME


class Locked(Exception):
    """Another live run holds the lock."""

    def __init__(self, path: Path, pid: str) -> None:
        super().__init__(
            f"{path.parent} is being exported by another rtk-export run "
            f"(pid {pid or 'unknown'}); exiting"
        )
        self.pid = pid


def pid_alive(pid: int) -> bool:
    """Whether process `pid` lives on this host: a lock's or a temporary area's holder."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


class DirLock:
    """flock(2) on DIR/.rtk-export.lock: a file left by a killed run holds no lock."""

    def __init__(self, out_dir: Path, name: str = LOCK_NAME) -> None:
        self.path = out_dir / name  # LOCK_NAME for an export, SERVE_LOCK_NAME for serve
        self._fd: int | None = None

    def __enter__(self) -> DirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise Locked(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
