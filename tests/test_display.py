"""The live display as a person sees it: the command under a real pseudo-terminal, its screen
read back with a terminal emulator (pyte) while a 429 pause and a budget wait count down."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from exporter.standin import CannedResponse, StandinConfig, standin_in_thread
from tests.helpers import ACCOUNT, TOKEN, cli_env, pairs, write_sessions

COLS, ROWS = 140, 24


@pytest.fixture(scope="module")
def live() -> object:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def _seconds(text: str) -> int:
    m = re.fullmatch(r"(?:(\d+)m)?(\d+)s", text)
    assert m, text
    return int(m.group(1) or 0) * 60 + int(m.group(2))


def watch(args: list[str], env: dict[str, str], pattern: str, limit: float = 40.0):
    """Runs the command on a pty; returns its exit code, every (time, match) of `pattern` on
    the screen as it was redrawn, and the last screen."""
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = {**env, "TERM": "xterm-256color", "COLUMNS": str(COLS), "LINES": str(ROWS)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen: list[tuple[float, re.Match[str]]] = []
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                stream.feed(data)
                now = time.monotonic()
                for line in screen.display:
                    if m := re.search(pattern, line):
                        seen.append((now, m))
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        proc.kill()
        os.close(master)
    return code, seen, "\n".join(screen.display)


def test_a_429_pause_counts_down_on_screen(live, tmp_path: Path) -> None:
    """`429 pause: Ns left` appears, counts down, and matches the real time left of the
    stand-in's Retry-After; the bar ends at the real total."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(6))
    app, sid = pairs(6)[0]
    live.script(live.api_path(app, sid, "chat"), CannedResponse(429, headers={"Retry-After": "4"}))
    code, seen, last = watch(
        [str(sessions), "--out", str(tmp_path / "o"), "--progress", "auto"],
        cli_env(live.base_url),
        r"429 pause: (\S+) left",
    )
    assert code == 0, last
    limited = [r for r in live.state.records("api") if r.status == 429]
    assert limited, "the scripted 429 was not served"
    t429 = limited[-1].arrived
    values = [(t, _seconds(m.group(1))) for t, m in seen]
    assert len({v for _, v in values}) >= 2, values  # it moves
    assert values[0][1] >= values[-1][1]  # ... downwards
    for t, shown in values:  # and it is the real time left, give or take a redraw
        assert abs(shown - (4 - (t - t429))) <= 1.5, (shown, t - t429)
    assert "6/6" in last


def test_a_budget_wait_counts_down_on_screen(live, tmp_path: Path) -> None:
    """With the budget spent, `API budget: next request in Ns` shows and counts down; the
    total is the SESSIONS file's from the start."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(3))
    code, seen, last = watch(
        [str(sessions), "--out", str(tmp_path / "o"), "--progress", "always", "--rate", "2/5s"],
        cli_env(live.base_url),
        r"API budget: next request in (\S+)|(\d+)/(\d+)",
    )
    assert code == 0, last
    waits = [(t, _seconds(m.group(1))) for t, m in seen if m.group(1)]
    assert len({v for _, v in waits}) >= 2, waits
    assert all(0 <= v <= 5 for _, v in waits)
    assert waits[0][1] > waits[-1][1]
    totals = {int(m.group(3)) for _, m in seen if m.group(3)}
    assert totals == {3}, totals  # never a total of the lines read so far
    assert "waiting: API budget" not in last  # the wait line goes when the wait ends


def test_the_last_frame_shows_the_run_done_with_no_eta(live, tmp_path: Path) -> None:
    """When the run ends, the bar left on screen holds the real total and the run's time,
    not an ETA that is no longer true."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(3))
    code, _, last = watch(
        [str(sessions), "--out", str(tmp_path / "o"), "--progress", "auto"],
        cli_env(live.base_url),
        r"export",
    )
    assert code == 0, last
    bar = next(line for line in last.splitlines() if line.startswith("export"))
    assert "3/3" in bar and " in " in bar and "ETA" not in bar, bar


def test_log_lines_go_above_the_display_never_into_its_line(live, tmp_path: Path) -> None:
    """A log line printed while the bar is drawn (a 429's retry) stands on its own line above
    the bar, on every redraw and in the last screen."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(4))
    app, sid = pairs(4)[1]
    live.script(live.api_path(app, sid, "chat"), CannedResponse(429, headers={"Retry-After": "1"}))
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (?:INFO|WARNING)"
    code, seen, last = watch(
        [str(sessions), "--out", str(tmp_path / "o"), "--progress", "always"],
        cli_env(live.base_url),
        rf"{stamp}|export ",
    )
    assert code == 0, last
    lines = last.splitlines()
    retried = [i for i, line in enumerate(lines) if re.search(stamp + " retry 1 of", line)]
    bars = [i for i, line in enumerate(lines) if line.startswith("export ")]
    assert len(retried) == 1 and len(bars) == 1, last
    assert retried[0] < bars[0], last  # above it (the summary comes after the display ends)
    for _, m in seen:  # and never sharing the bar's line
        assert not (m.group(0).startswith("export") and re.search(stamp, m.string)), m.string
        assert not (re.search(stamp, m.string) and "━" in m.string), m.string
