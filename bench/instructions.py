"""Instructions, not seconds: the event loop's work per pair and at start-up, revision A
against B (default: the working tree), counted by valgrind's callgrind.

    python -m bench.instructions REV_A [REV_B] [--pairs 500]

Each tree runs twice under `valgrind --tool=callgrind --separate-threads=yes`, from compiled
bytecode (`common.compiled_tree`), against one stand-in: with one pair (start-up and the fixed
costs) and with `--pairs` pairs; the difference over `pairs - 1` is the main thread's
instructions per pair. Counts repeat whatever else the machine does (two runs of the same tree
gave 2,118.2M and 2,119.1M in all; per-pair figures of the same code agreed to 0.4% across
invocations), where CPU seconds here move by 25% between runs: the writer threads' time is
mostly the kernel's (file creation and fsync), which this leaves out, and it does not see cache
misses or waits. Needs Debian's `valgrind`; a run takes about 70 times as long as without it."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import compiled_tree, env, export_command, standin_process, write_sessions


def main_thread_instructions(
    tree: Path, sessions: Path, pairs: int, base_url: str, work: Path
) -> int:
    """Instructions the main thread ran in one export of `sessions`' first `pairs` lines."""
    lines = sessions.read_text().splitlines()[:pairs]
    run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    (run / "s.txt").write_text("\n".join(lines) + "\n")
    e = env()
    e["PYTHONPATH"] = str(tree)
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={run}/cg.out",
        *export_command("s.txt", "o", base_url, "--summary-json", "o/sum.json"),
    ]
    subprocess.run(cmd, env=e, cwd=run, check=True, capture_output=True, timeout=1800)
    counts = json.loads((run / "o" / "sum.json").read_text())["counts"]
    assert counts == {"exported": pairs}, counts
    # --separate-threads writes one file per thread; thread 1 (suffix -01) is the event loop.
    main = (run / "cg.out-01").read_text()
    total = re.search(r"^totals: (\d+)", main, re.M) or re.search(r"^summary: (\d+)", main, re.M)
    assert total, "no totals line in callgrind's output"
    shutil.rmtree(run)
    return int(total.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev")
    p.add_argument("rev_b", nargs="?")
    p.add_argument("--pairs", type=int, default=500)
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-ins-"))
    try:
        trees = {
            "A": compiled_tree(work / "a", args.rev),
            "B": compiled_tree(work / "b", args.rev_b),
        }
        sessions = write_sessions(work / "s.txt", args.pairs)
        jobs = [(name, n) for name in trees for n in (1, args.pairs)]
        with standin_process() as url, ThreadPoolExecutor(2) as pool:  # one per core
            counts = dict(
                zip(
                    jobs,
                    pool.map(
                        lambda job: main_thread_instructions(
                            trees[job[0]], sessions, job[1], url, work
                        ),
                        jobs,
                    ),
                    strict=True,
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_pair = {k: (counts[(k, args.pairs)] - counts[(k, 1)]) / (args.pairs - 1) for k in trees}
    for k, label in (("A", args.rev), ("B", args.rev_b or "working tree")):
        print(
            f"{k} ({label}): start-up and one pair {counts[(k, 1)] / 1e6:,.1f}M instructions, "
            f"then {per_pair[k] / 1e3:,.1f}k per pair (event loop thread)"
        )
    print(
        f"B/A: per pair {per_pair['B'] / per_pair['A']:.3f}, start-up "
        f"{counts[('B', 1)] / counts[('A', 1)]:.3f}"
    )


if __name__ == "__main__":
    main()
