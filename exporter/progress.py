"""What a person or a log collector sees during a run: a live display, or periodic lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Protocol

import anyio

from exporter.stats import Stats

if TYPE_CHECKING:
    from exporter.config import Rate
    from exporter.manifest import Record
    from exporter.report import Output

log = logging.getLogger("exporter.progress")

STATUS_EVERY = 30.0  # seconds between status lines when not on a terminal


class Reporter(Protocol):
    """What the pipeline tells the outside (progress display, periodic log lines)."""

    def recorded(self, rec: Record) -> None: ...

    async def run(self, stats: Stats) -> None: ...


class QuietReporter:
    def recorded(self, rec: Record) -> None:
        return None

    async def run(self, stats: Stats) -> None:
        await anyio.sleep_forever()


def status_line(stats: Stats, elapsed: float) -> str:
    done = sum(stats.counts.values())
    total = f"/{stats.total}" if stats.total is not None else ""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{done}{total} done", f"{rate:.1f}/s"]
    parts += [f"{k} {v}" for k, v in sorted(stats.counts.items())]
    parts += [
        f"{stats.bytes / 1e6:.1f} MB",
        f"{stats.api_requests} API requests",
        f"{stats.rate_limited} rate-limited",
        f"{stats.retries} retries",
    ]
    return ", ".join(parts)


class LogReporter:
    """Not a terminal (cron): no bars, a plain status line now and then."""

    def __init__(self, every: float = STATUS_EVERY) -> None:
        self.every = every

    def recorded(self, rec: Record) -> None:
        return None

    async def run(self, stats: Stats) -> None:
        start = time.monotonic()
        while True:
            await anyio.sleep(self.every)
            log.info(
                "progress: %s",
                status_line(stats, time.monotonic() - start),
                extra={"event": "progress"},
            )


class RichReporter:
    """A terminal: a live bar with done/total, rate, ETA at the budget, bytes, 429s, retries."""

    def __init__(self, rate_per_second: float) -> None:
        self.rate_per_second = rate_per_second

    def recorded(self, rec: Record) -> None:
        return None

    async def run(self, stats: Stats) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = Console(stderr=True)
        with Progress(
            TextColumn("[bold]export"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
            refresh_per_second=4,
        ) as bar:
            task = bar.add_task("export", total=None, info="")
            start = time.monotonic()
            try:
                while True:
                    done = sum(stats.counts.values())
                    left = (stats.total or 0) - done
                    eta = left / self.rate_per_second if self.rate_per_second else 0
                    elapsed = time.monotonic() - start
                    bar.update(
                        task,
                        completed=done,
                        total=stats.total,
                        info=(
                            f"{done / elapsed if elapsed else 0:.1f}/s  "
                            f"ETA≥{eta:.0f}s  {stats.bytes / 1e6:.1f} MB  "
                            f"429s {stats.rate_limited}  retries {stats.retries}"
                        ),
                    )
                    await anyio.sleep(0.25)
            finally:
                bar.update(task, completed=sum(stats.counts.values()), total=stats.total)


def reporter_for(output: Output, rate: Rate) -> Reporter:
    """The live display on a terminal (or when asked for), plain lines otherwise."""
    if output.progress == "always" or (output.progress == "auto" and sys.stderr.isatty()):
        return RichReporter(rate.requests / rate.seconds)
    return LogReporter()
