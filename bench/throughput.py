"""Throughput without a rate limit: rtk-export against the SDK script, side by side.

    python -m bench.throughput [--pairs 20000] [--runs 3] [--concurrency 16]

Starts the stand-in in its own process (small chat CSVs, 1-6 KB, no faults), then runs each
contender `--runs` times as a child process, alternating which goes first, each into a fresh
folder, and prints medians: pairs/s, CPU seconds per 1,000 pairs, peak RSS, and the ratios.
The stand-in shares the machine's cores with the contender it serves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.common import (
    ACCOUNT,
    PY,
    Measured,
    compiled_tree,
    cpu_seconds,
    env,
    export_command,
    load,
    machine,
    median,
    run_measured,
    standin_process,
    table,
    write_sessions,
)


def rtk_cmd(sessions: Path, out: Path, base_url: str, concurrency: int) -> list[str]:
    return export_command(
        sessions,
        out,
        base_url,
        "--concurrency",
        str(concurrency),
        "--summary-json",
        str(out / "summary.json"),
    )


def baseline_cmd(sessions: Path, out: Path, base_url: str, concurrency: int) -> list[str]:
    return [
        PY,
        "bench/baseline_sdk.py",
        str(sessions),
        str(out),
        "--account-id",
        ACCOUNT,
        "--base-url",
        base_url,
        "--concurrency",
        str(concurrency),
    ]


def exported(name: str, m: Measured, out: Path) -> int:
    if name.startswith("rtk-export"):
        doc = json.loads((out / "summary.json").read_text())
        return int(doc["counts"].get("exported", 0))
    last = m.stdout.strip().splitlines()[-1] if m.stdout.strip() else ""
    return int(last.split()[0]) if last.endswith("failed") else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--only", choices=("rtk-export", "baseline"))
    p.add_argument(
        "--also",
        metavar="REV",
        help="a third contender: rtk-export as of git revision REV (is a change in the ratio "
        "the code's or the machine's?)",
    )
    args = p.parse_args()
    contenders = {"rtk-export": rtk_cmd, "baseline": baseline_cmd}
    if args.only:
        contenders = {args.only: contenders[args.only]}
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-tp-"))
    results: dict[str, list[tuple[Measured, int]]] = {k: [] for k in contenders}
    server_cpu: dict[str, list[float]] = {k: [] for k in contenders}
    try:
        sessions = write_sessions(work / "sessions.txt", args.pairs)
        # rtk-export from bytecode, as the SDK script's packages are (common.compiled_tree).
        environ = {name: env() for name in contenders}
        if "rtk-export" in contenders:
            environ["rtk-export"]["PYTHONPATH"] = str(compiled_tree(work / "tree"))
        if args.also:
            name = f"rtk-export@{args.also}"
            contenders[name] = rtk_cmd
            results[name], server_cpu[name] = [], []
            environ[name] = env()
            environ[name]["PYTHONPATH"] = str(compiled_tree(work / "also", args.also))
        with standin_process() as base_url:
            for run in range(args.runs):
                order = list(contenders) if run % 2 == 0 else list(reversed(contenders))
                for name in order:
                    out = work / f"{name}-{run}"
                    out.mkdir()
                    before = cpu_seconds(base_url.pid)
                    m = run_measured(
                        contenders[name](sessions, out, base_url, args.concurrency),
                        environ=environ[name],
                    )
                    server = cpu_seconds(base_url.pid) - before
                    n = exported(name, m, out)
                    results[name].append((m, n))
                    server_cpu[name].append(server)
                    print(
                        f"run {run + 1} {name}: {n} exported, rc {m.returncode}, "
                        f"{m.wall:.1f} s, {args.pairs / m.wall:.0f} pairs/s, "
                        f"{m.cpu:.1f} CPU s (stand-in {server:.1f} CPU s, busy "
                        f"{server / m.wall * 100:.0f}% of a core), peak RSS "
                        f"{m.peak_rss_mb:.0f} MB; {load()}",
                        flush=True,
                    )
                    if m.returncode != 0 or n != args.pairs:
                        print(m.stderr[-2000:])
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows, med = [], {}
    for name, rs in results.items():
        pps = median([args.pairs / m.wall for m, _ in rs])
        cpu = median([m.cpu / args.pairs * 1000 for m, _ in rs])
        rss = median([m.peak_rss_mb for m, _ in rs])
        ok = all(n == args.pairs and m.returncode == 0 for m, n in rs)
        busy = median([c / m.wall * 100 for c, (m, _) in zip(server_cpu[name], rs, strict=True)])
        own = median([m.cpu / m.wall * 100 for m, _ in rs])
        med[name] = (pps, cpu, rss)
        rows.append(
            [
                name,
                len(rs),
                f"{pps:.0f}",
                f"{cpu:.2f}",
                f"{own:.0f}%",
                f"{busy:.0f}%",
                f"{rss:.0f}",
                "yes" if ok else "NO",
            ]
        )
    print(
        f"\n{args.pairs} pairs, 1-6 KB CSVs, concurrency {args.concurrency}, "
        f"medians of {args.runs} runs; {machine()}"
    )
    print(
        table(
            [
                "contender",
                "runs",
                "pairs/s",
                "CPU s / 1k pairs",
                "own CPU busy",
                "stand-in CPU busy",
                "peak RSS MB",
                "all exported",
            ],
            rows,
        )
    )
    print("(CPU busy: CPU seconds over wall seconds, 100% = one of the cores)")
    if "baseline" in med:
        b_pps, b_cpu, b_rss = med["baseline"]
        for name in (n for n in med if n != "baseline"):
            a_pps, a_cpu, a_rss = med[name]
            print(
                f"\n{name} / baseline: {a_pps / b_pps:.2f}x pairs/s, "
                f"{a_cpu / b_cpu:.2f}x CPU per pair, {a_rss / b_rss:.2f}x peak RSS"
            )


if __name__ == "__main__":
    main()
