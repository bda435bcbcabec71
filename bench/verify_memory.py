"""Peak RSS of `rtk-export verify` on synthetic archives of growing size (flat is the goal).

    python bench/verify_memory.py --files 10000 100000

Builds DIR/<app>/<session>.csv files with a manifest naming them under a temporary folder,
then runs `python -m exporter verify DIR` in a subprocess per size and reads its peak RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path, n: int) -> None:
    lines = []
    for i in range(n):
        app = f"app{i % 10}"
        body = f"id,payload\n{i},hello {i}\n".encode()
        (out / app).mkdir(parents=True, exist_ok=True)
        (out / app / f"s{i:07d}.csv").write_bytes(body)
        lines.append(
            json.dumps(
                {
                    "app_id": app,
                    "session_id": f"s{i:07d}",
                    "kind": "chat",
                    "status": "exported",
                    "path": f"{app}/s{i:07d}.csv",
                    "bytes": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "attempts": 2,
                    "error": None,
                    "finished_at": "x",
                    "run_id": "bench",
                }
            )
        )
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, int]:
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stderr.close()  # type: ignore[union-attr]
    return usage.ru_maxrss / 1024, time.monotonic() - start, os.waitstatus_to_exitcode(status)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--build", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.build:
        build(Path(args.build[0]), int(args.build[1]))
        return
    print(f"{'files':>9} {'peak RSS MB':>12} {'seconds':>8} exit")
    for n in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            # Built in a child: a child forked from a big parent starts with the parent's
            # resident pages, and ru_maxrss would report them as its own.
            subprocess.run([sys.executable, __file__, "--build", tmp, str(n)], check=True)
            rss, secs, code = peak_rss_mb([sys.executable, "-m", "exporter", "verify", tmp])
            print(f"{n:>9} {rss:>12.1f} {secs:>8.1f} {code}")


if __name__ == "__main__":
    main()
