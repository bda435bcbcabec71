"""Running from cron: the lock, --max-duration, JSON summary, JSON logs, metrics, progress."""

from __future__ import annotations

import json
import logging
import os
import pty
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.progress import LogReporter
from exporter.standin import CannedResponse, FaultRates, StandinConfig, standin_in_thread
from tests.helpers import (
    ACCOUNT,
    ROOT,
    TOKEN,
    cli_env,
    export,
    make_settings,
    manifest_lines,
    pairs,
    run_cli,
    write_sessions,
)

SLOW = StandinConfig(
    token=TOKEN, account_id=ACCOUNT, slow_seconds=0.05, faults=FaultRates(download_slow=1.0)
)


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path: Path) -> None:
    """A process holding the lock is killed with -9; the next run takes the lock and works."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from exporter.lock import DirLock; l = DirLock(Path(sys.argv[1])).__enter__(); "
            "print('locked', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    assert (out / ".rtk-export.lock").read_text().strip() == str(holder.pid)
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(3))
        blocked = run_cli([str(sessions), "--out", str(out)], cli_env(srv.base_url))
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
        after = run_cli([str(sessions), "--out", str(out)], cli_env(srv.base_url))
    assert blocked.returncode == 75 and f"pid {holder.pid}" in blocked.stderr
    assert after.returncode == 0, after.stderr


def test_two_racing_runs_one_waits_out_with_75(tmp_path: Path) -> None:
    """Two runs started on one DIR: the second exits 75 at once, the first finishes."""
    with standin_in_thread(SLOW) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(60))
        out = tmp_path / "out"
        args = [str(sessions), "--out", str(out), "--concurrency", "2"]
        first = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args],
            env=cli_env(srv.base_url),
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not srv.state.records() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = run_cli(args, cli_env(srv.base_url))
        _, err = first.communicate(timeout=60)
    assert second.returncode == 75 and f"pid {first.pid}" in second.stderr
    assert first.returncode == 0, err
    assert len(manifest_lines(out / "manifest.jsonl")) == 60


def test_max_duration_cuts_a_slow_run_and_the_next_run_finishes(tmp_path: Path) -> None:
    """After --max-duration no pair starts, exit 3, unstarted pairs get no line; rerun ends it."""
    with standin_in_thread(SLOW) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(200))
        out = tmp_path / "out"
        cut = run_cli(
            [
                str(sessions),
                "--out",
                str(out),
                "--concurrency",
                "2",
                "--max-duration",
                "0.5s",
                "--summary-json",
                "-",
            ],
            cli_env(srv.base_url),
        )
        first = manifest_lines(out / "manifest.jsonl")
        rest = run_cli([str(sessions), "--out", str(out)], cli_env(srv.base_url))
    assert cut.returncode == 3, cut.stderr
    assert json.loads(cut.stdout)["exit_code"] == 3
    assert 0 < len(first) < 200
    assert {x["status"] for x in first} == {"exported"}
    assert rest.returncode == 0, rest.stderr
    final = manifest_lines(out / "manifest.jsonl")[len(first) :]
    assert sum(x["status"] == "exported" for x in final) == 200 - len(first)
    assert sum(x["status"] == "skipped" for x in final) == len(first)


def test_summary_json_agrees_with_the_manifest(tmp_path: Path) -> None:
    """--summary-json PATH: counts and bytes equal those of this run's manifest lines."""
    with standin_in_thread(
        StandinConfig(
            token=TOKEN,
            account_id=ACCOUNT,
            accept_any=False,
        )
    ) as srv:
        from exporter.standin import SessionSpec

        for app, sid in pairs(6):
            srv.state.add_session(
                SessionSpec(app, sid, started_at=datetime(2026, 11, 27, 10, tzinfo=UTC))
            )
        sessions = tmp_path / "s.txt"
        sessions.write_text("\n".join(f"{a} {s}" for a, s in pairs(6)) + "\napp0 ghost\nx\n")
        out = tmp_path / "out"
        summary = tmp_path / "summary.json"
        proc = run_cli(
            [str(sessions), "--out", str(out), "--summary-json", str(summary)],
            cli_env(srv.base_url),
        )
    doc = json.loads(summary.read_text())
    lines = [x for x in manifest_lines(out / "manifest.jsonl") if x["run_id"] == doc["run_id"]]
    counts: dict[str, int] = {}
    for x in lines:
        counts[x["status"]] = counts.get(x["status"], 0) + 1
    assert proc.returncode == 1 == doc["exit_code"]
    assert doc["counts"] == counts == {"exported": 6, "failed": 1, "invalid": 1}
    assert doc["bytes"] == sum(x["bytes"] or 0 for x in lines if x["status"] == "exported")
    assert doc["api_requests"] == 7
    assert doc["pairs_per_second"] > 0


