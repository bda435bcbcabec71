"""What a person or a log collector sees during a run: what is done out of what, and what the
run waits on. The live display for a terminal is in `display`; here, the reporter protocol, the
plain periodic lines for cron, and the figures both show (total, ETA, wait texts)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import anyio

from exporter.stats import Stats

if TYPE_CHECKING:
    from exporter.config import Rate
    from exporter.manifest import Record
    from exporter.ratelimit import Wait

log = logging.getLogger("exporter.progress")

STATUS_EVERY = 30.0  # seconds between status lines when not on a terminal
TICK = 1.0  # how often the log reporter looks at what the run waits on
SAME_PAUSE = 0.05  # pauses whose starts are this close are one (clocks read a moment apart)
BUDGET_LOG_AFTER = 10.0  # a budget wait longer than this is worth a line (spec)
BUDGET_LOG_EVERY = 60.0  # ... but at most one such line a minute (spec)


class Waits(Protocol):
    """What a reporter may ask the pacer (the pacer itself, or a fake in tests)."""

    rate: Rate
    paused_seconds: float
    budget_wait_seconds: float

    def waiting_on(self) -> Wait | None: ...

    def last_pause(self) -> tuple[float, float] | None: ...

    def room(self) -> int: ...


class Reporter(Protocol):
    """What the pipeline tells the outside (progress display, periodic log lines)."""

    def recorded(self, rec: Record) -> None: ...

    async def run(self, stats: Stats, pacer: Waits) -> None: ...


class QuietReporter:
    def recorded(self, rec: Record) -> None:
        return None

    async def run(self, stats: Stats, pacer: Waits) -> None:
        await anyio.sleep_forever()


# -- the figures ----------------------------------------------------------------------------


def total_of(stats: Stats) -> int | None:
    """Units the run will have done at the end, as far as is known now (None: unknown)."""
    if stats.input_done:
        return stats.total or 0
    if stats.expected is not None:
        return max(stats.expected, stats.total or 0)
    return None


def duration(seconds: float) -> str:
    """`45s`, `3m12s`, `1h02m`: a wait or an ETA as a person reads it."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def wait_text(wait: Wait | None) -> str:
    """The spec's words for what holds the run back, or '' when nothing does."""
    if wait is None:
        return ""
    if wait.reason == "pause":
        return f"429 pause: {duration(wait.left)} left"
    return f"API budget: next request in {duration(wait.left)}"


def eta_seconds(
    left: int, room: int, rate: Rate, wait: Wait | None, recent_rate: float | None
) -> float:
    """Seconds until `left` more units are done: at least what the budget allows (one API
    request a unit, `room` of them free now, after the current wait), and no sooner than the
    recent pace (downloads, not the budget, may be what limits a run)."""
    per_request = rate.seconds / rate.requests
    at_budget = (wait.left if wait else 0.0) + max(0, left - room) * per_request
    if wait is None and recent_rate:
        return max(at_budget, left / recent_rate)
    return at_budget


class Pace:
    """Units done per second over the last `span` seconds (the whole run's rate hides a run
    that has just slowed down or sped up)."""

    def __init__(self, span: float = 30.0) -> None:
        self.span = span
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float | None:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and samples[1][0] <= now - self.span:
            samples.popleft()
        t0, d0 = samples[0]
        return (done - d0) / (now - t0) if now > t0 else None


def status_line(stats: Stats, elapsed: float, pacer: Waits | None = None) -> str:
    done = sum(stats.counts.values())
    total = total_of(stats)
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{done}/{total} done" if total is not None else f"{done} done", f"{rate:.1f}/s"]
    parts += [f"{k} {v}" for k, v in sorted(stats.counts.items())]
    parts += [
        f"{stats.bytes / 1e6:.1f} MB",
        f"{stats.api_requests} API requests",
        f"{stats.rate_limited} rate-limited",
        f"{stats.retries} retries",
    ]
    if pacer is not None:
        parts.append(
            f"waited {pacer.paused_seconds:.0f} s in 429 pauses, "
            f"{pacer.budget_wait_seconds:.0f} s for the API budget"
        )
    return ", ".join(parts)


# -- not on a terminal ----------------------------------------------------------------------


