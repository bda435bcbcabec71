"""The chaos run, shared by tests/test_chaos.py and bench/chaos_sweep.py: one export of many
pairs over real HTTP against the stand-in with every fault at once, then an audit of what
landed on disk against what the stand-in served."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from exporter.archive import is_temp_name
from exporter.config import Rate, RetryPolicy, Timeouts
from exporter.ratelimit import Pacer
from exporter.standin import FaultRates, run_standin
from tests.helpers import (
    export,
    make_settings,
    manifest_lines,
    pairs,
    standin_config,
    write_sessions,
)

# The mix the issue asks for, per request: 15% 5xx (API and downloads), 5% dropped
# connections (API before headers; downloads half before headers, half mid-body), 10% 429s,
# 5% truncated bodies, 5% expired-URL refusals, and some slow answers.
CHAOS_FAULTS = FaultRates(
    api_5xx=0.15,
    api_drop=0.05,
    api_429=0.10,
    api_slow=0.10,
    download_5xx=0.15,
    download_drop=0.025,
    download_drop_mid_body=0.025,
    download_truncate=0.05,
    download_expired=0.05,
    download_slow=0.10,
)
# The server's limit and the client's --rate keep the ratio of the defaults (Cloudflare's 1200
# per window, rtk-export's 1000), on a one-second window so that the budget binds in seconds.
SERVER_LIMIT = (1200, 1.0)
CLIENT_RATE = Rate(1000, 1.0)
# A pair's counted failures are API failures until it has a URL (5xx or drop: 0.2 each), then
# download failures (5xx, drop, short body: 0.25 each); 429s and expired URLs are not counted.
# With the default 10 attempts one pair in about 285,000 would end `failed` (for the next run
# to retry), so a 50-seed sweep would see one now and then; with 25, one in about 3*10**14.
CHAOS_RETRY = RetryPolicy(max_attempts=25, initial_backoff=0.01, max_backoff=0.1)


class AuditedPacer(Pacer):
    """The real pacer, also noting each pause and each start: a request started inside a pause
    the client had already been told about is a Retry-After it did not honour."""

    def __init__(self, rate: Rate) -> None:
        super().__init__(rate)
        self.pauses: list[tuple[float, float]] = []
        self.starts: list[float] = []

    async def acquire(self) -> int:
        ticket = await super().acquire()
        self.starts.append(time.monotonic())
        return ticket

    def pause(self, seconds: float) -> None:
        now = time.monotonic()
        self.pauses.append((now, now + seconds))
        super().pause(seconds)

    def starts_inside_pauses(self) -> int:
        return sum(1 for t in self.starts for begin, end in self.pauses if begin <= t < end)


@dataclass
class ChaosReport:
    seed: int
    pairs: int
    seconds: float
    statuses: Counter[str]
    lost: list[str]  # pairs whose last manifest line is not `exported`
    corrupt: list[str]  # files that differ from what the stand-in served, or from the manifest
    leftovers: list[str]  # temporary files under DIR after the run
    strays: list[str]  # any other file under DIR that no manifest line names
    rate_violations: int
    early_after_retry_after: int  # as the server counts them (see StandinConfig's grace)
    client_early: int  # requests the client started inside a Retry-After it had received
    faults: Counter[str]
    api_requests: int
    downloads: int
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            not (self.lost or self.corrupt or self.leftovers or self.strays)
            and self.rate_violations == 0
            and self.early_after_retry_after == 0
            and self.client_early == 0
        )


async def chaos_run(
    seed: int,
    n_pairs: int,
    root: Path,
    *,
    retry_after: float = 0,
    retry_after_grace: float = 0.0,
    concurrency: int = 16,
    timeout: float = 600,
) -> ChaosReport:
    """Export `n_pairs` under CHAOS_FAULTS with stand-in seed `seed`, then audit DIR."""
    config = standin_config(
        faults=CHAOS_FAULTS,
        seed=seed,
        rate_limit=SERVER_LIMIT,
        retry_after=retry_after,
        retry_after_grace=retry_after_grace,
        slow_seconds=0.02,
    )
    todo = pairs(n_pairs, apps=7)
    root.mkdir(parents=True, exist_ok=True)
    sessions = write_sessions(root / "sessions.txt", todo)
    out = root / "out"
    async with run_standin(config) as server:
        settings = make_settings(
            server,
            out,
            sessions,
            rate=CLIENT_RATE,
            retry=CHAOS_RETRY,
            concurrency=concurrency,
            timeouts=Timeouts(connect=5, api=5, read=5),
        )
        pacer = AuditedPacer(CLIENT_RATE)
        started = time.monotonic()
        with anyio.fail_after(timeout):  # a hang is a failure, not a stuck sweep
            result = await export(settings, pacer=pacer)
        seconds = time.monotonic() - started
        expected = {(a, s): hashlib.sha256(server.expected_body(a, s)).hexdigest() for a, s in todo}
        counters = server.state.counters
    last = {(x["app_id"], x["session_id"]): x for x in manifest_lines(out / "manifest.jsonl")}
    lost, corrupt = [], []
    for (app, sid), digest in expected.items():
        line = last.get((app, sid))
        if line is None or line["status"] != "exported":
            lost.append(f"{app}/{sid}: {line and line['status']} {line and line['error']}")
            continue
        path = out / app / f"{sid}.csv"
        on_disk = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        if not (on_disk == digest == line["sha256"]) or line["bytes"] != path.stat().st_size:
            corrupt.append(f"{app}/{sid}")
    named = {out / x["path"] for x in last.values() if x.get("path")} | {out / "manifest.jsonl"}
    files = [Path(d) / f for d, _, fs in os.walk(out) for f in fs]
    return ChaosReport(
        seed=seed,
        pairs=n_pairs,
        seconds=seconds,
        statuses=Counter(result.stats.counts),
        lost=lost,
        corrupt=corrupt,
        leftovers=[str(p) for p in files if is_temp_name(p.name)],
        strays=[str(p) for p in files if p not in named and not is_temp_name(p.name)],
        rate_violations=counters.rate_violations,
        early_after_retry_after=counters.early_after_retry_after,
        client_early=pacer.starts_inside_pauses(),
        faults=Counter(counters.faults),
        api_requests=counters.api_requests,
        downloads=counters.downloads,
        stats={
            "retries": result.stats.retries,
            "rate_limited": result.stats.rate_limited,
            "url_refreshes": result.stats.url_refreshes,
        },
    )
