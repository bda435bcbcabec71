"""The live display on a terminal (rich): done out of the total, rate, ETA, bytes, and on a
line of its own whatever the run waits on, counting down.

    export ━━━━━━━━━━━━━━━━━━━━━━━━━━━  714/4500  0.0/s  ETA 22m22s  3.1 MB  429s 0  retries 0
    waiting: API budget: next request in 4m48s (--rate 1000/300s)
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

from exporter.progress import (
    LogReporter,
    Pace,
    Reporter,
    Waits,
    duration,
    eta_seconds,
    total_of,
    wait_text,
)
from exporter.stats import Stats

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from exporter.manifest import Record
    from exporter.report import Output

# Seconds between redraws: twice a second keeps a seconds countdown moving. Redrawn from this
# task, not by rich's own refresh thread, whose GIL hand-overs slowed the event loop
# (bench.progress_overhead).
REFRESH = 0.5


class RichReporter:
    """A terminal: a bar, and the wait line below it while the run waits."""

    def __init__(self, console: Console | None = None) -> None:
        # rich is imported here, not at the top: a run that is not on a terminal (cron) has
        # no use for it and should not pay its import (about 50 ms of CPU).
        from rich.console import Console

        self.console = console or Console(stderr=True)

    def recorded(self, rec: Record) -> None:
        return None

    async def run(self, stats: Stats, pacer: Waits) -> None:
        from rich.console import Group
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.text import Text

        progress = Progress(
            TextColumn("[bold]export"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        task = progress.add_task("export", total=None, info="")
        wait_line = Text()

        class View:  # the bar's table and the wait line, drawn together by Live
            def __rich__(self) -> RenderableType:
                table = progress.make_tasks_table(progress.tasks)
                return Group(table, wait_line) if wait_line.plain else table

        pace = Pace()
        start = time.monotonic()
        stderr = sys.stderr
        with Live(View(), console=self.console, auto_refresh=False, transient=False) as live:
            moved = _log_through(stderr, sys.stderr)
            try:
                while True:
                    now = time.monotonic()
                    done = sum(stats.counts.values())
                    total = total_of(stats)
                    wait = pacer.waiting_on()
                    recent = pace.add(now, done)
                    elapsed = now - start
                    info = f"{done / elapsed if elapsed else 0:.1f}/s"
                    if total is not None:
                        eta = eta_seconds(total - done, pacer.room(), pacer.rate, wait, recent)
                        info += f"  ETA {duration(eta)}"
                    else:  # units found so far, while the input is still read
                        total = stats.total
                        info += "  listing sessions" if stats.discovering else "  reading input"
                    info += (
                        f"  {stats.bytes / 1e6:.1f} MB  "
                        f"429s {stats.rate_limited}  retries {stats.retries}"
                    )
                    progress.update(task, completed=done, total=total, info=info)
                    text = wait_text(wait)
                    wait_line.plain = f"waiting: {text} (--rate {pacer.rate})" if text else ""
                    wait_line.stylize("yellow")
                    live.refresh()
                    await anyio.sleep(REFRESH)
            finally:
                # The last frame stays on screen: no wait and no ETA, the run's time instead.
                wait_line.plain = ""
                done, elapsed = sum(stats.counts.values()), time.monotonic() - start
                info = (
                    f"{done / elapsed if elapsed else 0:.1f}/s  in {duration(elapsed)}  "
                    f"{stats.bytes / 1e6:.1f} MB  429s {stats.rate_limited}  "
                    f"retries {stats.retries}"
                )
                progress.update(task, completed=done, total=total_of(stats), info=info)
                for handler in moved:
                    handler.setStream(stderr)


def _log_through(stderr: object, proxy: object) -> list[logging.StreamHandler[Any]]:
    """Point the log's handlers on standard error at the stream Live put in its place, which
    prints each line above the display: the handler kept the real stream, so a line written
    straight to it landed inside the bar's line. Nothing moves when Live redirected nothing
    (not a terminal)."""
    if proxy is stderr:
        return []
    moved = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is stderr
    ]
    for handler in moved:
        handler.setStream(proxy)
    return moved


def reporter_for(output: Output) -> Reporter:
    """The live display on a terminal (or when asked for), plain lines otherwise."""
    if output.progress == "always" or (output.progress == "auto" and sys.stderr.isatty()):
        return RichReporter()
    return LogReporter()
