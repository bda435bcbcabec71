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
    compiled_tree,
    env,
    export_command,
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
        res: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
        with standin_process() as url:
            for r in range(args.runs):
                for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    e = env()
                    e["PYTHONPATH"] = str(roots[name])
                    if name == "B":
                        e.update(kv.split("=", 1) for kv in args.b_env)
                    out = work / f"o{name}{r}"
                    m = run_measured(
                        export_command(sessions, out, url, "--summary-json", str(out / "sum.json")),
                        environ=e,
                        cwd=work,
                    )
                    counts = json.loads((out / "sum.json").read_text())["counts"]
                    assert counts == {"exported": args.pairs}, counts
                    per_pair = 1000 / args.pairs
                    res[name].append((args.pairs / m.wall, m.user * per_pair, m.sys * per_pair))
                    pps, user, sys_ = res[name][-1]
                    print(
                        f"run {r + 1} {name}: {pps:.0f} pairs/s, {user + sys_:.3f} CPU ms per "
                        f"pair ({user:.3f} user + {sys_:.3f} system)",
                        flush=True,
                    )
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args.rev, args.rev_b or "working tree", res)


def report(rev_a: str, rev_b: str, res: dict[str, list[tuple[float, float, float]]]) -> None:
    def cpu(x: tuple[float, float, float]) -> float:
        return x[1] + x[2]

    for k, label in (("A", rev_a), ("B", rev_b)):
        v = res[k]
        print(
            f"{k} ({label}): {median([x[0] for x in v]):.0f} pairs/s, "
            f"{median([cpu(x) for x in v]):.3f} CPU ms per pair "
            f"({median([x[1] for x in v]):.3f} user + {median([x[2] for x in v]):.3f} system)"
        )
    a, b = res["A"], res["B"]
    print(
        f"B/A: pairs/s {median([x[0] for x in b]) / median([x[0] for x in a]):.3f}, CPU per "
        f"pair {median([cpu(x) for x in b]) / median([cpu(x) for x in a]):.3f}"
    )
    # Each round's two runs ran back to back, under the same load: the ratio within a round
    # leaves out the drift between rounds (on these machines one run's CPU per pair moved by
    # up to 25% over a few minutes, file creation and fsync time above all).
    rounds = list(zip(a, b, strict=True))
    for what, f in (
        ("pairs/s", lambda x: x[0]),
        ("CPU per pair", cpu),
        ("user CPU per pair", lambda x: x[1]),
    ):
        ratios = sorted(f(y) / f(x) for x, y in rounds)
        print(
            f"B/A within rounds, median (min-max): {what} {median(ratios):.3f} "
            f"({ratios[0]:.3f}-{ratios[-1]:.3f})"
        )


if __name__ == "__main__":
    main()
