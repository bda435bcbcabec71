"""The retry policy: what is retried, how often, how long it waits, and what is re-raised."""

from __future__ import annotations

import pytest

from exporter.config import RetryPolicy
from exporter.errors import LinkExpired, PermanentError, RateLimited, TransientError
from exporter.retry import Attempts, RetryDetails, with_retries

POLICY = RetryPolicy(max_attempts=4, initial_backoff=1.0, max_backoff=5.0, max_retry_after=60)


class Script:
    """An attempt that raises the scripted errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def run(script: Script, policy: RetryPolicy = POLICY) -> tuple[str, Sleeps, Attempts, int]:
    sleeps, tally, retries = Sleeps(), Attempts(), list[RetryDetails]()
    result = await with_retries(script, policy, tally, retries.append, sleep=sleeps)
    return result, sleeps, tally, len(retries)


async def test_success_at_once_waits_for_nothing() -> None:
    """The first attempt's result is returned, with no wait and no retry counted."""
    result, sleeps, tally, retries = await run(Script())
    assert (result, list(sleeps), tally, retries) == ("done", [], Attempts(), 0)


async def test_waits_double_with_jitter_and_stop_at_the_cap() -> None:
    """Back-off 1, 2, 4 s (each cut by up to half for jitter), never above max_backoff."""
    script = Script(*(TransientError("503") for _ in range(3)))
    result, sleeps, tally, retries = await run(script)
    assert result == "done" and script.calls == 4 and retries == 3 and tally.failures == 3
    for wait, full in zip(sleeps, (1.0, 2.0, 4.0), strict=True):
        assert full / 2 <= wait <= full
    capped = RetryPolicy(max_attempts=10, initial_backoff=1.0, max_backoff=3.0)
    _, sleeps, _, _ = await run(Script(*(TransientError("x") for _ in range(5))), capped)
    assert max(sleeps) <= 3.0 and sleeps[-1] >= 1.5


async def test_gives_up_after_max_attempts_with_the_real_last_error() -> None:
    """Four failed attempts: the fourth error itself is raised (not tenacity's RetryError)."""
    errors = [TransientError(f"failure {i}") for i in range(1, 6)]
    script = Script(*errors)
    with pytest.raises(TransientError) as caught:
        await run(script)
    assert caught.value is errors[3] and script.calls == 4


async def test_a_permanent_error_is_not_retried() -> None:
    script = Script(PermanentError("404"))
    with pytest.raises(PermanentError):
        await run(script)
    assert script.calls == 1


async def test_a_retry_after_is_honoured_up_to_its_cap() -> None:
    """A Retry-After longer than the back-off sets the wait; one past max_retry_after is cut."""
    _, sleeps, _, _ = await run(
        Script(TransientError("503", retry_after=20), TransientError("503", retry_after=3600))
    )
    assert list(sleeps) == [20, 60]


async def test_429s_and_expired_links_do_not_count_as_attempts() -> None:
    """A 429 waits nothing here (the pacer holds every request) and never fails the pair;
    expired links are bounded by max_link_refreshes on their own."""
    errors = [RateLimited("429")] * 6 + [LinkExpired("403")] * 2 + [TransientError("x")] * 3
    result, sleeps, tally, _ = await run(Script(*errors))
    assert result == "done"
    assert (tally.rate_limited, tally.refreshes, tally.failures) == (6, 2, 3)
    assert sleeps[:8] == [0.0] * 8
    refreshes = RetryPolicy(max_attempts=4, max_link_refreshes=2, initial_backoff=0)
    with pytest.raises(LinkExpired):
        await run(Script(*[LinkExpired("403")] * 3), refreshes)
