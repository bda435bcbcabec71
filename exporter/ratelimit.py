"""The pacer: a sliding-window budget shared by every API request, with a shared pause.

Written here rather than taken from aiolimiter or pyrate-limiter: aiolimiter is a leaky bucket
(a full bucket plus its drip lets about 2N requests into one window, which the server counts as
a violation that blocks the token for five minutes), and neither library can pause all callers
at once for a 429's Retry-After. A sliding-window log of the start times still inside the
window is exact, and holds at most min(N, requests started in one window) of them: a fixed
ring of N slots would cost 8 MB at `--rate 1000000/1s` and 8 GB at `1000000000/1s`.
"""

from __future__ import annotations

import math
import time
from collections import deque
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
        self._starts: deque[float] = deque()  # starts inside the window, oldest first
        self._pause_until = -math.inf
        self._lock = anyio.Lock()
        self.paused_seconds = 0.0

    def delay(self) -> float:
        """Seconds until the next request may start (0 if it may start now)."""
        now = self._clock()
        starts, horizon = self._starts, now - self._window
        while starts and starts[0] <= horizon:
            starts.popleft()
        wait = self._pause_until - now
        if len(starts) >= self.rate.requests:  # the window is full until its oldest start ages
            wait = max(wait, starts[-self.rate.requests] + self._window - now)
        return max(wait, 0.0)

    async def acquire(self) -> None:
        """Wait for a place in the budget and claim it."""
        async with self._lock:
            while (wait := self.delay()) > 0:
                await self._sleep(wait)
            self._starts.append(self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every API request for `seconds` from now (a 429's Retry-After)."""
        until = self._clock() + seconds
        if until > self._pause_until:
            self.paused_seconds += until - max(self._pause_until, self._clock())
            self._pause_until = until
