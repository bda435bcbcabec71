"""Discovery, --include and --dry-run through the command, as cron runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.archive import STATE_NAME
from exporter.standin import SessionSpec, StandinConfig, StandinServer, standin_in_thread
from exporter.times import parse_when
from tests.helpers import ACCOUNT, TOKEN, cli_env, manifest_lines, run_cli, write_sessions

NOW = datetime.now(UTC)
CATALOGUE = (
    SessionSpec("app1", "s1", NOW - timedelta(hours=30)),
    SessionSpec("app1", "s2", NOW - timedelta(hours=3), has_summary=False),
    SessionSpec("app1", "s3", NOW - timedelta(minutes=30), status="LIVE"),
    SessionSpec("app1", "s4", NOW - timedelta(days=9)),
    SessionSpec("app2", "t1", NOW - timedelta(hours=2)),
)
URL_KINDS = ("/chat", "/transcript", "/summary")


@pytest.fixture
def server() -> Iterator[StandinServer]:
    with standin_in_thread(
        StandinConfig(token=TOKEN, account_id=ACCOUNT, sessions=CATALOGUE, accept_any=False)
    ) as srv:
        yield srv


def url_requests(server: StandinServer) -> list[str]:
    return [
        r.path
        for r in server.state.records()
        if r.route == "download" or r.path.endswith(URL_KINDS)
    ]


def test_discovery_from_the_command_line(server: StandinServer, tmp_path: Path) -> None:
    """`--app A --app B --include chat,summary` exports the ENDED sessions of the last 7 days,
    remembers the LIVE one, and the next run lists from last-run minus 24 hours."""
    out = tmp_path / "out"
    args = ["--app", "app1", "--app", "app2", "--include", "chat,summary", "--out", str(out)]
    proc = run_cli([*args, "--summary-json", "-"], cli_env(server.base_url))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"exported": 5, "unavailable": 1}
    assert doc["api_requests"] == 2 + 6
    assert sorted(p.name for p in (out / "app1").iterdir()) == [
        "s1.csv",
        "s1.summary.txt",
        "s2.csv",
    ]
    state = json.loads((out / STATE_NAME).read_text())
    assert state["apps"]["app1"]["live"] == ["s3"]
    last_run = parse_when(state["apps"]["app1"]["last_run"], NOW)
    assert last_run is not None
    proc = run_cli([*args, "--since", "last-run"], cli_env(server.base_url))
    assert proc.returncode == 0, proc.stderr
    assert "skipped 3, unavailable 1" in proc.stderr  # s1 (30 h old) is outside the window
    listing = [r for r in server.state.records() if r.path == server.api_path("app1")][-1]
    assert parse_when(listing.query["start_time"], NOW) == last_run - timedelta(hours=24)
    assert "status" not in listing.query  # LIVE and ENDED both listed, sorted here


def test_dry_run_of_a_sessions_file_requests_no_url(server: StandinServer, tmp_path: Path) -> None:
    """--dry-run prints the plan (to export, to skip by kind, invalid lines, requests, time)
    on standard output, writes nothing and makes no request at all for SESSIONS."""
    out = tmp_path / "out"
    sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1")])
    assert run_cli([str(sessions), "--out", str(out)], cli_env(server.base_url)).returncode == 0
    sessions.write_text("app1 s1\napp1 s2\nnot a pair\n", encoding="utf-8")
    before = len(server.state.records())
    manifest = (out / "manifest.jsonl").read_text()
    proc = run_cli(
        [
            str(sessions),
            "--out",
            str(out),
            "--dry-run",
            "--include",
            "chat,transcript",
            "--rate",
            "4/1s",
        ],
        cli_env(server.base_url),
    )
    assert proc.returncode == 1, proc.stderr  # the invalid line
    assert len(server.state.records()) == before
    assert (out / "manifest.jsonl").read_text() == manifest
    plan = proc.stdout
    assert "plan: 3 to export (chat 1, transcript 2), 1 to skip (chat 1)" in plan
    assert "1 invalid line(s)" in plan and "at least 3 to export" in plan
    assert "--rate 4/1s" in plan


def test_dry_run_of_discovery_lists_but_requests_no_url(
    server: StandinServer, tmp_path: Path
) -> None:
    """With --app, --dry-run lists the sessions (and nothing else) and plans per app."""
    out = tmp_path / "out"
    proc = run_cli(
        ["--app", "app1", "--out", str(out), "--dry-run", "--include", "chat,transcript,summary"],
        cli_env(server.base_url),
    )
    assert proc.returncode == 0, proc.stderr
    assert url_requests(server) == []
    assert [r.path for r in server.state.records()] == [server.api_path("app1")]
    assert "plan: 6 to export (chat 2, transcript 2, summary 2), 0 to skip" in proc.stdout
    assert "app app1:" in proc.stdout and "1 LIVE (not exported, remembered)" in proc.stdout
    assert not (out / STATE_NAME).exists() and not (out / "manifest.jsonl").exists()


def test_demo_shows_discovery(tmp_path: Path) -> None:
    """`rtk-export demo --discover` runs two discovery runs against the stand-in, exit 0."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "demo", "--discover", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=cli_env("http://unused"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = manifest_lines(out / "manifest.jsonl")
    assert {x["kind"] for x in lines} == {"chat", "transcript", "summary"}
    assert "LIVE remembered" in proc.stderr and "skipped" in proc.stderr
    verify = subprocess.run(
        [sys.executable, "-m", "exporter", "verify", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_dry_run_with_summary_on_stdout_logs_the_plan(
    server: StandinServer, tmp_path: Path
) -> None:
    """With --summary-json -, stdout holds the JSON object alone; the plan goes to stderr as
    log lines in the chosen format."""
    proc = run_cli(
        [
            "--app",
            "app1",
            "--out",
            str(tmp_path / "out"),
            "--dry-run",
            "--summary-json",
            "-",
            "--log-format",
            "json",
        ],
        cli_env(server.base_url),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == 0
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    plan = [e["message"] for e in events if e["event"] == "plan"]
    assert plan[0].startswith("plan: 2 to export (chat 2)")
