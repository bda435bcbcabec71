"""The benchmarks still run: tiny inputs, no timing asserted (a benchmark is not a test)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT


def _bench(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_export_benchmark_runs_on_a_few_pairs() -> None:
    """bench.export10k exports every pair it was given and prints its table."""
    out = _bench("bench.export10k", "--pairs", "20", "--runs", "1")
    assert '{"exported": 20}' in out
    assert "median:" in out


def test_the_start_up_benchmark_runs() -> None:
    """bench.startup times `--help` against `python -c pass` and prints both."""
    out = _bench("bench.startup", "--runs", "1")
    assert "python -m exporter --help" in out
    assert "python -c pass" in out


def test_the_media_benchmarks_run() -> None:
    """bench.media compares attachments with curl --parallel and a recording with curl -o."""
    out = _bench("bench.media", "attachments", "--count", "12", "--runs", "1")
    assert "rtk-export / curl wall time" in out
    out = _bench("bench.media", "recording", "--bytes", str(64 << 20))
    assert "x throughput" in out and "rerun" in out


def test_the_render_benchmark_runs_on_a_few_sessions() -> None:
    """bench.render renders every session, then one changed session alone on the rerun."""
    out = _bench("bench.render", "--sessions", "5", "--messages", "3")
    assert "render: 5 sessions rendered" in out
    assert "render: 1 sessions rendered, 4 unchanged" in out


def test_the_object_storage_benchmark_runs_on_a_few_pairs() -> None:
    """bench.s3 exports to moto directly and through DIR + rclone, and prints both."""
    out = _bench("bench.s3", "--pairs", "10", "--runs", "1", "--big-bytes", "0")
    assert "rtk-export --out s3://" in out
    assert "DIR + rclone / direct" in out


def test_the_search_benchmark_runs_on_a_few_sessions() -> None:
    """bench.search builds the index, runs its queries against rg -i, then updates it."""
    out = _bench("bench.search", "--sessions", "20", "--messages", "10", "--runs", "2")
    assert "index updated: 20 session(s) read" in out
    assert "rg -i / search" in out
    assert "index updated: 1 session(s) read, 0 removed" in out


def test_the_serve_benchmark_runs_on_a_few_deliveries() -> None:
    """bench.serve acknowledges every delivery it sends, keeps each one it acknowledged, and
    exports webhook units without an API request."""
    out = _bench(
        "bench.serve",
        *("--units", "20", "--ack-deliveries", "60", "--rss-deliveries", "100"),
        *("--ceiling", "50"),
    )
    assert "!!" not in out  # every delivery acknowledged, every acknowledged one kept
    assert "API requests serve made: 0;" in out
    assert "ratio webhooks / export" in out
    assert "VmHWM (peak) MB" in out
