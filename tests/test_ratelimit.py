"""The pacer: no window ever holds more than the budget, and a pause holds everyone."""

from __future__ import annotations

import asyncio

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import Rate
from exporter.ratelimit import Pacer
from tests.fakes import FakeClock


def max_in_window(times: list[float], window: float) -> int:
    """The most starts found in any half-open window [t, t + window)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=8),
    w=st.floats(min_value=0.5, max_value=30),
    events=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=5),
            st.one_of(st.none(), st.floats(min_value=0, max_value=60)),
        ),
        max_size=60,
    ),
)
def test_no_window_holds_more_than_the_budget(
    n: int, w: float, events: list[tuple[float, float | None]]
) -> None:
    """Whatever the arrivals and pauses, at most N starts fall in any window of W seconds,
    no start falls inside a pause, and no start waits longer than it must."""
    clock = FakeClock()
    pacer = Pacer(Rate(n, w), clock=clock, sleep=clock.sleep, margin=0.0)
    starts: list[float] = []

    async def drive() -> None:
        pause_until = float("-inf")
        for gap, pause in events:
            clock.now += gap
            if pause is not None:
                pacer.pause(pause)
                pause_until = max(pause_until, clock.now + pause)
            arrived = clock.now
            await pacer.acquire()
            assert clock.now >= pause_until
            earliest = max(arrived, pause_until, starts[-n] + w if len(starts) >= n else arrived)
            assert abs(clock.now - earliest) < 1e-6, "waited longer than the budget requires"
            starts.append(clock.now)

    asyncio.run(drive())
    if starts:
        assert max_in_window(starts, w - 1e-9) <= n


def test_concurrent_callers_share_the_budget_in_arrival_order() -> None:
    """Fifty tasks at once get starts five per second, in the order they asked."""
    clock = FakeClock()
    pacer = Pacer(Rate(5, 1.0), clock=clock, sleep=clock.sleep, margin=0.0)
    order: list[int] = []
    starts: list[float] = []

    async def one(i: int) -> None:
        await pacer.acquire()
        order.append(i)
        starts.append(clock.now)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
                await anyio.lowlevel.checkpoint()

    asyncio.run(main())
    assert order == list(range(50))
    assert max_in_window(starts, 1.0 - 1e-9) == 5
    assert starts[-1] - starts[0] == 9.0  # 50 starts at 5/s need exactly nine more windows


def test_a_pause_holds_every_waiter_for_its_whole_length() -> None:
    """A 429's Retry-After of 300 s delays all later requests, then the burst resumes."""
    clock = FakeClock()
    pacer = Pacer(Rate(100, 10.0), clock=clock, sleep=clock.sleep, margin=0.0)
    starts: list[float] = []

    async def main() -> None:
        await pacer.acquire()
        t0 = clock.now
        pacer.pause(300)
        for _ in range(3):
            await pacer.acquire()
            starts.append(clock.now - t0)

    asyncio.run(main())
    assert starts == [300.0, 300.0, 300.0]
    assert pacer.paused_seconds == 300.0


def test_a_shorter_pause_does_not_shorten_a_longer_one() -> None:
    """Pauses only ever extend: a later 429 with a small Retry-After keeps the long one."""
    clock = FakeClock()
    pacer = Pacer(Rate(10, 1.0), clock=clock, sleep=clock.sleep, margin=0.0)
    pacer.pause(300)
    pacer.pause(5)
    assert pacer.delay() == 300.0


def test_the_default_margin_widens_the_window_slightly() -> None:
    """The pacer's own window is 1% wider than the budget's, so server-side skew is absorbed."""
    clock = FakeClock()
    pacer = Pacer(Rate(1, 10.0), clock=clock, sleep=clock.sleep)

    async def main() -> None:
        await pacer.acquire()
        await pacer.acquire()

    asyncio.run(main())
    assert len(clock.slept) == 1 and abs(clock.slept[0] - 10.1) < 1e-9


def test_memory_follows_the_requests_made_not_the_budget() -> None:
    """A huge budget (`--rate 1000000000/1s`, "unlimited") costs nothing up front, and the
    pacer keeps only the starts still inside its window."""
    import tracemalloc

    clock = FakeClock()
    tracemalloc.start()
    try:
        pacer = Pacer(Rate(1_000_000_000, 1.0), clock=clock, sleep=clock.sleep)

        async def main() -> None:
            for _ in range(1000):
                await pacer.acquire()
                clock.now += 0.01  # 100 starts a second: about 101 inside a 1.01 s window

        anyio.run(main)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert len(pacer._pending) <= 102