def test_json_logs_are_one_object_a_line_and_carry_the_pair(tmp_path: Path) -> None:
    """--log-format json: every stderr line parses, has level and event, names failed pairs,
    and holds neither the token nor a presigned query, even under faults."""
    config = StandinConfig(
        token=TOKEN,
        account_id=ACCOUNT,
        seed=3,
        faults=FaultRates(api_5xx=0.1, download_expired=0.1, download_truncate=0.05),
    )
    with standin_in_thread(config) as srv:
        srv.script(srv.api_path("app0", "sess-00000", "chat"), *[CannedResponse(500)] * 3)
        sessions = tmp_path / "s.txt"
        sessions.write_text("\n".join(f"{a} {s}" for a, s in pairs(30)) + "\nbad\n")
        proc = run_cli(
            [
                str(sessions),
                "--out",
                str(tmp_path / "out"),
                "--log-format",
                "json",
                "-v",
                "--max-attempts",
                "3",
            ],
            cli_env(srv.base_url),
        )
    assert proc.returncode == 1
    docs = [json.loads(line) for line in proc.stderr.splitlines()]
    assert all({"level", "event", "message", "time"} <= set(d) for d in docs)
    failed = [d for d in docs if d["event"] == "failed"]
    assert ("app0", "sess-00000") in [(d["app_id"], d["session_id"]) for d in failed]
    assert all(d["kind"] == "chat" and d["level"] == "warning" for d in failed)
    assert any(d["event"] == "invalid" and d["line"] == 31 for d in docs)
    assert any(d["event"] == "summary" for d in docs)
    assert TOKEN not in proc.stderr and "X-Amz-Signature" not in proc.stderr


def _metrics(path: Path) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sample.labels.items())
            out[key] = sample.value
    return out


def test_metrics_file_parses_and_keeps_the_last_success(tmp_path: Path) -> None:
    """--metrics-file is valid Prometheus text; a failing run keeps the last success time."""
    metrics = tmp_path / "rtk.prom"
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as srv:
        good = write_sessions(tmp_path / "good.txt", pairs(4))
        ok = run_cli(
            [str(good), "--out", str(tmp_path / "out"), "--metrics-file", str(metrics)],
            cli_env(srv.base_url),
        )
        first = _metrics(metrics)
        bad = tmp_path / "bad.txt"
        bad.write_text("only-one-field\n")
        failing = run_cli(
            [str(bad), "--out", str(tmp_path / "out"), "--metrics-file", str(metrics)],
            cli_env(srv.base_url),
        )
        second = _metrics(metrics)
    assert ok.returncode == 0 and failing.returncode == 1
    assert first["rtk_export_pairs{status=exported}"] == 4
    assert first["rtk_export_api_requests"] == 4 and first["rtk_export_exit_code"] == 0
    assert first["rtk_export_bytes"] > 0 and first["rtk_export_rate_limited"] == 0
    assert first["rtk_export_last_success_timestamp_seconds"] == pytest.approx(
        first["rtk_export_last_run_timestamp_seconds"]
    )
    assert second["rtk_export_exit_code"] == 1
    assert second["rtk_export_pairs{status=invalid}"] == 1
    assert (
        second["rtk_export_last_success_timestamp_seconds"]
        == first["rtk_export_last_success_timestamp_seconds"]
    )
    assert (
        second["rtk_export_last_run_timestamp_seconds"]
        >= first["rtk_export_last_run_timestamp_seconds"]
    )
    assert "rtk_export_duration_seconds" in second
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rtk.prom")] == []


def test_verify_finds_flipped_deleted_and_extra_files(tmp_path: Path) -> None:
    """verify: exit 0 on an intact archive; then reports each damage and exits 1, offline."""
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(5))
        out = tmp_path / "out"
        assert run_cli([str(sessions), "--out", str(out)], cli_env(srv.base_url)).returncode == 0
    offline = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    offline["PYTHONPATH"] = str(ROOT)
    verify = [sys.executable, "-m", "exporter", "verify", str(out)]
    intact = subprocess.run(verify, env=offline, capture_output=True, text=True, check=False)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    flipped = out / "app0/sess-00000.csv"
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0x20
    flipped.write_bytes(bytes(data))
    (out / "app1/sess-00001.csv").unlink()
    (out / "app1/stray.csv").write_text("who put this here\n")
    damaged = subprocess.run(verify, env=offline, capture_output=True, text=True, check=False)
    assert damaged.returncode == 1
    assert sorted(damaged.stdout.splitlines()) == [
        "corrupt: app0/sess-00000.csv",
        "missing: app1/sess-00001.csv",
        "untracked: app1/stray.csv",
    ]


