"""What a run waits on, told without a terminal: log lines about 429 pauses and budget waits
(rate-limited), the periodic line with the waits so far, and the end-of-run figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anyio
import pytest

from exporter.config import Rate
from exporter.progress import LogReporter, WaitLog, eta_seconds, status_line, total_of
from exporter.ratelimit import Pacer, Wait
from exporter.standin import CannedResponse, StandinConfig, standin_in_thread
from exporter.stats import Stats
from tests.helpers import ACCOUNT, TOKEN, cli_env, pairs, run_cli, write_sessions

RATE = Rate(1000, 300.0)


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records]


def test_a_pause_is_told_when_it_starts_with_its_length_and_when_it_ends(caplog) -> None:
    """One line at a 429 pause's start (its length), one if a new 429 extends it, one at its
    end; looking again during the same pause adds nothing."""
    log = WaitLog(RATE)
    with caplog.at_level(logging.INFO, logger="exporter.progress"):
        log.observe(Wait("pause", 300.0, 0.0), 0.0)
        log.observe(Wait("pause", 299.0, 1.0), 1.0)
        log.observe(Wait("pause", 298.0, 2.0), 2.0)
        log.observe(Wait("pause", 400.0, 3.0), 3.0)  # another 429 arrived: a longer pause
        log.observe(None, 404.0)
        log.observe(None, 405.0)
    assert events(caplog) == ["pause_started", "pause_extended", "pause_ended"]
    assert "paused for 5m00s" in caplog.records[0].getMessage()


def test_a_pause_that_follows_another_between_two_looks_gets_both_lines(caplog) -> None:
    """When one 429 pause ends and the next begins between two looks, the first one's end is
    told before the second one's start: every start has its end."""
    log = WaitLog(RATE)
    with caplog.at_level(logging.INFO, logger="exporter.progress"):
        log.observe(Wait("pause", 2.0, 0.0), 0.0)
        log.observe(Wait("pause", 1.0, 1.0), 1.0)
        log.observe(Wait("pause", 1.5, 0.5), 2.0)  # ended at 1.5, a new 429 at 1.5
        log.observe(None, 4.0)
    assert events(caplog) == ["pause_started", "pause_ended", "pause_started", "pause_ended"]


