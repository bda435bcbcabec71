"""Pacing at the budget: the stand-in enforces N requests per W seconds, rtk-export runs with
`--rate N/Ws`; then the same with one 429 carrying `Retry-After: 5` injected mid-run.

    python -m bench.pacing [--requests 1500] [--rate 50/1s]

The stand-in runs in a thread of this process (it is idle but for the paced requests) so that
its record of every API request's arrival time can be read afterwards; rtk-export is a child.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
from bisect import bisect_left, bisect_right
from collections import Counter
from pathlib import Path

from bench.common import ACCOUNT, PY, TOKEN, env, machine, run_measured, table, write_sessions
from exporter.standin import CannedResponse, StandinConfig, standin_in_thread


def max_in_window(times: list[float], window: float) -> int:
    """The most arrivals in any half-open window of `window` seconds (the server's count)."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def one_run(n: int, w: float, pairs: int, work: Path, inject_at: int | None) -> dict[str, object]:
    config = StandinConfig(token=TOKEN, account_id=ACCOUNT, rate_limit=(n, w))
    sessions = write_sessions(work / "sessions.txt", pairs)
    out = work / "out"
    with standin_in_thread(config) as server:
        if inject_at is not None:
            server.script(
                f"/sessions/s-{inject_at:09d}/chat",
                CannedResponse(status=429, headers={"Retry-After": "5"}),
            )
        m = run_measured(
            [
                PY,
                "-m",
                "exporter",
                str(sessions),
                "--out",
                str(out),
                "--rate",
                f"{n}/{w:g}s",
                "--concurrency",
                "16",
                "--progress",
                "never",
                "--summary-json",
                str(out / "summary.json"),
            ],
            environ=env(server.base_url),
        )
        api = server.state.records("api")
        counters = server.state.counters
    summary = json.loads((out / "summary.json").read_text())
    shutil.rmtree(out)
    times = sorted(r.arrived for r in api)
    t0 = times[0]
    res: dict[str, object] = {
        "api_requests": len(times),
        "exported": summary["counts"].get("exported", 0),
        "rc": m.returncode,
        "violations": counters.rate_violations,
        "early_after_retry_after": counters.early_after_retry_after,
        "max_in_window": max_in_window(times, w),
        "span": times[-1] - t0,
        # The earliest the last of k requests may start under N per W, bursts allowed.
        "ideal_span": (math.ceil(len(times) / n) - 1) * w,
        "wall": m.wall,
        # Steady-state use of the budget: how long after a request the one N places later
        # (the one that reuses its place) arrives; W at 100%.
        "reuse_gap": statistics.median(b - a for a, b in zip(times, times[n:], strict=False)),
    }
    if inject_at is not None:
        (t429,) = [r.arrived for r in api if r.fault == "scripted"]
        after = times[bisect_right(times, t429) :]
        gap_end = t429 + 5.0
        in_pause = after[: bisect_left(after, gap_end)]
        res["t429"] = t429 - t0
        # Requests already sent when the 429 was answered arrive just after it; any request
        # started after rtk-export read the 429 must wait out the 5 s.
        res["in_pause"] = len(in_pause)
        res["last_in_pause"] = in_pause[-1] - t429 if in_pause else 0.0
        res["first_after_pause"] = (
            after[len(in_pause)] - t429 if len(after) > len(in_pause) else float("nan")
        )
        # Arrivals per whole second, relative to the 429, from 5 s before to 10 s after.
        per_s = Counter(math.floor(t - t429) for t in times if -5 <= t - t429 < 11)
        res["per_second"] = [per_s.get(k, 0) for k in range(-5, 11)]
        resumed = [t for t in after if t >= gap_end]
        if len(resumed) > n:
            # Steady rate after the pause: past the first burst of N, as before it.
            steady = resumed[n:]
            res["rate_after"] = (len(steady) - 1) / (steady[-1] - steady[0])
        before = [t for t in times if t < t429]
        steady_before = before[n:]
        if len(steady_before) > 1:
            res["rate_before"] = (len(steady_before) - 1) / (steady_before[-1] - steady_before[0])
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--rate", default="50/1s")
    args = p.parse_args()
    n_text, _, w_text = args.rate.rstrip("s").partition("/")
    n, w = int(n_text), float(w_text)
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-pace-"))
    try:
        plain = one_run(n, w, args.requests, work, None)
        hit = one_run(n, w, args.requests, work, args.requests // 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    budget = n / w
    print(
        f"\nstand-in enforcing {n}/{w:g}s, rtk-export --rate {n}/{w:g}s, {args.requests} "
        f"pairs, concurrency 16; {machine()}"
    )
    rows = []
    for name, r in (("no 429", plain), ("429 + Retry-After: 5 mid-run", hit)):
        gap = float(r["reuse_gap"])  # type: ignore[arg-type]
        print(
            f"{name}: median time from a request to the one {n} places later "
            f"{gap:.4f} s -> steady rate {n / gap:.2f} req/s = {w / gap * 100:.1f}% of budget"
        )
        span = float(r["span"])  # type: ignore[arg-type]
        ideal = float(r["ideal_span"])  # type: ignore[arg-type]
        rows.append(
            [
                name,
                r["api_requests"],
                r["exported"],
                r["rc"],
                f"{span:.2f}",
                f"{ideal:.0f}",
                f"{(r['api_requests'] - 1) / span:.2f}",  # type: ignore[operator]
                f"{ideal / span * 100:.1f}%" if name == "no 429" else "-",
                r["max_in_window"],
                r["violations"],
                r["early_after_retry_after"],
            ]
        )
    print(
        table(
            [
                "run",
                "API requests",
                "exported",
                "exit",
                "first->last s",
                "ideal s",
                "req/s",
                "of budget",
                f"max in {w:g}s",
                "violations",
                "early after R-A",
            ],
            rows,
        )
    )
    print(
        f"\nbudget {budget:g} req/s; 'of budget' = ideal span / actual span (a burst of {n} "
        f"allowed at the start, so req/s over the run can exceed {budget:g})"
    )
    print(
        f"429 at t={hit['t429']:.2f} s: {hit['in_pause']} API requests arrived in the 5 s "
        f"after it, the last of them {hit['last_in_pause']:.3f} s after it (in flight when "
        f"it was answered); the next {hit['first_after_pause']:.3f} s after it; "
        f"steady rate before "
        f"{hit.get('rate_before', float('nan')):.2f} req/s, after "
        f"{hit.get('rate_after', float('nan')):.2f} req/s"
    )
    print("API arrivals per second around the 429 (s -5 .. +10):", hit["per_second"])


if __name__ == "__main__":
    main()
