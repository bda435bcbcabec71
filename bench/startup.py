"""Start-up: `rtk-export --help` against `python -c pass`, same interpreter, same invocation.

python -m bench.startup [--runs 10]
"""

from __future__ import annotations

import argparse

from bench.common import PY, machine, median, run_measured, table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    cmds = {
        "python -c pass": [PY, "-c", "pass"],
        "python -m exporter --help": [PY, "-m", "exporter", "--help"],
        "python -m exporter verify --help": [PY, "-m", "exporter", "verify", "--help"],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    rss: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(args.runs):  # interleaved, so that a busy moment hits all alike
        for name, cmd in cmds.items():
            m = run_measured(cmd)
            assert m.returncode == 0, m.stderr
            times[name].append(m.wall * 1000)
            rss[name].append(m.peak_rss_mb)
    base = median(times["python -c pass"])
    print(f"median of {args.runs} runs; {machine()}")
    print(
        table(
            ["command", "ms", "over python -c pass, ms", "peak RSS MB"],
            [
                [k, f"{median(v):.0f}", f"{median(v) - base:.0f}", f"{median(rss[k]):.0f}"]
                for k, v in times.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
