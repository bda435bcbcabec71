"""The command line as a user (or cron) meets it: arguments, exit codes, what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.lock import DirLock
from exporter.options import build_parser
from exporter.standin import StandinConfig, standin_in_thread
from tests.helpers import (
    ACCOUNT,
    ROOT,
    TOKEN,
    cli_env,
    manifest_lines,
    pairs,
    run_cli,
    write_sessions,
)


@pytest.fixture(scope="module")
def live() -> object:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def test_readme_shows_the_current_help() -> None:
    """The README's Options section quotes `rtk-export --help` exactly as it is now."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert build_parser().format_help() in readme


def test_a_full_export_through_the_command(live, tmp_path: Path) -> None:
    """`python -m exporter SESSIONS --out DIR` exports, exits 0 and prints nothing on stdout."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(8))
    out = tmp_path / "out"
    proc = run_cli([str(sessions), "--out", str(out)], cli_env(live.base_url))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "exported 8" in proc.stderr
    assert len(manifest_lines(out / "manifest.jsonl")) == 8


def test_sessions_from_stdin(live, tmp_path: Path) -> None:
    """`-` reads the pairs from standard input."""
    out = tmp_path / "out"
    proc = run_cli(["-", "--out", str(out)], cli_env(live.base_url), input="a1 s1\na1 s2\n")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "a1").iterdir()) == ["s1.csv", "s2.csv"]


@pytest.mark.parametrize(
    ("args", "env_drop", "words"),
    [
        (["S", "--out", "O"], "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_TOKEN is not set"),
        (["S", "--out", "O"], "CLOUDFLARE_ACCOUNT_ID", "no account id"),
        (["missing.txt", "--out", "O"], None, "SESSIONS file not found: missing.txt"),
        (["S", "--out", "O", "--rate", "fast"], None, "'fast'"),
        (["S", "--out", "O", "--rate", "0/10s"], None, "'0/10s'"),
        (["S", "--out", "O", "--include", "chat,video"], None, "'chat,video'"),
        (["S", "--out", "O", "--concurrency", "0"], None, "--concurrency"),
        (["S", "--out", "O", "--max-duration", "soon"], None, "'soon'"),
        (["S", "--out", "FILE/sub"], None, "cannot create"),
        (
            ["S", "--out", "O", "--base-url", "http://api.example.com/client/v4"],
            None,
            "must be https",
        ),
        (["S", "--out", "O", "--app", "a1"], None, "SESSIONS and --app do not combine"),
        (["--out", "O"], None, "SESSIONS is required"),
        (["S", "--out", "O", "--since", "7d"], None, "use them with --app"),
        (["--app", "a1", "--out", "O", "--since", "yesterday"], None, "'yesterday'"),
        (["--app", "a1", "--out", "O", "--since", "2026-11-20T08:00"], None, "no time zone"),
        (["--app", "a1", "--out", "O", "--until", "last-run"], None, "--until last-run"),
        (["--app", "a1", "--out", "O", "--since", "1d", "--until", "2d"], None, "window is empty"),
        (["--app", "../a1", "--out", "O"], None, "--app: app id"),
        (["--app", "a1", "--out", "O", "--since", "2999-01-01"], None, "window is empty"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line_before_any_request(
    live, tmp_path: Path, args: list[str], env_drop: str | None, words: str
) -> None:
    """Each bad argument or missing setting gives exit 2 and names the value; nothing is sent."""
    write_sessions(tmp_path / "S", pairs(2))
    (tmp_path / "FILE").write_text("not a folder")
    env = cli_env(live.base_url)
    if env_drop:
        env.pop(env_drop)
    before = len(live.state.records())
    proc = run_cli(args, env, cwd=tmp_path)
    assert proc.returncode == 2
    assert words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert len(live.state.records()) == before


def test_missing_out_is_a_usage_error() -> None:
    """--out is required."""
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "x.txt"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "--out" in proc.stderr


def test_a_refused_token_stops_the_run_early(tmp_path: Path) -> None:
    """A 401 stops the whole run with exit 2 after a handful of requests, not one per pair."""
    with standin_in_thread(StandinConfig(token="another-token", account_id=ACCOUNT)) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(200))
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "out"), "--concurrency", "4"],
            cli_env(srv.base_url),
        )
        sent = len(srv.state.records("api"))
    assert proc.returncode == 2
    assert "token was refused" in proc.stderr
    assert sent <= 8
    assert TOKEN not in proc.stderr


def test_a_token_without_permission_stops_the_run(tmp_path: Path) -> None:
    """A 403 about authentication stops the run with exit 2 too."""
    with standin_in_thread(
        StandinConfig(token=TOKEN, account_id=ACCOUNT, token_lacks_permission=True)
    ) as srv:
        sessions = write_sessions(tmp_path / "s.txt", pairs(50))
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "out"), "--concurrency", "2"],
            cli_env(srv.base_url),
        )
        sent = len(srv.state.records("api"))
    assert proc.returncode == 2 and sent <= 4


def test_failed_and_invalid_give_exit_1_and_summary_json(tmp_path: Path) -> None:
    """A 404 pair and an invalid line: exit 1, and --summary-json - puts one object on stdout."""
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT, accept_any=False)) as srv:
        sessions = tmp_path / "s.txt"
        sessions.write_text("a1 s1\nbad line here\n", encoding="utf-8")
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "out"), "--summary-json", "-"],
            cli_env(srv.base_url),
        )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"failed": 1, "invalid": 1}
    assert doc["exit_code"] == 1 and doc["api_requests"] == 1
    assert set(doc) >= {
        "counts",
        "bytes",
        "seconds",
        "api_requests",
        "rate_limited",
        "url_refreshes",
        "retries",
        "pairs_per_second",
        "run_id",
        "exit_code",
    }


def test_the_token_appears_in_no_output(live, tmp_path: Path) -> None:
    """With verbose and JSON logs, neither the token nor a presigned query is printed."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(5))
    out = tmp_path / "out"
    for fmt in ("text", "json"):
        proc = run_cli(
            [
                str(sessions),
                "--out",
                str(out / fmt),
                "-v",
                "--log-format",
                fmt,
                "--summary-json",
                "-",
            ],
            cli_env(live.base_url),
        )
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout + proc.stderr + (out / fmt / "manifest.jsonl").read_text()
        assert TOKEN not in text
        assert "X-Amz-Signature" not in text