def test_not_a_terminal_means_plain_periodic_status_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a terminal the reporter logs a one-line status now and then, no bars."""
    import anyio

    async def main() -> None:
        from exporter.standin import run_standin

        async with run_standin(SLOW) as srv:
            sessions = write_sessions(tmp_path / "s.txt", pairs(20))
            await export(
                make_settings(srv, tmp_path / "out", sessions, concurrency=1),
                reporter=LogReporter(every=0.1),
            )

    with caplog.at_level(logging.INFO, logger="exporter.progress"):
        anyio.run(main)
    lines = [r.getMessage() for r in caplog.records if r.name == "exporter.progress"]
    assert lines and all(line.startswith("progress: ") for line in lines)
    assert "/20 done" in lines[-1]


def on_a_terminal(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `cmd` with stderr on a pseudo-terminal; its exit code and all it drew there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(30)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_a_live_progress_display(tmp_path: Path) -> None:
    """On a pseudo-terminal the run draws a progress bar; piped, it draws none."""
    with standin_in_thread(SLOW) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(30))
        code, screen = on_a_terminal(
            [
                sys.executable,
                "-m",
                "exporter",
                str(sessions),
                "--out",
                str(tmp_path / "tty"),
                "--concurrency",
                "2",
            ],
            {**cli_env(srv.base_url), "TERM": "xterm", "COLUMNS": "120"},
        )
        piped = run_cli([str(sessions), "--out", str(tmp_path / "pipe")], cli_env(srv.base_url))
    assert code == 0
    assert "export" in screen and "30/30" in screen and "\x1b[" in screen
    assert "\x1b[" not in piped.stderr and "━" not in piped.stderr


def test_sigterm_before_any_pair_still_exits_143(tmp_path: Path) -> None:
    """A SIGTERM while the first requests are in flight ends the run with 143, cleanly."""
    with standin_in_thread(
        StandinConfig(
            token=TOKEN, account_id=ACCOUNT, slow_seconds=5, faults=FaultRates(api_slow=1.0)
        )
    ) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(4))
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", str(sessions), "--out", str(tmp_path / "out")],
            env=cli_env(srv.base_url),
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not srv.state.records() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err


def test_sigterm_at_start_up_exits_143_not_killed(tmp_path: Path) -> None:
    """A SIGTERM the moment DIR is locked (before the run listens) still exits 143 cleanly."""
    out = tmp_path / "out"
    with standin_in_thread(SLOW) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(50))
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", str(sessions), "--out", str(out)],
            env=cli_env(srv.base_url),
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not (out / ".rtk-export.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert "Traceback" not in err


def test_a_run_that_cannot_start_still_reports_exit_2(tmp_path: Path) -> None:
    """No token: exit 2, and the metrics file and JSON summary say 2 for the monitor."""
    metrics, summary = tmp_path / "rtk.prom", tmp_path / "summary.json"
    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    env = cli_env("http://127.0.0.1:9")
    env.pop("CLOUDFLARE_API_TOKEN")
    proc = run_cli(
        [
            str(sessions),
            "--out",
            str(tmp_path / "out"),
            "--metrics-file",
            str(metrics),
            "--summary-json",
            str(summary),
        ],
        env,
    )
    assert proc.returncode == 2
    assert _metrics(metrics)["rtk_export_exit_code"] == 2
    assert json.loads(summary.read_text())["exit_code"] == 2


def test_stdin_pairs_flow_at_once_and_an_open_pipe_does_not_hang_a_signal(tmp_path: Path) -> None:
    """From `-`, a pair is exported as soon as its line arrives, though the pipe stays open;
    a SIGTERM then still ends the run with 143 promptly."""
    out = tmp_path / "out"
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "-", "--out", str(out)],
            env=cli_env(srv.base_url),
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write("a1 s1\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 20
        manifest = out / "manifest.jsonl"
        while time.monotonic() < deadline and not (manifest.exists() and manifest.read_text()):
            time.sleep(0.01)
        assert manifest_lines(manifest)[0]["status"] == "exported"
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
    assert proc.returncode == 143, err


def test_verify_never_reads_a_path_outside_dir(tmp_path: Path) -> None:
    """A hand-edited manifest line naming ../secret is reported, and the file is not read."""
    from exporter.verify import verify

    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n")
    import hashlib

    (out / "manifest.jsonl").write_text(
        json.dumps(
            {
                "app_id": "a",
                "session_id": "s",
                "kind": "chat",
                "status": "exported",
                "path": "../secret.csv",
                "bytes": 2,
                "sha256": hashlib.sha256(b"x\n").hexdigest(),
            }
        )
        + "\n"
    )
    found = verify(out, out / "manifest.jsonl")
    assert found.corrupt == ["../secret.csv"] and found.intact == 0 and not found.ok


def test_verify_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """verify draws a live display when stderr is a terminal, and none when it is piped."""
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(40))
        out = tmp_path / "out"
        assert run_cli([str(sessions), "--out", str(out)], cli_env(srv.base_url)).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "100"}
    verify = [sys.executable, "-m", "exporter", "verify", str(out)]
    code, screen = on_a_terminal(verify, env)
    piped = subprocess.run(verify, env=env, capture_output=True, text=True, check=False)
    assert code == 0 and piped.returncode == 0
    assert "\x1b[" in screen and "verify" in screen
    assert "\x1b[" not in piped.stderr and "40 files checked" in piped.stderr
