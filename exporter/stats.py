"""What one run counted and how it ended: counters shared by the client, the downloader and the
pipeline; discovery's report per app; the `RunResult` the exit code is read from; the run id."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from exporter.errors import FatalError


@dataclass(slots=True)
class Stats:
    api_requests: int = 0
    rate_limited: int = 0  # 429s received from the API
    url_refreshes: int = 0  # fresh URLs asked for after one expired or was refused
    retries: int = 0  # attempts after the first, of every unit, listing and lookup
    retries_by_kind: Counter[str] = field(default_factory=Counter)  # error kind -> retries
    bytes: int = 0  # bytes stored this run
    counts: Counter[str] = field(default_factory=Counter)  # status -> manifest lines this run
    total: int | None = None  # units known so far, for progress
    expected: int | None = None  # units the SESSIONS file will give at most (its lines counted)
    input_done: bool = False  # every input line read, or every listing page: total is final
    discovering: bool = False  # the units come from listing sessions, not a SESSIONS file
    damaged_lines: int = 0  # manifest lines passed over when it was loaded
    paused_seconds: float = 0.0  # in 429 pauses (the pacer's, copied at the end)
    budget_wait_seconds: float = 0.0  # held by the budget window (the pacer's, likewise)


@dataclass(slots=True)
class AppReport:
    """What discovery did for one app this run."""

    since: datetime
    until: datetime
    pages: int = 0  # listing pages received
    listed: int = 0  # sessions on them (breakout rooms aside)
    ended: int = 0  # ENDED sessions handed to the export, breakout rooms included
    live: int = 0  # LIVE sessions remembered
    looked_up: int = 0  # remembered sessions looked up again
    complete: bool = False  # every page listed
    problems: int = 0  # a lookup failed, an id was unusable, or the listing broke off


@dataclass(slots=True)
class RunResult:
    """Everything the exit code and the reports need, whatever the source of the units."""

    run_id: str
    stats: Stats
    seconds: float = 0.0
    invalid_lines: int = 0
    fatal: FatalError | None = None
    stopped_by: int | None = None  # the signal number that stopped the run
    left: int = 0  # units not started because of --max-duration
    cut_short: bool = False  # --max-duration stopped the reading of the input
    plan: dict[str, int] = field(default_factory=dict)
    apps: dict[str, AppReport] = field(default_factory=dict)  # discovery, per app
    failed_retried: int = 0  # discovery: recently failed pairs retried whatever the window
    # False: stopped before its first API request (a bucket that cannot be used), so the end
    # is one line naming why, with no summary of a run that never began.
    started: bool = True

    @property
    def whole(self) -> bool:
        """The run went to its end: not stopped, not cut short (discovery state may move)."""
        return (
            self.fatal is None and self.stopped_by is None and not self.cut_short and not self.left
        )

    @property
    def discovery_problems(self) -> int:
        return sum(r.problems for r in self.apps.values())


def new_run_id() -> str:
    """Sortable and unique: the start time in UTC and a random suffix."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
