"""kill -9 at many moments (planted at exact points, and at random delays), each followed by a
rerun that must end with every pair intact and nothing downloaded twice."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.standin import FaultRates, StandinConfig, StandinServer, standin_in_thread
from tests.helpers import ACCOUNT, TOKEN, cli_env, leftovers, pairs, run_cli, write_sessions

N = 40
# Slow downloads stretch a run to about a second, so that random kills land inside it.
SLOW = StandinConfig(
    token=TOKEN, account_id=ACCOUNT, slow_seconds=0.06, faults=FaultRates(download_slow=1.0)
)
PLANTED = (
    [("mid-download", n) for n in (1, 4, 11, 23)]
    + [("before-rename", n) for n in (1, 6, 17)]
    + [("after-rename", n) for n in (1, 9, 30)]
    + [("mid-manifest-line", n) for n in (1, 2, 14, 35)]
    + [("after-manifest-line", n) for n in (3, 20)]
)
# From 0.2 s (still starting up) to 0.7 s (mid-run); a run takes over a second (start-up,
# then 40 downloads of 60 ms each, 4 at a time).
RANDOM_DELAYS = random.Random(7).sample([round(0.2 + 0.1 * i, 1) for i in range(6)], 6)


@pytest.fixture(scope="module")
def slow_server() -> Iterator[StandinServer]:
    with standin_in_thread(SLOW) as server:
        yield server


def finished_lines(manifest: Path) -> dict[tuple[str, str], dict[str, object]]:
    """Complete manifest lines (a kill may tear the last one), latest per pair."""
    done: dict[tuple[str, str], dict[str, object]] = {}
    if not manifest.exists():
        return done
    for raw in manifest.read_bytes().split(b"\n"):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        done[(rec["app_id"], rec["session_id"])] = rec
    return done


def check_rerun(server: StandinServer, tmp_path: Path, args: list[str], out: Path) -> None:
    todo = pairs(N)
    # Whatever the kill left under a final name is complete: a file is renamed in only whole.
    for app, sid in todo:
        final = out / app / f"{sid}.csv"
        if final.exists():
            assert final.read_bytes() == server.expected_body(app, sid), final
    done = {
        k for k, v in finished_lines(out / "manifest.jsonl").items() if v["status"] == "exported"
    }
    seen = len(server.state.records("download"))
    rerun = run_cli(args, cli_env(server.base_url))
    assert rerun.returncode == 0, rerun.stderr
    again = [r.path for r in server.state.records("download")[seen:]]
    for app, sid in todo:
        assert (out / app / f"{sid}.csv").read_bytes() == server.expected_body(app, sid)
    assert leftovers(out) == []
    assert not [p for p in again for a, s in done if p.startswith(f"/downloads/{a}/{s}/")]
    assert len(again) == N - len(done)
    last = finished_lines(out / "manifest.jsonl")
    assert {v["status"] for v in last.values()} <= {"exported", "skipped"}
    assert len(last) == N


@pytest.mark.parametrize(("point", "n"), PLANTED, ids=[f"{p}-{n}" for p, n in PLANTED])
def test_kill_9_at_a_planted_point_then_rerun(
    slow_server: StandinServer, tmp_path: Path, point: str, n: int
) -> None:
    """SIGKILL at the n-th pass through a point (a body half written, a complete temporary
    file, a renamed file with no manifest line, half a manifest line): the rerun repairs all."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(N))
    out = tmp_path / "out"
    args = [str(sessions), "--out", str(out), "--concurrency", "4"]
    env = cli_env(slow_server.base_url, RTK_KILL_AT=f"{point}:{n}")
    killed = subprocess.run(
        [sys.executable, "-m", "tests.kill_harness", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr  # the planted kill did happen
    if point in ("mid-download", "before-rename"):
        assert leftovers(out), "the kill should have left a temporary file for the rerun"
    check_rerun(slow_server, tmp_path, args, out)


@pytest.mark.parametrize("delay", RANDOM_DELAYS)
def test_kill_9_after_a_random_delay_then_rerun(
    slow_server: StandinServer, tmp_path: Path, delay: float
) -> None:
    """SIGKILL from outside at a random moment of a run (start-up included): the rerun
    repairs all and downloads nothing finished before the kill."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(N))
    out = tmp_path / "out"
    args = [str(sessions), "--out", str(out), "--concurrency", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        env=cli_env(slow_server.base_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)  # the moment of the kill is what this test varies
    proc.kill()
    assert proc.wait(timeout=30) == -9  # killed, not finished
    check_rerun(slow_server, tmp_path, args, out)
