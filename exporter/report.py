"""The end of a run, told three ways: a human summary, a JSON object, Prometheus metrics."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from exporter.pipeline import RunResult


def summary_dict(result: RunResult, exit_code: int) -> dict[str, Any]:
    s = result.stats
    done = sum(s.counts.values())
    return {
        "counts": dict(sorted(s.counts.items())),
        "bytes": s.bytes,
        "seconds": round(result.seconds, 3),
        "api_requests": s.api_requests,
        "rate_limited": s.rate_limited,
        "url_refreshes": s.url_refreshes,
        "retries": s.retries,
        "pairs_per_second": round(done / result.seconds, 3) if result.seconds > 0 else 0.0,
        "run_id": result.run_id,
        "exit_code": exit_code,
    }


def summary_text(result: RunResult) -> str:
    s = result.stats
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())) or "nothing to do"
    return (f"{counts}; {_size(s.bytes)} in {result.seconds:.1f} s; {s.api_requests} API "
            f"requests, {s.rate_limited} rate-limited (429), {s.url_refreshes} URL refreshes, "
            f"{s.retries} retries")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named like a download's temporary file (download.is_temp_name), so that one left in DIR
    # by a kill is removed by the next run and ignored by verify.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".rtk-export-{path.name}.",
                               suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def metrics_text(result: RunResult, exit_code: int, previous_success: float | None) -> str:
    """node_exporter textfile format; the last success is carried over from the last file."""
    s = result.stats
    now = time.time()
    last_success = now if exit_code == 0 else previous_success
    out = [
        "# HELP rtk_export_pairs Manifest lines written by the last run, by status.",
        "# TYPE rtk_export_pairs gauge",
    ]
    for status in ("exported", "skipped", "failed", "invalid", "unavailable"):
        out.append(f'rtk_export_pairs{{status="{status}"}} {s.counts.get(status, 0)}')
    gauges = [
        ("rtk_export_bytes", "Bytes stored by the last run.", s.bytes),
        ("rtk_export_api_requests", "API requests made by the last run.", s.api_requests),
        ("rtk_export_rate_limited", "HTTP 429 answers received by the last run.",
         s.rate_limited),
        ("rtk_export_duration_seconds", "Wall time of the last run.", round(result.seconds, 3)),
        ("rtk_export_last_run_timestamp_seconds", "When the last run ended.", round(now, 3)),
    ]
    if last_success is not None:
        gauges.append(("rtk_export_last_success_timestamp_seconds",
                       "When a run last ended with exit code 0.", round(last_success, 3)))
    gauges.append(("rtk_export_exit_code", "Exit code of the last run.", exit_code))
    for name, help_text, value in gauges:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    return "\n".join(out) + "\n"


def previous_success(path: Path) -> float | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("rtk_export_last_success_timestamp_seconds "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def write_summary_json(dest: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, sort_keys=False) + "\n"
    if dest == "-":
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(Path(dest), text)
