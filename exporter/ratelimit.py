"""The pacer: a sliding-window budget shared by every API request, with a shared pause.

Written here rather than taken from aiolimiter or pyrate-limiter: aiolimiter is a leaky bucket
(a full bucket plus its drip lets about 2N requests into one window, which the server counts as
a violation that blocks the token for five minutes), and neither library can pause all callers
at once for a 429's Retry-After. A sliding-window log over a fixed ring of N start times is
exact, allocation-free per request, and small.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Awaitable, Callable

import anyio

from exporter.config import Rate

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Pacer:
    """At most `rate.requests` starts in any window of `rate.seconds`; `pause()` stops them all.

    Waiters are served first come, first served (anyio's Lock is fair), so no pair starves.
    """

    def __init__(self, rate: Rate, *, clock: Clock = time.monotonic, sleep: Sleep = anyio.sleep,
                 margin: float | None = None) -> None:
        self.rate = rate
        # The server counts a request when it arrives, we when it starts: a request delayed in
        # transit (a new TLS connection, say) lets the next window look shorter to the server.
        # One percent of the window (at most a second) absorbs that skew.
        self._window = rate.seconds + (min(rate.seconds / 100, 1.0) if margin is None else margin)
        self._clock = clock
        self._sleep = sleep
        self._starts = array("d", [-math.inf]) * rate.requests
        self._next = 0  # slot of the oldest start: the one the next request replaces
        self._pause_until = -math.inf
        self._lock = anyio.Lock()
        self.paused_seconds = 0.0

    def delay(self) -> float:
        """Seconds until the next request may start (0 if it may start now)."""
        now = self._clock()
        return max(self._pause_until - now, self._starts[self._next] + self._window - now, 0.0)

    async def acquire(self) -> None:
        """Wait for a place in the budget and claim it."""
        async with self._lock:
            while (wait := self.delay()) > 0:
                await self._sleep(wait)
            self._starts[self._next] = self._clock()
            self._next = (self._next + 1) % self.rate.requests

    def pause(self, seconds: float) -> None:
        """Hold every API request for `seconds` from now (a 429's Retry-After)."""
        until = self._clock() + seconds
        if until > self._pause_until:
            self.paused_seconds += until - max(self._pause_until, self._clock())
            self._pause_until = until