def test_a_second_run_on_a_locked_dir_exits_75_naming_the_holder(live, tmp_path: Path) -> None:
    """While DIR is locked, another run exits 75 at once and names the holder's pid."""
    import os

    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    out = tmp_path / "out"
    out.mkdir()
    with DirLock(out):
        proc = run_cli([str(sessions), "--out", str(out)], cli_env(live.base_url))
    assert proc.returncode == 75
    assert f"pid {os.getpid()}" in proc.stderr
    proc = run_cli([str(sessions), "--out", str(out)], cli_env(live.base_url))
    assert proc.returncode == 0, proc.stderr


def test_the_packaged_example_is_the_top_level_one() -> None:
    """The demo's fallback copy inside the package is sessions.example.txt, byte for byte."""
    assert (ROOT / "exporter" / "sessions.example.txt").read_bytes() == (
        ROOT / "sessions.example.txt"
    ).read_bytes()


def test_demo_outside_the_repository_exports_the_packaged_example(tmp_path: Path) -> None:
    """Run from another folder, `demo` exports the same six pairs from the package's copy,
    with their attachments and recordings."""
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "demo", "--out", "d"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=cli_env("http://unused"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = manifest_lines(tmp_path / "d" / "manifest.jsonl")
    assert len([x for x in lines if x["kind"] == "chat"]) == 6
    exported = {x["kind"] for x in lines if x["status"] == "exported"}
    assert exported == {"chat", "attachment", "recording"}


def test_demo_runs_a_real_export(tmp_path: Path) -> None:
    """`rtk-export demo` exports the example file from the built-in stand-in, exit 0."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--sessions",
            str(ROOT / "sessions.example.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=cli_env("http://unused"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = manifest_lines(tmp_path / "demo" / "manifest.jsonl")
    chats = [x for x in lines if x["kind"] == "chat"]
    assert len(chats) == 6 and {x["status"] for x in chats} == {"exported"}
    # Attachments without a link and recordings still being recorded are unavailable.
    assert {x["status"] for x in lines} == {"exported", "unavailable"}
    verify = subprocess.run(
        [sys.executable, "-m", "exporter", "verify", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