class WaitLog:
    """Log lines about waits, from what the pacer says once a tick: a 429 pause's start (with
    its length) and end, and a budget wait over 10 s, at most one line a minute."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._pause: tuple[float, float] | None = None  # (start, end) of the pause last told
        self._pause_over = True  # its end told too
        self._budget_logged = -float("inf")  # when the last budget line was written
        self._budget_began: float | None = None  # when the wait last told began

    def observe(
        self, wait: Wait | None, now: float, last_pause: tuple[float, float] | None = None
    ) -> None:
        """`last_pause`: the pacer's latest pause (start, end), over or not; without it, the
        pause in `wait` is all that is known (one begun and ended between looks is missed)."""
        if last_pause is None and wait is not None and wait.reason == "pause":
            last_pause = (now - wait.waited, now + wait.left)
        if last_pause is not None:
            self._told(last_pause, now)
        over = last_pause is None or last_pause[1] <= now
        if self._pause is not None and not self._pause_over and over:
            self._ended(self._pause)
        self._budget(wait, now)

    def _told(self, pause: tuple[float, float], now: float) -> None:
        start, end = pause
        if self._pause is None or abs(start - self._pause[0]) > SAME_PAUSE:
            if self._pause is not None and not self._pause_over:
                self._ended(self._pause)  # the one before ended between two looks
            self._pause, self._pause_over = pause, False
            log.warning(
                "429: every API request paused for %s",
                duration(end - start),
                extra={"event": "pause_started", "seconds": round(end - start, 3)},
            )
        elif end > self._pause[1] + 1.0 and not self._pause_over:
            self._pause = pause
            log.warning(
                "429 again: the pause now ends in %s",
                duration(end - now),
                extra={"event": "pause_extended", "seconds": round(end - now, 3)},
            )
        elif end > self._pause[1]:
            self._pause = pause

    def _budget(self, wait: Wait | None, now: float) -> None:
        if wait is None or wait.reason != "budget":
            return
        if wait.waited + wait.left <= BUDGET_LOG_AFTER:
            return
        if now - self._budget_logged < BUDGET_LOG_EVERY:
            return
        began = now - wait.waited  # a wait is known by when it began
        if self._budget_began is not None and abs(began - self._budget_began) < TICK:
            return  # this wait is already told
        self._budget_logged, self._budget_began = now, began
        log.info(
            "API budget spent (--rate %s): every request held back, the next in %s",
            self.rate,
            duration(wait.left),
            extra={"event": "budget_wait", "seconds": round(wait.left, 3)},
        )

    def _ended(self, pause: tuple[float, float]) -> None:
        self._pause_over = True
        waited = pause[1] - pause[0]
        log.info(
            "429 pause over after %s: requests resume",
            duration(waited),
            extra={"event": "pause_ended", "seconds": round(waited, 3)},
        )


def _pause_at(pacer: Waits, now: float) -> tuple[float, float] | None:
    """The pacer's latest pause as (start, end) on the reporter's clock."""
    last = pacer.last_pause()
    return None if last is None else (now - last[0], now + last[1])


class LogReporter:
    """Not a terminal (cron): no bars; a status line now and then, and lines about waits."""

    def __init__(
        self,
        every: float = STATUS_EVERY,
        *,
        tick: float = TICK,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.every, self.tick = every, min(tick, every)
        self._clock, self._sleep = clock, sleep

    def recorded(self, rec: Record) -> None:
        return None

    async def run(self, stats: Stats, pacer: Waits) -> None:
        start = self._clock()
        waits = WaitLog(pacer.rate)
        next_line = start + self.every
        try:
            while True:
                await self._sleep(self.tick)
                now = self._clock()
                waits.observe(pacer.waiting_on(), now, _pause_at(pacer, now))
                if now >= next_line:
                    next_line = max(next_line + self.every, now)
                    log.info(
                        "progress: %s",
                        status_line(stats, now - start, pacer),
                        extra={"event": "progress"},
                    )
        finally:  # the run ended: a pause seen in force is over (synchronous, so it runs)
            end = self._clock()
            waits.observe(pacer.waiting_on(), end, _pause_at(pacer, end))
