"""A full disk (RLIMIT_FSIZE in the child: writes past it fail with EFBIG, as on a full disk)
and an unwritable output: exit 2 with a clear message, nothing half written under a final
name, the manifest still whole lines; and no request at all when DIR cannot be written."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.standin import StandinConfig, StandinServer, standin_in_thread
from exporter.writer import IN_MEMORY
from tests.helpers import ACCOUNT, TOKEN, cli_env, leftovers, pairs, run_cli, write_sessions


def file_size_limit(limit: int) -> Callable[[], None]:
    def set_limit() -> None:  # runs in the child, before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def run_limited(
    args: list[str], server: StandinServer, limit: int
) -> subprocess.CompletedProcess[str]:
    env = cli_env(server.base_url, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
        preexec_fn=file_size_limit(limit),
    )


def whole_lines(manifest: Path) -> list[dict[str, object]]:
    data = manifest.read_bytes()
    assert data.endswith(b"\n"), "the manifest ends in the middle of a line"
    return [json.loads(line) for line in data.splitlines()]


# (body size, file size limit): a body held in memory and written by a writer thread, and one
# that spills to its temporary file on the event loop before the limit is reached.
SIZES = [(300_000, 100_000), (IN_MEMORY + 500_000, IN_MEMORY + 200_000)]


@pytest.fixture(scope="module", params=SIZES, ids=["held", "spilled"])
def big_bodies(request: pytest.FixtureRequest) -> Iterator[tuple[StandinServer, int]]:
    size, limit = request.param
    with standin_in_thread(
        StandinConfig(token=TOKEN, account_id=ACCOUNT, chat_bytes=size)
    ) as server:
        yield server, limit


def test_disk_full_mid_download_stops_with_exit_2(
    big_bodies: tuple[StandinServer, int], tmp_path: Path
) -> None:
    """A CSV on a disk that takes less than its size: exit 2 naming the cause; the lines of the
    earlier run stay valid; no partial file under a final name; the rerun finishes the job."""
    server, limit = big_bodies
    out = tmp_path / "out"
    first = write_sessions(tmp_path / "first.txt", pairs(3))
    assert run_cli([str(first), "--out", str(out)], cli_env(server.base_url)).returncode == 0
    before = (out / "manifest.jsonl").read_bytes()
    everything = write_sessions(tmp_path / "all.txt", pairs(8))
    args = [str(everything), "--out", str(out), "--concurrency", "2"]
    proc = run_limited(args, server, limit=limit)
    assert proc.returncode == 2, proc.stderr
    assert "File too large" in proc.stderr and "cannot write" in proc.stderr
    assert "Traceback" not in proc.stderr
    lines = whole_lines(out / "manifest.jsonl")
    assert (out / "manifest.jsonl").read_bytes().startswith(before)
    assert all(x["status"] in ("exported", "skipped") for x in lines)
    for app, sid in pairs(8)[3:]:
        assert not (out / app / f"{sid}.csv").exists()
    assert leftovers(out) == []
    rerun = run_cli(args, cli_env(server.base_url))
    assert rerun.returncode == 0, rerun.stderr
    for app, sid in pairs(8):
        assert (out / app / f"{sid}.csv").read_bytes() == server.expected_body(app, sid)


def test_manifest_on_a_full_disk_stops_the_run_with_whole_lines(tmp_path: Path) -> None:
    """When the manifest itself cannot grow, the run stops (exit 2) instead of exporting pairs
    it cannot record, and the line it could not finish is cut off, not left torn."""
    config = StandinConfig(token=TOKEN, account_id=ACCOUNT, chat_rows=6)
    with standin_in_thread(config) as server:
        sessions = write_sessions(tmp_path / "s.txt", pairs(40))
        out = tmp_path / "out"
        args = [str(sessions), "--out", str(out), "--concurrency", "2"]
        proc = run_limited(args, server, limit=4096)
        assert proc.returncode == 2, proc.stderr
        assert "cannot write the manifest" in proc.stderr and "File too large" in proc.stderr
        assert "Traceback" not in proc.stderr
        lines = whole_lines(out / "manifest.jsonl")
        assert 0 < len(lines) < 40
        assert leftovers(out) == []
        rerun = run_cli(args, cli_env(server.base_url))
        assert rerun.returncode == 0, rerun.stderr
        for app, sid in pairs(40):
            assert (out / app / f"{sid}.csv").read_bytes() == server.expected_body(app, sid)


@pytest.fixture(scope="module")
def live() -> Iterator[StandinServer]:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def _sysfs_refuses_files() -> bool:
    try:
        open("/sys/rtk-export-probe", "w").close()
    except OSError:
        return os.access("/sys", os.W_OK)  # os.access says yes, the write says no
    os.unlink("/sys/rtk-export-probe")
    return False


UNWRITABLE = [
    ("manifest under a file", ["--manifest", "FILE/m.jsonl"], "cannot create"),
    ("manifest is a folder", ["--manifest", "FOLDER"], "is a directory"),
    ("out under a file", ["--out", "FILE/out"], "cannot create"),
]
if _sysfs_refuses_files():
    UNWRITABLE.append(("out refuses new files", ["--out", "/sys"], "cannot write to /sys"))


@pytest.mark.parametrize(
    ("extra", "words"), [u[1:] for u in UNWRITABLE], ids=[u[0] for u in UNWRITABLE]
)
def test_unwritable_output_fails_before_any_request(
    live: StandinServer, tmp_path: Path, extra: list[str], words: str
) -> None:
    """An --out or --manifest that cannot be written: exit 2, one clear line, no request.
    (Tests run as root, for whom modes do not stop writes; these paths refuse anyway.)"""
    sessions = write_sessions(tmp_path / "s.txt", pairs(3))
    (tmp_path / "FILE").write_text("a regular file")
    (tmp_path / "FOLDER").mkdir()
    args = [str(sessions), "--out", "out", *extra]
    before = len(live.state.records())
    proc = run_cli(args, cli_env(live.base_url), cwd=tmp_path)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert len(live.state.records()) == before


async def test_a_folder_that_cannot_be_synced_at_the_end_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file landed, but their folder's fsync failed (EIO): the renames may not survive a
    power cut, so the run reports a DiskError (exit 2), naming the folder; the lines stay."""
    import errno

    from exporter import writer
    from exporter.errors import DiskError
    from exporter.standin import run_standin
    from tests.helpers import export, make_settings, manifest_lines, standin_config

    def failing_sync(folder: str) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(writer, "sync_folder", failing_sync)
    out = tmp_path / "out"
    async with run_standin(standin_config()) as server:
        result = await export(make_settings(server, out, write_sessions(tmp_path / "s", pairs(3))))
    assert isinstance(result.fatal, DiskError)
    assert "cannot sync the folder" in result.fatal.message
    assert "Input/output error" in result.fatal.message
    assert [x["status"] for x in manifest_lines(out / "manifest.jsonl")] == ["exported"] * 3
