"""The chaos run of tests/test_chaos.py over many seeds, with a real Retry-After.

    python bench/chaos_sweep.py --seeds 50 [--pairs 2000] [--retry-after 0.25]
                                [--grace 0.15] [--max-seconds 3600] [--json PATH]

Each seed exports --pairs pairs over real HTTP on 127.0.0.1 against the package's stand-in
with every fault at once (tests/chaos.py: CHAOS_FAULTS), then audits DIR: every pair
`exported`, every file's SHA-256 as served, no temporary or stray file, no request over the
server's rate limit, none sooner than a Retry-After. Bounded: at most --seeds runs, none started
after --max-seconds, each cut off after --run-timeout. Exit 0 if every run was clean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos import CHAOS_FAULTS, chaos_run  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=50, help="how many seeds (runs)")
    p.add_argument("--first-seed", type=int, default=1000)
    p.add_argument("--pairs", type=int, default=2000, help="pairs per run")
    p.add_argument(
        "--retry-after",
        type=float,
        default=0.25,
        help="Retry-After of injected 429s, seconds (default 0.25)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=0.15,
        help="seconds after a 429 during which arrivals count as in flight",
    )
    p.add_argument("--max-seconds", type=float, default=3600, help="start no run after this")
    p.add_argument("--run-timeout", type=float, default=600, help="a run longer is a failure")
    p.add_argument("--json", metavar="PATH", help="write the totals as JSON")
    args = p.parse_args()
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() else None  # fsyncs on a RAM disk cost nothing
    started = time.monotonic()
    totals: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    bad: list[str] = []
    runs = 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if time.monotonic() - started > args.max_seconds:
            print(f"stopping: --max-seconds {args.max_seconds:g} reached", file=sys.stderr)
            break
        root = Path(tempfile.mkdtemp(prefix="rtk-sweep-", dir=base))
        try:
            report = asyncio.run(
                chaos_run(
                    seed,
                    args.pairs,
                    root,
                    retry_after=args.retry_after,
                    retry_after_grace=args.grace,
                    timeout=args.run_timeout,
                )
            )
        except TimeoutError:
            bad.append(f"seed {seed}: the run did not finish in {args.run_timeout:g} s")
            continue
        finally:
            shutil.rmtree(root, ignore_errors=True)
        runs += 1
        faults.update(report.faults)
        totals.update(
            pairs=report.pairs,
            exported=report.statuses["exported"],
            lost=len(report.lost),
            corrupt=len(report.corrupt),
            leftovers=len(report.leftovers),
            strays=len(report.strays),
            rate_violations=report.rate_violations,
            early_after_retry_after=report.early_after_retry_after,
            client_early=report.client_early,
            api_requests=report.api_requests,
            downloads=report.downloads,
            retries=report.stats["retries"],
        )
        if not report.ok:
            bad.append(
                f"seed {seed}: lost={report.lost[:3]} corrupt={report.corrupt[:3]} "
                f"leftovers={report.leftovers[:3]} strays={report.strays[:3]} "
                f"violations={report.rate_violations} "
                f"early={report.early_after_retry_after} "
                f"client_early={report.client_early}"
            )
            print(bad[-1], file=sys.stderr, flush=True)
        print(
            f"seed {seed}: {report.seconds:.1f} s, {report.statuses['exported']}/"
            f"{report.pairs} exported, faults {sum(report.faults.values())}, "
            f"{'ok' if report.ok else 'FAILED'}",
            file=sys.stderr,
            flush=True,
        )
    summary = {
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
        "retry_after": args.retry_after,
        "grace": args.grace,
        "fault_rates": {k: v for k, v in vars(CHAOS_FAULTS).items() if v},
        "totals": dict(totals),
        "faults_injected": dict(sorted(faults.items())),
        "failures": bad,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0 if runs and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
