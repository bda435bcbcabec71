"""The retry policy in one place: what is retried, how often, and how long between attempts.

Shared by the export of each unit and by the listing of sessions, so that both spend the same
budget the same way: 429s pause every request and never count, expired links need a fresh URL.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from exporter.config import RetryPolicy
from exporter.errors import LinkExpired, RateLimited, TransientError

T = TypeVar("T")


@dataclass(slots=True)
class Tally:
    """Failed attempts of one piece of work, counted by what went wrong."""

    failures: int = 0
    refreshes: int = 0
    rate_limited: int = 0


def give_up(policy: RetryPolicy, tally: Tally, exc: BaseException | None) -> bool:
    if isinstance(exc, RateLimited):
        # The pacer holds every request for the Retry-After; the work is not to blame.
        tally.rate_limited += 1
        return False
    if isinstance(exc, LinkExpired):
        tally.refreshes += 1
        return tally.refreshes > policy.max_link_refreshes
    tally.failures += 1
    return tally.failures >= policy.max_attempts


def backoff(policy: RetryPolicy, tally: Tally, exc: BaseException | None) -> float:
    """Exponential back-off with jitter, at least a Retry-After (bounded); 0 for 429/expiry.

    Called before `give_up` counts the failure (tenacity's order: wait, then stop), so
    `tally.failures` is the number of failures before this one: 0 for the first.
    """
    if isinstance(exc, RateLimited | LinkExpired):
        return 0.0
    wait = min(policy.initial_backoff * 2.0 ** tally.failures, policy.max_backoff)
    wait *= 1 - 0.5 * random.random()  # noqa: S311 - jitter, not security
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        wait = max(wait, min(exc.retry_after, policy.max_retry_after))
    return wait


def _exception(rs: RetryCallState) -> BaseException | None:
    return rs.outcome.exception() if rs.outcome else None


async def with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy,
                       tally: Tally | None = None,
                       on_retry: Callable[[], None] | None = None,
                       sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> T:
    """Await `attempt()` until it succeeds, a non-transient error, or the policy gives up.

    The real last error is re-raised, never tenacity's RetryError: it is what gets recorded.
    """
    tally = tally if tally is not None else Tally()
    # Nearly every pair succeeds at once, and setting tenacity up cost a few per cent of the
    # CPU per pair: the first attempt runs bare, followed by what tenacity would do after it.
    try:
        return await attempt()
    except TransientError as exc:
        wait = backoff(policy, tally, exc)
        if give_up(policy, tally, exc):
            raise
    if on_retry is not None:
        on_retry()
    await sleep(wait)
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=lambda rs: give_up(policy, tally, _exception(rs)),
        wait=lambda rs: backoff(policy, tally, _exception(rs)),
        before_sleep=(lambda rs: on_retry()) if on_retry is not None else None,
        sleep=sleep,
        reraise=True,
    )
    async for try_ in retrying:
        with try_:
            return await attempt()
    raise AssertionError("unreachable: tenacity re-raises or returns")  # pragma: no cover