def test_a_pause_begun_and_ended_between_two_looks_is_told_too(caplog) -> None:
    """A 429 pause shorter than the log's tick, falling wholly between two looks, still gets
    its start (with its length) and its end, read from the pacer's latest pause."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        began = now[0]
        if began == 1.0:  # the reporter looks at 1.0 and 2.0; a 429 at 1.1 pauses until 1.9
            now[0] = 1.1
            pacer.pause(0.8)
        now[0] = began + seconds
        if now[0] >= 3.0:
            raise EOFError  # the run is over
        await anyio.lowlevel.checkpoint()

    pacer = Pacer(RATE, clock=lambda: now[0])
    reporter = LogReporter(every=30.0, tick=1.0, clock=lambda: now[0], sleep=sleep)
    with caplog.at_level(logging.INFO, logger="exporter.progress"), pytest.raises(EOFError):
        anyio.run(reporter.run, Stats(), pacer)
    assert events(caplog) == ["pause_started", "pause_ended"]
    assert caplog.records[0].seconds == pytest.approx(0.8)  # type: ignore[attr-defined]
    pacer.pause(0.0)  # a 429 with Retry-After: 0 holds nothing back: no pause to tell
    assert pacer.last_pause() is None


def test_a_budget_wait_is_told_once_over_10_s_and_at_most_once_a_minute(caplog) -> None:
    """Budget waits of 10 s or less say nothing; a longer one gets a line naming the wait
    and --rate; the next line comes no sooner than a minute later."""
    log = WaitLog(RATE)
    with caplog.at_level(logging.INFO, logger="exporter.progress"):
        log.observe(Wait("budget", 8.0, 1.0), 0.0)  # 9 s in all: not worth a line
        log.observe(None, 10.0)
        log.observe(Wait("budget", 200.0, 0.0), 20.0)  # a long one: told
        log.observe(Wait("budget", 199.0, 1.0), 21.0)  # the same wait: not told again
        log.observe(None, 30.0)
        log.observe(Wait("budget", 100.0, 0.0), 40.0)  # a new wait, within the minute
        log.observe(Wait("budget", 50.0, 50.0), 90.0)  # still the same wait
        log.observe(None, 95.0)
        log.observe(Wait("budget", 100.0, 0.0), 100.0)  # a new wait, a minute on: told
    lines = [r.getMessage() for r in caplog.records]
    assert events(caplog) == ["budget_wait", "budget_wait"], lines
    assert "--rate 1000/300s" in lines[0] and "3m20s" in lines[0]


def test_the_periodic_line_says_how_long_the_run_has_waited(caplog) -> None:
    """Not on a terminal, the progress line carries done/total and the waits so far."""

    class Pacer:
        rate = RATE
        paused_seconds = 300.0
        budget_wait_seconds = 42.0

        def waiting_on(self) -> Wait | None:
            return None

        def last_pause(self) -> tuple[float, float] | None:
            return None

        def room(self) -> int:
            return 0

    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 70:
            raise anyio.get_cancelled_exc_class()
        await anyio.lowlevel.checkpoint()

    stats = Stats(total=10, expected=12)
    stats.counts["exported"] = 4
    reporter = LogReporter(every=30.0, clock=lambda: now[0], sleep=sleep)

    async def main() -> None:
        with anyio.CancelScope():
            try:
                await reporter.run(stats, Pacer())
            except anyio.get_cancelled_exc_class():
                pass

    with caplog.at_level(logging.INFO, logger="exporter.progress"):
        anyio.run(main)
    lines = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "progress"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("progress: 4/12 done")
    assert "waited 300 s in 429 pauses, 42 s for the API budget" in lines[0]


def test_the_total_and_eta_follow_what_is_known() -> None:
    """The total is the counted lines until the input is read whole, then the units found;
    the ETA at the budget counts the wait in force and the requests beyond the free room."""
    stats = Stats(total=5)
    assert total_of(stats) is None
    stats.expected = 12
    assert total_of(stats) == 12
    stats.total, stats.input_done = 9, True  # duplicates and bad lines dropped out
    assert total_of(stats) == 9
    wait = Wait("budget", 60.0, 10.0)
    assert eta_seconds(100, 0, Rate(10, 10.0), wait, None) == 60.0 + 100 * 1.0
    assert eta_seconds(100, 40, Rate(10, 10.0), None, 50.0) == 60.0
    assert eta_seconds(100, 100, Rate(10, 10.0), None, 1.0) == 100.0  # downloads limit it
    assert "4/12 done" in status_line(Stats(total=5, expected=12, counts={"exported": 4}), 1.0)


@pytest.fixture(scope="module")
def live() -> object:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def test_a_cron_run_logs_its_pause_and_reports_every_wait(live, tmp_path: Path) -> None:
    """Under cron (no terminal, JSON logs) a scripted 429 gives pause_started and
    pause_ended events; the summary JSON and the metrics carry paused_seconds,
    budget_wait_seconds and retries by kind."""
    ps = pairs(4)
    sessions = write_sessions(tmp_path / "s.txt", ps)
    live.script(live.api_path(*ps[0], "chat"), CannedResponse(429, headers={"Retry-After": "2"}))
    metrics = tmp_path / "m.prom"
    proc = run_cli(
        [
            str(sessions),
            "--out",
            str(tmp_path / "o"),
            "--log-format",
            "json",
            "--rate",
            "3/2s",
            "--summary-json",
            "-",
            "--metrics-file",
            str(metrics),
        ],
        cli_env(live.base_url),
    )
    assert proc.returncode == 0, proc.stderr
    logged = [json.loads(line) for line in proc.stderr.splitlines()]
    kinds = [e["event"] for e in logged]
    assert "pause_started" in kinds and "pause_ended" in kinds
    assert kinds.index("pause_started") < kinds.index("pause_ended")
    summary = json.loads(proc.stdout)
    assert summary["paused_seconds"] >= 1.5
    assert summary["budget_wait_seconds"] > 0
    assert summary["retries_by_kind"] == {"rate_limited": 1}
    text = metrics.read_text()
    assert "rtk_export_paused_seconds " in text
    assert "rtk_export_budget_wait_seconds " in text
    assert 'rtk_export_retries{kind="rate_limited"} 1.0' in text


def test_the_total_is_counted_from_a_regular_file_only(tmp_path: Path) -> None:
    """count_lines counts lines that may hold a pair (no blanks, no comments); a FIFO is not
    read twice (None), nor is a file that cannot be opened."""
    import os

    from exporter.sessions import count_lines

    f = tmp_path / "s.txt"
    f.write_bytes(b"# header comment\napp_id,session_id\na s1\n\n   \na s2\r\nbad line here\n")
    assert count_lines(str(f)) == 4
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer, so that opening it does not block
    try:
        assert count_lines(str(fifo)) is None
    finally:
        os.close(fd)
    assert count_lines(str(tmp_path / "missing")) is None


def test_a_run_off_a_terminal_does_not_import_rich() -> None:
    """Cron pays nothing for the live display: choosing the reporter off a terminal leaves
    rich unimported (its import costs start-up CPU)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from exporter.display import reporter_for\n"
        "from exporter.report import Output\n"
        "r = reporter_for(Output(progress='never'))\n"
        "print(type(r).__name__, 'rich' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    assert out == ["LogReporter", "False"]
