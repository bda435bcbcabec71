"""Memory at scale: RSS of rtk-export as pairs accumulate, and of the SESSIONS reader alone.

    python -m bench.scale [--pairs 300000] [--marks 100000,300000] [--reader-lines 10000000]

Exports `--pairs` distinct pairs of tiny CSVs (one chat row) from the stand-in in its own
process with `--rate` unlimited, sampling the child's RSS (/proc) and the manifest's line
count twice a second; prints RSS at each mark, the growth per pair between the first and
the last mark, and the peak (ru_maxrss). Then reads SESSIONS files of 1/10 and all of
`--reader-lines` lines with the reader alone (no de-duplication) and compares peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import (
    PY,
    env,
    export_command,
    load,
    machine,
    run_measured,
    standin_process,
    table,
)

READER = """
import sys
from exporter.sessions import open_sessions, read_pairs
n = bad = 0
with open_sessions(sys.argv[1]) as fh:
    for item in read_pairs(fh):
        n += 1
print(n)
"""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def write_pairs(path: Path, n: int, apps: int) -> None:
    with open(path, "w", encoding="ascii") as fh:
        batch = []
        for i in range(n):
            batch.append(f"app{i % apps:04d} s-{i:09d}\n")
            if len(batch) == 10_000:
                fh.write("".join(batch))
                batch = []
        fh.write("".join(batch))


def export_run(pairs: int, marks: list[int], work: Path, concurrency: int) -> None:
    sessions = work / "sessions.txt"
    write_pairs(sessions, pairs, apps=1000)
    out = work / "out"
    manifest = out / "manifest.jsonl"
    seen: dict[int, tuple[int, float]] = {}
    samples: list[tuple[float, int, int]] = []
    with standin_process("--chat-rows", "1") as base_url:
        start = time.perf_counter()
        proc = subprocess.Popen(
            export_command(
                sessions, out, base_url, "--concurrency", str(concurrency), rate="1000000000/1s"
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env(),
            cwd=work,
        )
        lines, offset = 0, 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(manifest, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
                offset += len(data)
                lines += data.count(b"\n")
                rss = rss_kb(proc.pid)
            except OSError:  # not there yet, or the child just ended
                time.sleep(0.5)
                continue
            now = time.perf_counter() - start
            samples.append((now, lines, rss))
            for m in marks:
                if m not in seen and lines >= m:
                    seen[m] = (rss, now)
            time.sleep(0.5)
        wall = time.perf_counter() - start
    # The lines written after the last sample: without this read the count came out short.
    with open(manifest, "rb") as fh:
        fh.seek(offset)
        lines += fh.read().count(b"\n")
    code = os.waitstatus_to_exitcode(status)
    print(
        f"\nexport of {pairs} pairs (1-row CSVs, concurrency {concurrency}, --rate unlimited): "
        f"exit {code}, {lines} manifest lines, {wall:.0f} s, {pairs / wall:.0f} pairs/s, "
        f"peak RSS (ru_maxrss) {usage.ru_maxrss / 1024:.1f} MB; {load()}"
    )
    rows = [[m, f"{seen[m][1]:.0f}", f"{seen[m][0] / 1024:.1f}"] for m in marks if m in seen]
    print(table(["pairs done", "at s", "RSS MB"], rows))
    done = [m for m in marks if m in seen]
    if len(done) >= 2:
        (r1, _), (r2, _) = seen[done[0]], seen[done[-1]]
        per_pair = (r2 - r1) * 1024 / (done[-1] - done[0])
        print(
            f"RSS growth {done[0]} -> {done[-1]} pairs: {per_pair:.1f} bytes per pair; "
            f"extrapolated to 1,000,000 pairs: "
            f"{(r2 * 1024 + per_pair * (1_000_000 - done[-1])) / 2**20:.0f} MB"
        )
    # Every 10% of the run, for the README's curious reader.
    step = max(1, len(samples) // 10)
    print(
        "samples (s, pairs, RSS MB):",
        ", ".join(f"({t:.0f}, {n}, {r / 1024:.0f})" for t, n, r in samples[::step]),
    )


def reader_run(lines: int, work: Path) -> None:
    rows = []
    for n in (lines // 10, lines):
        path = work / f"sessions-{n}.txt"
        write_pairs(path, n, apps=1000)
        m = run_measured([PY, "-c", READER, str(path)])
        rows.append([n, m.stdout.strip(), f"{m.wall:.1f}", f"{m.peak_rss_mb:.1f}"])
        path.unlink()
    print("\nSESSIONS reader alone (exporter.sessions.read_pairs, no de-duplication)")
    print(table(["lines", "pairs read", "s", "peak RSS MB"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=300_000)
    p.add_argument("--marks", default="100000,300000")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--reader-lines", type=int, default=10_000_000)
    p.add_argument("--skip-export", action="store_true")
    args = p.parse_args()
    marks = sorted(int(m) for m in args.marks.split(","))
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-scale-"))
    try:
        if not args.skip_export:
            export_run(args.pairs, marks, work, args.concurrency)
        if args.reader_lines:
            reader_run(args.reader_lines, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
