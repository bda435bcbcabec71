"""Does the live progress display slow the export? Same export, bar on a pty vs no bar.

    python bench/progress_overhead.py --pairs 3000 --runs 3

Starts the stand-in in its own process, then alternates runs of rtk-export with
`--progress always` (stderr on a pseudo-terminal, drained) and `--progress never`, and prints
the median wall time of each and their ratio. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def start_standin() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.standin", "--token", TOKEN, "--account-id", "bench"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.split("=", 1)[1]


def one_run(base_url: str, sessions: Path, out: Path, bar: bool) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the child's own) of one export."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_ACCOUNT_ID": "bench",
        "CLOUDFLARE_BASE_URL": base_url,
        "TERM": "xterm",
        "COLUMNS": "120",
    }
    cmd = [
        sys.executable,
        "-m",
        "exporter",
        str(sessions),
        "--out",
        str(out),
        "--rate",
        "1000000/1s",
        "--progress",
        "always" if bar else "never",
    ]
    start = time.monotonic()
    if bar:
        master, slave = pty.openpty()
        proc = subprocess.Popen(cmd, env=env, stderr=slave, stdout=subprocess.DEVNULL)
        os.close(slave)
        drained = threading.Thread(target=_drain, args=(master,), daemon=True)
        drained.start()
    else:
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # the child's rusage: CPU is steadier than wall
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if bar:
        drained.join(10)
    assert proc.returncode == 0, f"run failed with {proc.returncode}"
    return wall, usage.ru_utime + usage.ru_stime


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=3000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    server, base_url = start_standin()
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sessions = Path(tmp, "s.txt")
            sessions.write_text("".join(f"app{i % 7} s{i:07d}\n" for i in range(args.pairs)))
            for run in range(args.runs):
                for bar in (run % 2 == 0, run % 2 != 0):  # alternate which goes first
                    wall, used = one_run(base_url, sessions, Path(tmp, f"o{run}{bar}"), bar)
                    times[bar].append(wall)
                    cpu[bar].append(used)
    finally:
        server.terminate()
        server.wait(10)
    with_bar, without = statistics.median(times[True]), statistics.median(times[False])
    print(f"pairs {args.pairs}, runs {args.runs} each, medians:")
    print(f"  --progress never   {without:7.2f} s  {args.pairs / without:8.0f} pairs/s")
    print(f"  --progress always  {with_bar:7.2f} s  {args.pairs / with_bar:8.0f} pairs/s")
    print(f"  ratio bar/no bar   {with_bar / without:7.3f}  (pairs/s: {without / with_bar:.3f}x)")
    cpu_bar, cpu_none = statistics.median(cpu[True]), statistics.median(cpu[False])
    print(f"  CPU s, never/always {cpu_none:.2f} / {cpu_bar:.2f}: ratio {cpu_bar / cpu_none:.3f}")


if __name__ == "__main__":
    main()