def test_a_request_counts_until_its_answer_and_from_it() -> None:
    """The server counted a request somewhere between its start and its answer: the next one
    that needs its place waits a whole window after the answer, not after the start."""
    clock = FakeClock(start=0.0)
    pacer = Pacer(Rate(2, 1.0), clock=clock, sleep=clock.sleep, margin=0.0)

    async def main() -> None:
        first = await pacer.acquire()
        clock.now = 0.1
        await pacer.acquire()  # never answered here: it counts from its start, as before
        clock.now = 0.5
        pacer.answered(first)
        await pacer.acquire()  # the second's place frees at 1.1, the first's at 1.5
        assert clock.now == 1.1
        await pacer.acquire()
        assert clock.now == 1.5

    anyio.run(main)


def test_an_unanswered_request_keeps_its_place_until_answered() -> None:
    """A slow request (answered after more than a window) is counted all the while: the
    server may have counted it late, so its place is not given away at start + window."""
    clock = FakeClock(start=0.0)
    pacer = Pacer(Rate(1, 1.0), clock=clock, sleep=clock.sleep, margin=0.0, hold=60.0)

    async def main() -> None:
        slow = await pacer.acquire()
        clock.now = 3.0  # still unanswered three windows later
        assert pacer.delay() > 0
        pacer.answered(slow)
        assert pacer.delay() == 1.0  # a whole window after the answer
        await pacer.acquire()
        assert clock.now == 4.0

    anyio.run(main)


def test_an_answer_frees_a_waiting_caller_without_sleeping_out_the_hold() -> None:
    """With every place held by unanswered requests, a waiter starts soon after an answer
    frees one, not after the 60 s hold."""
    clock = FakeClock(start=0.0)
    pacer = Pacer(Rate(1, 1.0), clock=clock, sleep=clock.sleep, margin=0.0, hold=60.0)
    started: list[float] = []

    async def main() -> None:
        slow = await pacer.acquire()

        async def answer_later() -> None:
            while clock.now < 2.0:
                await anyio.lowlevel.checkpoint()
            pacer.answered(slow)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_later)
            await pacer.acquire()
            started.append(clock.now)

    anyio.run(main)
    assert 3.0 <= started[0] <= 3.1  # the answer at about 2.0, then one window


def test_the_pacer_says_what_it_waits_on_and_counts_each_wait_apart() -> None:
    """A 429 pause and a spent budget are told apart, with the time left and waited so far,
    and their seconds are counted separately: no second counted twice."""
    clock = FakeClock()
    seen: list[tuple[str, float, float] | None] = []

    async def sleep(seconds: float) -> None:
        wait = pacer.waiting_on()
        seen.append(None if wait is None else (wait.reason, wait.left, wait.waited))
        await clock.sleep(seconds)

    pacer = Pacer(Rate(2, 10.0), clock=clock, sleep=sleep, margin=0.0)

    async def main() -> None:
        assert pacer.waiting_on() is None
        await pacer.acquire()
        await pacer.acquire()  # the budget is spent: the next waits 10 s for the window
        assert pacer.waiting_on() is None  # nobody is waiting yet
        assert pacer.room() == 0
        await pacer.acquire()
        pacer.pause(30.0)
        wait = pacer.waiting_on()
        assert wait is not None and (wait.reason, wait.left, wait.waited) == ("pause", 30.0, 0.0)
        clock.now += 12.0
        wait = pacer.waiting_on()
        assert wait is not None and (wait.reason, wait.left, wait.waited) == ("pause", 18.0, 12.0)
        await pacer.acquire()  # the pause's 18 s left, then the window is free again

    asyncio.run(main())
    assert seen == [("budget", 10.0, 0.0), ("pause", 18.0, 12.0)]
    assert pacer.paused_seconds == 30.0
    assert pacer.budget_wait_seconds == 10.0
    assert pacer.waiting_on() is None


def test_a_budget_wait_that_runs_into_a_pause_is_split_between_them() -> None:
    """The first in line waits 10 s for the window; a 429 arrives 4 s in and pauses 20 s: 4 s
    were the budget's, the 20 s after them the pause's."""
    clock = FakeClock()

    async def sleep(seconds: float) -> None:
        if not pacer.paused_seconds:  # the first sleep is cut short by a 429 after 4 s
            clock.now += 4.0
            pacer.pause(20.0)
            await anyio.lowlevel.checkpoint()
        else:
            await clock.sleep(seconds)

    pacer = Pacer(Rate(1, 10.0), clock=clock, sleep=sleep, margin=0.0)

    async def main() -> None:
        await pacer.acquire()
        start = clock.now
        await pacer.acquire()
        assert clock.now - start == 24.0

    asyncio.run(main())
    assert pacer.paused_seconds == 20.0
    assert pacer.budget_wait_seconds == 4.0
