"""The retry policy in one place: what is retried, how often, how long between attempts, and
the one hook that hears of every retry scheduled.

Shared by the export of each unit and by the API's listing and lookups, so that both spend the
same budget the same way: 429s pause every request and never count, expired links need a fresh
URL. Each piece of work keeps an `Attempts` value with its history (urllib3's `Retry.history`);
the hook receives a frozen `RetryDetails` (stamina's instrumentation), to log and count it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from exporter.config import RetryPolicy
from exporter.errors import ExportError, LinkExpired, RateLimited, TransientError

T = TypeVar("T")
# How `what` names a pair ("app1/s1 chat", "session app1/s1"): ids are [A-Za-z0-9_-].
_PAIR = re.compile(r"([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)")


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """One retry about to be waited for: of what, after which error, how long."""

    what: str  # "app1/s1 chat", "listing app1": for the log line
    kind: str  # the error's kind (ExportError.kind): what the retry is counted under
    message: str  # the error's safe message
    retry_number: int  # 1 for the first retry of this piece of work
    wait: float  # seconds before the next attempt

    @property
    def pair(self) -> dict[str, str]:
        """`app_id` and `session_id` of the unit retried, for a JSON log line; {} if `what`
        names no pair (a listing, a store request)."""
        for word in self.what.split():
            if m := _PAIR.fullmatch(word):
                return {"app_id": m.group(1), "session_id": m.group(2)}
        return {}


RetryHook = Callable[[RetryDetails], None]


@dataclass(slots=True)
class Attempts:
    """The attempts of one piece of work: failures by what went wrong, HTTP requests spent
    (the manifest's `attempts`), and every retry scheduled."""

    what: str = ""
    failures: int = 0
    refreshes: int = 0
    rate_limited: int = 0
    http: int = 0
    history: list[RetryDetails] = field(default_factory=list)


def give_up(policy: RetryPolicy, attempts: Attempts, exc: BaseException | None) -> bool:
    if isinstance(exc, RateLimited):
        # The pacer holds every request for the Retry-After; the work is not to blame.
        attempts.rate_limited += 1
        return False
    if isinstance(exc, LinkExpired):
        attempts.refreshes += 1
        return attempts.refreshes > policy.max_link_refreshes
    attempts.failures += 1
    return attempts.failures >= policy.max_attempts


def backoff(policy: RetryPolicy, attempts: Attempts, exc: BaseException | None) -> float:
    """Exponential back-off with jitter, at least a Retry-After (bounded); 0 for 429/expiry.

    Called before `give_up` counts the failure (tenacity's order: wait, then stop), so
    `attempts.failures` is the number of failures before this one: 0 for the first.
    """
    if isinstance(exc, RateLimited | LinkExpired):
        return 0.0
    wait = min(policy.initial_backoff * 2.0**attempts.failures, policy.max_backoff)
    wait *= 1 - 0.5 * random.random()  # noqa: S311 - jitter, not security
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        wait = max(wait, min(exc.retry_after, policy.max_retry_after))
    return wait


def _exception(rs: RetryCallState) -> BaseException | None:
    return rs.outcome.exception() if rs.outcome else None


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    attempts: Attempts | None = None,
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> T:
    """Await `attempt()` until it succeeds, a non-transient error, or the policy gives up.

    The real last error is re-raised, never tenacity's RetryError: it is what gets recorded.
    """
    state = attempts if attempts is not None else Attempts()

    def scheduled(exc: BaseException | None, wait: float) -> None:
        details = RetryDetails(
            what=state.what,
            kind=exc.kind if isinstance(exc, ExportError) else "error",
            message=exc.message if isinstance(exc, ExportError) else type(exc).__name__,
            retry_number=len(state.history) + 1,
            wait=wait,
        )
        state.history.append(details)
        if on_retry is not None:
            on_retry(details)

    # Fast path, kept because it earns its place: without it, `bench.ab` (4,000 pairs, 8 runs,
    # 2026-12-07) gave 0.921x pairs/s and 1.109x CPU per pair. Nearly every unit succeeds at
    # once, and setting tenacity up per unit costs. The first attempt runs bare, then what
    # tenacity would do after it.
    try:
        return await attempt()
    except TransientError as exc:
        wait = backoff(policy, state, exc)
        if give_up(policy, state, exc):
            raise
        scheduled(exc, wait)
    await sleep(wait)
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=lambda rs: give_up(policy, state, _exception(rs)),
        wait=lambda rs: backoff(policy, state, _exception(rs)),
        before_sleep=lambda rs: scheduled(
            _exception(rs), rs.next_action.sleep if rs.next_action else 0.0
        ),
        sleep=sleep,
        reraise=True,
    )
    async for try_ in retrying:
        with try_:
            return await attempt()
    raise AssertionError("unreachable: tenacity re-raises or returns")  # pragma: no cover
