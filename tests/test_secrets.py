"""Secrets under failure: with every fault at once, hostile answers that echo the token, a
refused token and a bug, the token and presigned signatures reach no output, log line, error
message, manifest line or traceback, and no download request carries an Authorization header."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.standin import (
    CannedResponse,
    FaultRates,
    StandinConfig,
    StandinServer,
    standin_in_thread,
)
from tests.chaos import CHAOS_FAULTS
from tests.helpers import ACCOUNT, TOKEN, cli_env, pairs, run_cli, write_sessions

ECHO = f"Bad request: header Authorization: Bearer {TOKEN} is not allowed here"
SIGNATURE = re.compile(r"X-Amz-Signature=([0-9a-f]{64})")


@pytest.fixture(scope="module")
def chaotic() -> Iterator[StandinServer]:
    # Every kind of fault, at half the chaos rates: the command line's real back-off (0.5 s
    # doubling) would make long failure streaks slow, and this is about what is written.
    rates = {name: rate / 2 for name, rate in vars(CHAOS_FAULTS).items()}
    faults = FaultRates(**{**rates, "download_stall": 0.05})
    config = StandinConfig(
        token=TOKEN,
        account_id=ACCOUNT,
        faults=faults,
        seed=11,
        rate_limit=(1200, 1.0),
        retry_after=0,
        slow_seconds=0.02,
        stall_seconds=1.0,
    )
    with standin_in_thread(config) as server:
        yield server


def everything_written(out: Path, *procs: subprocess.CompletedProcess[str]) -> str:
    texts = [p.stdout + p.stderr for p in procs]
    texts += [
        f.read_text("utf-8", "replace")
        for f in out.rglob("*")
        if f.is_file() and not f.name.endswith(".csv")
    ]
    return "\n".join(texts)


def signatures(server: StandinServer) -> set[str]:
    """Every signature the stand-in issued, read back from the downloads it received."""
    return {
        r.query["X-Amz-Signature"]
        for r in server.state.records("download")
        if "X-Amz-Signature" in r.query
    }


def test_no_secret_leaks_under_every_fault(chaotic: StandinServer, tmp_path: Path) -> None:
    """Chaos, stalls, answers echoing the token (400, success:false), a plain-http URL with a
    signature: all logged at -v in text and JSON; no token, no signature anywhere."""
    server = chaotic
    todo = [*pairs(60), ("hostile", "s-echo-400"), ("hostile", "s-echo-200"), ("hostile", "s-http")]
    sessions = write_sessions(tmp_path / "s.txt", todo)
    procs = []
    for fmt in ("text", "json"):
        for sid, canned in (
            (
                "s-echo-400",
                CannedResponse(
                    400, body={"success": False, "errors": [{"code": 400, "message": ECHO}]}
                ),
            ),
            (
                "s-echo-200",
                CannedResponse(body={"success": False, "error": {"code": 1, "message": ECHO}}),
            ),
            (
                "s-http",
                CannedResponse(
                    body={
                        "success": True,
                        "data": {
                            "chat_download_url": "http://198.51.100.7/c.csv?X-Amz-Signature="
                            + "ab" * 32,
                            "chat_download_url_expiry": "2099-01-01T00:00:00Z",
                        },
                    }
                ),
            ),
        ):
            server.script(server.api_path("hostile", sid, "chat"), canned)
        out = tmp_path / f"out-{fmt}"
        procs.append(
            run_cli(
                [
                    str(sessions),
                    "--out",
                    str(out),
                    "-v",
                    "--log-format",
                    fmt,
                    "--rate",
                    "1000/1s",
                    "--max-attempts",
                    "25",
                    "--read-timeout",
                    "0.2",
                    "--summary-json",
                    str(out / "sum.json"),
                    "--metrics-file",
                    str(out / "m.prom"),
                ],
                cli_env(server.base_url),
            )
        )
        assert procs[-1].returncode == 1, procs[-1].stderr  # the three hostile pairs failed
    written = everything_written(tmp_path, *procs)
    assert ECHO.replace(TOKEN, "[token]") in written  # the message itself is kept, redacted
    assert TOKEN not in written
    issued = signatures(server) | {"ab" * 32}
    assert len(issued) > 60
    assert not [s for s in issued if s in written]
    downloads = server.state.records("download")
    assert downloads and not [r for r in downloads if "Authorization" in r.headers]
    assert server.state.counters.faults["download_stall"] > 0


def test_a_refused_token_echoed_back_is_not_printed(tmp_path: Path) -> None:
    """A 401 whose message quotes the token stops the run (exit 2) without printing it."""
    config = StandinConfig(token=TOKEN, account_id=ACCOUNT)
    with standin_in_thread(config) as server:
        server.script(
            "/sessions/s1/chat",
            CannedResponse(
                401,
                body={
                    "success": False,
                    "errors": [
                        {"code": 10000, "message": f"Authentication error: {TOKEN} is not valid"}
                    ],
                },
            ),
        )
        sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1")])
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "out"), "-v"], cli_env(server.base_url)
        )
    assert proc.returncode == 2
    assert "token was refused" in proc.stderr and "[token] is not valid" in proc.stderr
    assert TOKEN not in everything_written(tmp_path, proc)


def test_a_bug_prints_its_traceback_without_headers_or_signatures(tmp_path: Path) -> None:
    """An unexpected exception that quotes its request (headers, presigned URL): exit 2, a
    line that names the bug itself, and neither the token nor the URL's query in it."""
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        sessions = write_sessions(tmp_path / "s.txt", pairs(4))
        env = cli_env(server.base_url, RTK_KILL_AT="bug-in-client:2")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.kill_harness",
                str(sessions),
                "--out",
                str(tmp_path / "out"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        issued = signatures(server)
    assert proc.returncode == 2, proc.stderr
    assert "internal error" in proc.stderr and "RuntimeError: RequestInfo(" in proc.stderr
    assert "?[query removed]" in proc.stderr
    assert TOKEN not in proc.stderr and "Bearer [token]" in proc.stderr
    assert not SIGNATURE.search(proc.stderr)
    assert not [s for s in issued if s in proc.stderr]
