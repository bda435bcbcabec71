"""One big file: a 1 GB chat CSV over loopback, rtk-export against `curl -o` on the same URL.

    python -m bench.bigfile [--bytes 1073741824] [--runs 3]

The stand-in (its own process) serves every chat CSV at exactly `--bytes` bytes. Each run
asks the API for a fresh presigned URL and has curl fetch it, and has rtk-export export the
same pair (API request, download, SHA-256, fsync, rename); they alternate which goes first.
Prints median MB/s and peak RSS of each, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import urllib.request
from pathlib import Path

from bench.common import (
    ACCOUNT,
    TOKEN,
    Measured,
    export_command,
    load,
    machine,
    median,
    run_measured,
    standin_process,
    table,
)

CURL = shutil.which("curl") or "/usr/bin/curl"


def fresh_url(base_url: str, app: str, sid: str) -> str:
    req = urllib.request.Request(
        f"{base_url}/accounts/{ACCOUNT}/realtime/kit/{app}/sessions/{sid}/chat",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(req) as resp:
        return str(json.load(resp)["data"]["chat_download_url"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bytes", type=int, default=1 << 30)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-big-"))
    results: dict[str, list[Measured]] = {"curl -o": [], "rtk-export": []}
    try:
        with standin_process("--chat-bytes", str(args.bytes)) as base_url:
            for run in range(args.runs):
                order = ["curl -o", "rtk-export"] if run % 2 == 0 else ["rtk-export", "curl -o"]
                for name in order:
                    sid = f"big-{run}-{name[:4]}"
                    if name == "curl -o":
                        target = work / "curl.csv"
                        m = run_measured(
                            [CURL, "-sS", "-o", str(target), fresh_url(base_url, "bigapp", sid)]
                        )
                        size = target.stat().st_size
                        target.unlink()
                    else:
                        sessions = work / "one.txt"
                        sessions.write_text(f"bigapp {sid}\n")
                        out = work / "out"
                        m = run_measured(export_command(sessions, out, base_url, rate="1000/1s"))
                        size = (out / "bigapp" / f"{sid}.csv").stat().st_size
                        shutil.rmtree(out)
                    ok = m.returncode == 0 and size == args.bytes
                    results[name].append(m)
                    print(
                        f"run {run + 1} {name}: rc {m.returncode}, {size} bytes "
                        f"({'ok' if ok else 'WRONG'}), {m.wall:.2f} s, "
                        f"{args.bytes / m.wall / 1e6:.0f} MB/s, peak RSS "
                        f"{m.peak_rss_mb:.0f} MB; {load()}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {
        k: (
            median([args.bytes / m.wall / 1e6 for m in v]),
            median([m.peak_rss_mb for m in v]),
            median([m.cpu for m in v]),
        )
        for k, v in results.items()
    }
    print(f"\n{args.bytes} bytes over loopback, medians of {args.runs} runs; {machine()}")
    print(
        table(
            ["contender", "MB/s", "peak RSS MB", "CPU s"],
            [[k, f"{v[0]:.0f}", f"{v[1]:.1f}", f"{v[2]:.1f}"] for k, v in med.items()],
        )
    )
    print(f"\nrtk-export / curl: {med['rtk-export'][0] / med['curl -o'][0]:.2f}x throughput")


if __name__ == "__main__":
    main()
