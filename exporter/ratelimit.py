"""The pacer: a sliding-window budget shared by every API request, with a shared pause.

Written here rather than taken from aiolimiter or pyrate-limiter: aiolimiter is a leaky bucket
(a full bucket plus its drip lets about 2N requests into one window, which the server counts as
a violation that blocks the token for five minutes), and neither library can pause all callers
at once for a 429's Retry-After. A sliding-window log of the times still inside the window is
exact, and holds at most min(N, requests started in one window) of them: a fixed ring of N
slots would cost 8 MB at `--rate 1000000/1s` and 8 GB at `1000000000/1s`.

A request counts from its start until it is answered, and from its answer on: the server
counted it at some moment in between, which we cannot see, and only the answer is sure to
come after it. Counting from the start alone let a request that reached the server late (a
busy event loop, a new connection) make the next window look short to the server.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio

from exporter.config import Rate

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Wait:
    """What holds every API request back right now, for the display and the log lines."""

    reason: Literal["pause", "budget"]  # a 429's pause, or the budget window spent
    left: float  # seconds until the next request may start, as far as the pacer knows
    waited: float  # seconds this wait has lasted so far


class Pacer:
    """At most `rate.requests` starts in any window of `rate.seconds`; `pause()` stops them all.

    Waiters are served first come, first served (anyio's Lock is fair), so no pair starves.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        margin: float | None = None,
        hold: float = 0.0,
    ) -> None:
        self.rate = rate
        # The server counts a request when it arrives, we when it starts: a request delayed in
        # transit (a new TLS connection, say) lets the next window look shorter to the server.
        # One percent of the window (at most a second) absorbs that skew.
        self._window = rate.seconds + (min(rate.seconds / 100, 1.0) if margin is None else margin)
        # An unanswered request may have reached the server at any moment before now, so it
        # keeps its place for `hold` seconds (the longest a request can stay unanswered: the
        # API timeout) past its window, not just for the window after its start.
        self._hold = hold
        self._poll = max(rate.seconds / 20, 0.01)
        self._clock = clock
        self._sleep = sleep
        # Requests not answered yet, by start (oldest first), and answers, oldest first.
        self._pending: deque[tuple[float, int]] = deque()
        self._answered: deque[float] = deque()
        self._tickets = itertools.count(1)
        self._pause_until = -math.inf
        self._pause_started = -math.inf
        self._lock = anyio.Lock()
        self._budget_since: float | None = None  # when the first in line began to wait
        self.paused_seconds = 0.0  # in 429 pauses
        self.budget_wait_seconds = 0.0  # the first in line held by the budget, pauses aside

    def delay(self) -> float:
        """Seconds until the next request may start (0 if it may start now)."""
        now = self._clock()
        horizon = now - self._window
        pending, answered = self._pending, self._answered
        hold = self._hold
        while pending and pending[0][0] + hold <= horizon:
            pending.popleft()  # counted again from its answer, if one comes
        while answered and answered[0] <= horizon:
            answered.popleft()
        wait = self._pause_until - now
        over = len(pending) + len(answered) - self.rate.requests
        if over >= 0:  # full until the (over+1)-th oldest time in the window ages out
            times = heapq.merge((t + hold for t, _ in pending), answered)
            wait = max(wait, next(itertools.islice(times, over, None)) + self._window - now)
        return max(wait, 0.0)

    async def acquire(self) -> int:
        """Wait for a place in the budget and claim it; pass the ticket to `answered()`."""
        # Fast path: nobody waiting and a place free, so claim it without the lock, whose two
        # checkpoints cost two trips through the event loop per request (without it, bench.ab
        # of 4,000 pairs, 8 runs, 2026-12-07: 0.961x pairs/s, 1.029x CPU per pair). Check and
        # claim are one step (no await between), and a waiter holds the lock, so the line is
        # still kept.
        if not self._lock.locked() and self.delay() <= 0:
            return self._claim()
        async with self._lock:
            try:
                while (wait := self.delay()) > 0:
                    before = self._clock()
                    if self._budget_since is None and before >= self._pause_until:
                        self._budget_since = before
                    # With a hold, the wait assumes unanswered requests stay unanswered; an
                    # answer frees a place sooner, so look again now and then.
                    await self._sleep(min(wait, self._poll) if self._hold else wait)
                    after = self._clock()
                    # The part of this sleep that no pause explains was the budget's.
                    paused = min(after, self._pause_until) - max(before, self._pause_started)
                    self.budget_wait_seconds += after - before - max(0.0, paused)
            finally:
                self._budget_since = None
            return self._claim()

    def _claim(self) -> int:
        ticket = next(self._tickets)
        self._pending.append((self._clock(), ticket))
        return ticket

    def answered(self, ticket: int) -> None:
        """The request got its answer, or failed: from now on it counts from now."""
        for i, (_, t) in enumerate(self._pending):
            if t == ticket:
                del self._pending[i]
                break
        self._answered.append(self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every API request for `seconds` from now (a 429's Retry-After)."""
        now = self._clock()
        until = now + seconds
        if until > self._pause_until:
            if self._pause_until <= now:
                self._pause_started = now
            self.paused_seconds += until - max(self._pause_until, now)
            self._pause_until = until

    def room(self) -> int:
        """Requests that may start at once, pauses aside (for an ETA)."""
        self.delay()  # ages out what left the window
        return max(0, self.rate.requests - len(self._pending) - len(self._answered))

    def last_pause(self) -> tuple[float, float] | None:
        """The latest 429 pause, over or not, as (seconds since it began, seconds until it
        ends: negative once over); None if there was none. The log tells a pause from this,
        so that one begun and ended between two of its looks is told too."""
        if self._pause_until <= self._pause_started:  # none yet, or of no length (Retry-After: 0)
            return None
        now = self._clock()
        return now - self._pause_started, self._pause_until - now

    def waiting_on(self) -> Wait | None:
        """A 429 pause in force, or the budget holding back the first request in line."""
        now = self._clock()
        if self._pause_until > now:
            return Wait("pause", self._pause_until - now, now - self._pause_started)
        if self._budget_since is not None and (left := self.delay()) > 0:
            return Wait("budget", left, now - self._budget_since)
        return None
