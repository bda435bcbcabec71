"""The writer threads: a file lands whole under its final name or not at all, a cancelled
waiter leaves nothing behind, and an error reaches the waiter."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import pytest

from exporter import writer
from exporter.writer import FileWriter


async def test_many_files_land_whole_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    """200 files placed at once by 4 threads: each holds exactly its bytes."""
    async with FileWriter(threads=4) as w, anyio.create_task_group() as tg:
        for i in range(200):
            data = f"{i}\n".encode() * (i + 1)
            tg.start_soon(w.place, str(tmp_path / f"{i}.part"), str(tmp_path / f"{i}.csv"), data)
    for i in range(200):
        assert (tmp_path / f"{i}.csv").read_bytes() == f"{i}\n".encode() * (i + 1)
    assert not list(tmp_path.glob("*.part"))


async def test_an_open_file_handed_over_is_finished_and_closed(tmp_path: Path) -> None:
    """The fd of a spilled body belongs to the writer: the rest is written, then it is closed."""
    tmp, final = tmp_path / "f.part", tmp_path / "f.csv"
    fd = os.open(tmp, writer.CREATE_FLAGS, 0o644)
    os.write(fd, b"head,")
    async with FileWriter(threads=1) as w:
        await w.place(str(tmp), str(final), b"tail\n", fd)
    assert final.read_bytes() == b"head,tail\n" and not tmp.exists()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


async def test_a_folder_removed_during_the_run_is_made_again(tmp_path: Path) -> None:
    """A user tidying DIR mid-run does not fail the next file of that folder."""
    folder = tmp_path / "app"
    async with FileWriter(threads=1) as w:
        await w.place(str(folder / "a.part"), str(folder / "a.csv"), b"a")
        (folder / "a.csv").unlink()
        folder.rmdir()
        await w.place(str(folder / "b.part"), str(folder / "b.csv"), b"b")
    assert (folder / "b.csv").read_bytes() == b"b"


async def test_an_error_reaches_the_waiter_and_the_temporary_file_goes(tmp_path: Path) -> None:
    """A rename that fails (the final name is a folder) raises in the waiter; no .part stays."""
    (tmp_path / "taken.csv").mkdir()
    async with FileWriter(threads=1) as w:
        with pytest.raises(IsADirectoryError):
            await w.place(str(tmp_path / "t.part"), str(tmp_path / "taken.csv"), b"x")
    assert not (tmp_path / "t.part").exists()


async def test_a_cancelled_waiter_gets_no_file_and_leaves_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its job waits in the thread: the file is not renamed into place (no
    manifest line will name it) and its temporary file is removed."""
    release = threading.Event()
    real_create = writer.create

    def slow_create(tmp: str) -> int:
        release.wait(10)
        return real_create(tmp)

    monkeypatch.setattr(writer, "create", slow_create)
    tmp, final = tmp_path / "c.part", tmp_path / "c.csv"
    async with FileWriter(threads=1) as w:
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + 0.05
            await w.place(str(tmp), str(final), b"data")
        assert scope.cancelled_caught
        release.set()
    assert not final.exists() and not tmp.exists()


async def test_each_folder_written_to_is_synced_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renames are made durable before the writer closes: each folder once, after the
    last file placed in it, and then their parent (DIR), which holds new folders."""
    synced: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        writer, "sync_folder", lambda folder: synced.append((folder, sorted(os.listdir(folder))))
    )
    async with FileWriter(threads=2) as w:
        for app in ("a", "b"):
            for i in range(3):
                folder = tmp_path / app
                await w.place(str(folder / f"{i}.part"), str(folder / f"{i}.csv"), b"x")
        assert synced == []
    files = ["0.csv", "1.csv", "2.csv"]
    assert synced[:2] in (
        [(str(tmp_path / "a"), files), (str(tmp_path / "b"), files)],
        [(str(tmp_path / "b"), files), (str(tmp_path / "a"), files)],
    )
    assert synced[2:] == [(str(tmp_path), ["a", "b"])]


async def test_a_cancelled_job_with_a_spilled_fd_is_dropped_without_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spilled body's fd handed over, then its waiter cancelled while the job queues: the
    fd is closed, the temporary file removed, nothing lands and no fsync is spent on it."""
    release = threading.Event()
    real_create, synced = writer.create, []

    def slow_create(tmp: str) -> int:
        release.wait(10)
        return real_create(tmp)

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    real_fsync = os.fsync
    monkeypatch.setattr(writer, "create", slow_create)
    monkeypatch.setattr(writer.os, "fsync", fsync)
    spilled, final = tmp_path / "s.part", tmp_path / "s.csv"
    fd = os.open(spilled, writer.CREATE_FLAGS, 0o644)
    inode = os.fstat(fd).st_ino
    async with FileWriter(threads=1) as w, anyio.create_task_group() as tg:
        tg.start_soon(w.place, str(tmp_path / "first.part"), str(tmp_path / "first.csv"), b"1")
        await anyio.sleep(0.01)  # the one thread is now held in the first job's create
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + 0.05
            await w.place(str(spilled), str(final), b"rest", fd)
        assert scope.cancelled_caught
        release.set()
    assert (tmp_path / "first.csv").read_bytes() == b"1"
    assert not final.exists() and not spilled.exists()
    assert synced and inode not in synced
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
