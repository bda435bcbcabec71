"""The export issue's figures: 10,000 pairs against the stand-in with `--rate 1000000/1s`.

    python -m bench.export10k [--pairs 10000] [--runs 3]

The stand-in runs in its own process (1-6 KB CSVs, no faults); rtk-export is run as a user
would, `python -m exporter SESSIONS --out DIR --rate 1000000/1s`, into a fresh folder each
time. Prints each run's exit code and counts, and medians of wall time, pairs/s, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.common import (
    export_command,
    load,
    machine,
    median,
    run_measured,
    standin_process,
    table,
    write_sessions,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-10k-"))
    rows, walls, rss = [], [], []
    try:
        sessions = write_sessions(work / "sessions.txt", args.pairs)
        with standin_process() as base_url:
            for run in range(args.runs):
                out = work / f"out-{run}"
                cmd = export_command(
                    sessions, out, base_url, "--summary-json", str(out / "summary.json")
                )
                m = run_measured(cmd)
                doc = json.loads((out / "summary.json").read_text())
                rows.append(
                    [
                        run + 1,
                        m.returncode,
                        json.dumps(doc["counts"]),
                        f"{m.wall:.1f}",
                        f"{args.pairs / m.wall:.0f}",
                        f"{m.peak_rss_mb:.0f}",
                    ]
                )
                walls.append(m.wall)
                rss.append(m.peak_rss_mb)
                print(f"run {run + 1}: {load()}", flush=True)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.pairs} pairs, default concurrency; {machine()}")
    print(
        "command: CLOUDFLARE_API_TOKEN=... CLOUDFLARE_ACCOUNT_ID=... python -m exporter "
        "SESSIONS --out DIR --base-url STANDIN --rate 1000000/1s --progress never"
    )
    print(table(["run", "exit", "counts", "wall s", "pairs/s", "peak RSS MB"], rows))
    print(
        f"median: {median(walls):.1f} s, {args.pairs / median(walls):.0f} pairs/s, "
        f"peak RSS {median(rss):.0f} MB"
    )


if __name__ == "__main__":
    main()
