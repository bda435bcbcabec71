"""--notify-url: a start ping before the first API request, an end ping naming the exit code,
bounded waits, and no secret sent or logged."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.notify import notify_url_problem, url_from
from exporter.standin import StandinConfig, standin_in_thread
from tests.helpers import ACCOUNT, TOKEN, cli_env, pairs, run_cli, write_sessions
from tests.receiver import receiver

SECRET = "0f3c9a1e-5b7d-4e2f-9a6c-8d1b2e3f4a5b"  # a Healthchecks URL's uuid is its credential


@pytest.fixture(scope="module")
def live() -> object:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def _paths(rec_paths: list[str]) -> list[str]:
    return [p.removeprefix(f"/ping/{SECRET}") for p in rec_paths]


def test_a_run_pings_start_before_its_first_api_request_then_its_exit_code(
    live, tmp_path: Path
) -> None:
    """/start arrives before the stand-in sees any API request of the run; /0 ends it, with
    the summary as its plain-text body and no secret in it."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(4))
    with receiver() as rec:
        before = len(live.state.records("api"))
        url = f"{rec.url}/ping/{SECRET}"
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "o"), "--notify-url", url],
            cli_env(live.base_url),
        )
        assert proc.returncode == 0, proc.stderr
        pings = rec.wait_for(2)
    assert _paths([p.path for p in pings]) == ["/start", "/0"]
    first_api = live.state.records("api")[before]
    assert pings[0].arrived < first_api.arrived
    end = pings[1]
    assert end.headers["Content-Type"].startswith("text/plain")
    assert "exported 4" in end.body and len(end.body.encode()) <= 10_000
    for p in pings:
        assert TOKEN not in p.body and TOKEN not in str(p.headers)
        assert "authorization" not in {k.lower() for k in p.headers}
    assert SECRET not in proc.stderr and "/ping/" not in proc.stderr


@pytest.mark.parametrize(
    ("case", "code"),
    [("invalid line", 1), ("refused token", 2), ("no account", 2)],
)
def test_the_end_ping_names_the_exit_code(live, tmp_path: Path, case: str, code: int) -> None:
    """Exit 1 and 2 are pinged as /1 and /2, also when the run stopped before any request."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    env = cli_env(live.base_url)
    if case == "invalid line":
        sessions.write_text(sessions.read_text() + "only-one-field\n")
    elif case == "refused token":
        env["CLOUDFLARE_API_TOKEN"] = "not-the-token"
    else:
        del env["CLOUDFLARE_ACCOUNT_ID"]
    with receiver() as rec:
        env["RTK_EXPORT_NOTIFY_URL"] = f"{rec.url}/ping/{SECRET}"  # the env, not the option
        proc = run_cli([str(sessions), "--out", str(tmp_path / "o")], env)
        assert proc.returncode == code, proc.stderr
        paths = _paths(rec.paths())
    assert paths[-1] == f"/{code}"
    assert SECRET not in proc.stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_is_pinged_with_its_exit_code(
    live, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """A run stopped by SIGINT or SIGTERM still tells the monitor: /130 or /143."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(6))
    with receiver() as rec:
        args = [str(sessions), "--out", str(tmp_path / "o"), "--rate", "1/60s"]
        args += ["--notify-url", f"{rec.url}/ping/{SECRET}"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args],
            env=cli_env(live.base_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert rec.wait_for(1)[0].path.endswith("/start")
            time.sleep(0.5)  # into the budget wait
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == code, err
        assert _paths(rec.paths()) == ["/start", f"/{code}"]


def test_a_second_run_on_a_locked_dir_pings_75(live, tmp_path: Path) -> None:
    """Exit 75 is pinged too: a monitor must hear of a run that could not take its turn."""
    from exporter.lock import DirLock

    out = tmp_path / "o"
    out.mkdir()
    sessions = write_sessions(tmp_path / "s.txt", pairs(1))
    with receiver() as rec, DirLock(out):
        url = f"{rec.url}/ping/{SECRET}"
        proc = run_cli(
            [str(sessions), "--out", str(out), "--notify-url", url], cli_env(live.base_url)
        )
        assert proc.returncode == 75
        assert _paths(rec.paths()) == ["/75"]


def test_a_refusing_receiver_is_a_warning_tried_three_times(live, tmp_path: Path) -> None:
    """A receiver answering 500 costs a warning naming its host alone; the exit code stays 0."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    with receiver() as rec:
        rec.status = 500
        url = f"{rec.url}/ping/{SECRET}"
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "o"), "--notify-url", url],
            cli_env(live.base_url),
        )
        paths = _paths(rec.paths())
    assert proc.returncode == 0, proc.stderr
    assert paths.count("/0") == 3 and paths.count("/start") == 3
    assert "ping 0 to 127.0.0.1 failed (HTTP 500)" in proc.stderr
    assert SECRET not in proc.stderr


def test_a_receiver_that_never_answers_delays_the_end_by_at_most_the_bound(
    live, tmp_path: Path
) -> None:
    """A receiver that accepts and never answers holds neither the start nor the end longer
    than a ping's 10 s bound; the run still exits 0."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel; nobody ever reads or answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "o")],
            cli_env(live.base_url, RTK_EXPORT_NOTIFY_URL=f"http://127.0.0.1:{port}/{SECRET}"),
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "ping 0 to 127.0.0.1 failed" in proc.stderr
    assert elapsed < 10 + 8  # the bound, plus the start and the run itself on a slow machine


def test_a_refused_scheme_is_a_usage_error_before_any_request(live, tmp_path: Path) -> None:
    """ftp://, or a URL with a user in it, exits 2 with one clear line and sends nothing."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(1))
    before = len(live.state.records())
    for url in (f"ftp://127.0.0.1/{SECRET}", f"http://user:{SECRET}@127.0.0.1/x"):
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "o"), "--notify-url", url],
            cli_env(live.base_url),
        )
        assert proc.returncode == 2
        assert "--notify-url" in proc.stderr and SECRET not in proc.stderr
    assert len(live.state.records()) == before


def test_the_notify_url_rules() -> None:
    """https anywhere; http only to loopback; the option wins over the environment."""
    assert notify_url_problem("https://hc-ping.example/abc") is None
    assert notify_url_problem("http://127.0.0.1:8080/abc") is None
    assert notify_url_problem("http://[::1]/abc") is None
    assert "refused" in (notify_url_problem("http://hc-ping.example/abc") or "")
    assert "malformed" in (notify_url_problem("https:///nohost") or "")
    env = {"RTK_EXPORT_NOTIFY_URL": "https://b.example/2"}
    assert url_from("https://a.example/1", env) == ("https://a.example/1", None)
    assert url_from(None, env) == ("https://b.example/2", None)
    assert url_from(None, {}) == (None, None)
    assert url_from("gopher://x", {})[0] is None
