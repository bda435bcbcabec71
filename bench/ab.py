"""A/B of rtk-export's CPU per pair: the exporter/ of git revision A against B (default: the
working tree).

    python -m bench.ab REV_A [REV_B] [--pairs 5000] [--runs 8]

Same stand-in process, same SESSIONS, runs interleaved (A B, B A, ...) so that the other
load on a shared machine falls on both alike; prints medians and the B/A ratios. The children
run in a scratch folder: with `python -m`, the current folder comes first on sys.path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.common import (
    PY,
    compiled_tree,
    env,
    median,
    run_measured,
    standin_process,
    write_sessions,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev")
    p.add_argument("rev_b", nargs="?")
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument(
        "--b-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in B's environment only (to compare a switch in one tree)",
    )
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-ab-"))
    try:
        roots = {
            "A": compiled_tree(work / "a", args.rev),
            "B": compiled_tree(work / "b", args.rev_b),
        }
        sessions = write_sessions(work / "s.txt", args.pairs)
        res: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
        with standin_process() as url:
            for r in range(args.runs):
                for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    e = env()
                    e["PYTHONPATH"] = str(roots[name])
                    if name == "B":
                        e.update(kv.split("=", 1) for kv in args.b_env)
                    out = work / f"o{name}{r}"
                    m = run_measured(
                        [
                            PY,
                            "-m",
                            "exporter",
                            str(sessions),
                            "--out",
                            str(out),
                            "--base-url",
                            url,
                            "--rate",
                            "1000000/1s",
                            "--progress",
                            "never",
                            "--summary-json",
                            str(out / "sum.json"),
                        ],
                        environ=e,
                        cwd=work,
                    )
                    counts = json.loads((out / "sum.json").read_text())["counts"]
                    assert counts == {"exported": args.pairs}, counts
                    res[name].append((args.pairs / m.wall, m.cpu / args.pairs * 1000))
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: (median([x[0] for x in v]), median([x[1] for x in v])) for k, v in res.items()}
    for k, (pps, cpu) in med.items():
        label = args.rev if k == "A" else (args.rev_b or "working tree")
        print(f"{k} ({label}): {pps:.0f} pairs/s, {cpu:.3f} CPU ms per pair")
    print(
        f"B/A: pairs/s {med['B'][0] / med['A'][0]:.3f}, CPU per pair "
        f"{med['B'][1] / med['A'][1]:.3f}"
    )


if __name__ == "__main__":
    main()
