"""Whole processes: signals and kill -9 at a random moment, then a rerun that finishes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.standin import FaultRates, StandinConfig, standin_in_thread
from tests.helpers import (
    ACCOUNT,
    TOKEN,
    cli_env,
    leftovers,
    manifest_lines,
    pairs,
    run_cli,
    write_sessions,
)

SLOW = StandinConfig(
    token=TOKEN,
    account_id=ACCOUNT,
    slow_seconds=0.05,
    faults=FaultRates(download_slow=1.0, api_slow=0.5),
)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_lines(manifest: Path, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.01)
    raise AssertionError("the export did not get going")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_cleanly_and_a_rerun_finishes(
    tmp_path: Path, signum: int, code: int
) -> None:
    """SIGTERM/SIGINT: exit 143/130, a valid manifest, no temp file; the rerun ends the job."""
    with standin_in_thread(SLOW) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(150))
        out = tmp_path / "out"
        args = [str(sessions), "--out", str(out), "--concurrency", "4"]
        proc = start(args, cli_env(srv.base_url))
        wait_for_lines(out / "manifest.jsonl", 5, proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        lines = manifest_lines(out / "manifest.jsonl")  # every line parses
        assert 5 <= len(lines) < 150
        assert all(x["status"] == "exported" for x in lines)
        assert leftovers(out) == []
        rerun = run_cli(args, cli_env(srv.base_url))
        assert rerun.returncode == 0, rerun.stderr
    final = {
        (x["app_id"], x["session_id"]): x["status"] for x in manifest_lines(out / "manifest.jsonl")
    }
    assert len(final) == 150


def test_kill_9_mid_run_then_rerun_loses_nothing(tmp_path: Path) -> None:
    """After kill -9, the rerun exports the rest, removes temp files, re-downloads nothing done."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(150))
    out = tmp_path / "out"
    args = [str(sessions), "--out", str(out), "--concurrency", "8"]
    with standin_in_thread(SLOW) as srv:
        proc = start(args, cli_env(srv.base_url))
        wait_for_lines(out / "manifest.jsonl", 20, proc)
        proc.kill()
        proc.communicate(timeout=30)
    done_before = {
        (x["app_id"], x["session_id"]) for x in manifest_lines_tolerant(out / "manifest.jsonl")
    }
    # A second stand-in serves the same bytes; its records are the rerun's alone (the first
    # may still be answering requests the killed process sent).
    with standin_in_thread(SLOW) as srv:
        rerun = run_cli(args, cli_env(srv.base_url))
        assert rerun.returncode == 0, rerun.stderr
        again = sorted(r.path for r in srv.state.records("download"))
        for app, sid in pairs(150):
            assert (out / app / f"{sid}.csv").read_bytes() == srv.expected_body(app, sid)
    assert leftovers(out) == []
    assert again == sorted(
        f"/downloads/{a}/{s}/chat.csv" for a, s in pairs(150) if (a, s) not in done_before
    )


def manifest_lines_tolerant(path: Path) -> list[dict[str, object]]:
    """Lines of a manifest whose last line may be torn by the kill."""
    import json

    out = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def test_kill_9_mid_discovery_then_rerun_loses_nothing(tmp_path: Path) -> None:
    """A discovery run killed with -9 leaves last-run unset; the rerun lists the same window,
    exports the rest once, and only then records last-run and the LIVE session."""
    import json
    from datetime import UTC, datetime, timedelta

    from exporter.archive import STATE_NAME
    from exporter.standin import SessionSpec

    now = datetime.now(UTC)
    catalogue = (
        *(
            SessionSpec("app1", f"s{i:03d}", now - timedelta(minutes=10 * i + 5))
            for i in range(120)
        ),
        SessionSpec("app1", "live", now, status="LIVE"),
    )
    config = StandinConfig(
        token=TOKEN,
        account_id=ACCOUNT,
        slow_seconds=0.05,
        sessions=catalogue,
        accept_any=False,
        faults=FaultRates(download_slow=1.0, api_slow=0.5),
    )
    out = tmp_path / "out"
    args = ["--app", "app1", "--out", str(out), "--concurrency", "8"]
    with standin_in_thread(config) as srv:
        proc = start(args, cli_env(srv.base_url))
        wait_for_lines(out / "manifest.jsonl", 20, proc)
        proc.kill()
        proc.communicate(timeout=30)
    assert not (out / STATE_NAME).exists()
    done_before = {x["session_id"] for x in manifest_lines_tolerant(out / "manifest.jsonl")}
    # A second stand-in, same catalogue and bytes: its records are the rerun's alone.
    with standin_in_thread(config) as srv:
        rerun = run_cli(args, cli_env(srv.base_url))
        assert rerun.returncode == 0, rerun.stderr
        again = sorted(r.path for r in srv.state.records("download"))
        for spec in catalogue[:-1]:
            path = out / "app1" / f"{spec.session_id}.csv"
            assert path.read_bytes() == srv.expected_body("app1", spec.session_id)
    assert leftovers(out) == []
    assert again == sorted(
        f"/downloads/app1/{spec.session_id}/chat.csv"
        for spec in catalogue[:-1]
        if spec.session_id not in done_before
    )
    state = json.loads((out / STATE_NAME).read_text())["apps"]["app1"]
    assert state["live"] == ["live"] and state["last_run"] is not None
