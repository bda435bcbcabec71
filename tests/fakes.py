"""Test doubles that are not servers: a clock that moves only when someone sleeps."""

from __future__ import annotations

import anyio.lowlevel


class FakeClock:
    """Monotonic time that advances by exactly what `sleep` asks for, instantly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()
