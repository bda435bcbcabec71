"""The end of a run, told four ways: a human summary, a JSON object, Prometheus metrics, and
for --dry-run the plan. `Output` says which of them a run asked for."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.archive import write_atomic
from exporter.config import Settings
from exporter.manifest import Status
from exporter.stats import RunResult, Stats, new_run_id
from exporter.times import rfc3339

log = logging.getLogger("exporter")


@dataclass(frozen=True, slots=True)
class Output:
    """What a run reports besides its manifest: the live display, and the end-of-run files."""

    progress: str = "auto"  # auto (a terminal only), always, never
    summary_json: str | None = None  # a path, or "-" for standard output
    metrics_file: str | None = None
    notify_url: str | None = field(default=None, repr=False)  # a secret: its host alone is logged


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
        "retries_by_kind": dict(sorted(s.retries_by_kind.items())),
        "paused_seconds": round(s.paused_seconds, 3),
        "budget_wait_seconds": round(s.budget_wait_seconds, 3),
        "damaged_manifest_lines": s.damaged_lines,
        "pairs_per_second": round(done / result.seconds, 3) if result.seconds > 0 else 0.0,
        "run_id": result.run_id,
        "exit_code": exit_code,
    }


def summary_text(result: RunResult) -> str:
    s = result.stats
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())) or "nothing to do"
    text = (
        f"{counts}; {_size(s.bytes)} in {result.seconds:.1f} s; {s.api_requests} API "
        f"requests, {s.rate_limited} rate-limited (429), {s.url_refreshes} URL refreshes, "
        f"{s.retries} retries"
    )
    if s.retries_by_kind:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(s.retries_by_kind.items())) + ")"
    if s.paused_seconds or s.budget_wait_seconds:
        text += (
            f"; waited {s.paused_seconds:.0f} s in 429 pauses, "
            f"{s.budget_wait_seconds:.0f} s for the API budget"
        )
    if s.damaged_lines:
        text += f"; {s.damaged_lines} damaged manifest line(s) passed over"
    return text


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def write_metrics(path: Path, result: RunResult, exit_code: int) -> None:
    """node_exporter textfile format, replaced atomically by prometheus_client; the last
    success is carried over from the file it replaces."""
    # Imported here: a run that writes no metrics does not pay for the import at start-up.
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    s = result.stats
    now = time.time()
    last_success = now if exit_code == 0 else previous_success(path)
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, value: float) -> None:
        Gauge(name, help_text, registry=registry).set(value)

    pairs = Gauge(
        "rtk_export_pairs",
        "Manifest lines written by the last run, by status.",
        ["status"],
        registry=registry,
    )
    for status in Status:
        pairs.labels(status=status).set(s.counts.get(status, 0))
    gauge("rtk_export_bytes", "Bytes stored by the last run.", s.bytes)
    gauge("rtk_export_api_requests", "API requests made by the last run.", s.api_requests)
    gauge("rtk_export_rate_limited", "HTTP 429 answers received by the last run.", s.rate_limited)
    retries = Gauge(
        "rtk_export_retries",
        "Retries scheduled by the last run, by error kind.",
        ["kind"],
        registry=registry,
    )
    for kind, n in sorted(s.retries_by_kind.items()):
        retries.labels(kind=kind).set(n)
    gauge(
        "rtk_export_paused_seconds",
        "Seconds the last run spent in 429 pauses.",
        round(s.paused_seconds, 3),
    )
    gauge(
        "rtk_export_budget_wait_seconds",
        "Seconds the last run waited for the API budget (--rate), pauses aside.",
        round(s.budget_wait_seconds, 3),
    )
    gauge("rtk_export_duration_seconds", "Wall time of the last run.", round(result.seconds, 3))
    gauge("rtk_export_last_run_timestamp_seconds", "When the last run ended.", round(now, 3))
    if last_success is not None:
        gauge(
            "rtk_export_last_success_timestamp_seconds",
            "When a run last ended with exit code 0.",
            round(last_success, 3),
        )
    gauge("rtk_export_exit_code", "Exit code of the last run.", exit_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


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
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(Path(dest), text)


def report_end(output: Output, result: RunResult | None, code: int) -> None:
    """--summary-json and --metrics-file, whatever the exit code: a monitor must see a run
    that could not start as clearly as one that failed. A report that cannot be written is
    logged, never raised: the exit code is the run's. Then the end ping, if asked for."""
    result = result or RunResult(run_id=new_run_id(), stats=Stats())
    try:
        _write_reports(output, result, code)
    finally:  # a report that fails to be written must not keep the monitor from hearing of it
        from exporter.notify import ping_end

        ping_end(output.notify_url, code, f"rtk-export exit {code}: {summary_text(result)}")


def _write_reports(output: Output, result: RunResult, code: int) -> None:
    try:
        if output.summary_json:
            write_summary_json(output.summary_json, summary_dict(result, code))
        if output.metrics_file:
            write_metrics(Path(output.metrics_file), result, code)
    except OSError as exc:
        log.error(
            "rtk-export: cannot write the run's report: %s: %s",
            exc.strerror,
            exc.filename,
            extra={"event": "os_error"},
        )


def plan_text(settings: Settings, result: RunResult) -> str:
    """--dry-run: units to export and skip by kind, invalid lines, requests, time at --rate."""
    plan = result.plan

    def by_kind(what: str) -> str:
        parts = [f"{k} {plan[f'{what}:{k}']}" for k in settings.kinds if plan.get(f"{what}:{k}")]
        return f" ({', '.join(parts)})" if parts else ""

    needed, made = plan.get("export", 0), result.stats.api_requests
    per_second = settings.rate.requests / settings.rate.seconds
    eta = max(0.0, (made + needed - settings.rate.requests) / per_second)
    lines = [
        f"plan: {needed} to export{by_kind('export')}, {plan.get('skip', 0)} to skip"
        f"{by_kind('skip')} (already exported, intact), {result.invalid_lines} invalid "
        "line(s)"
    ]
    for app, r in result.apps.items():
        lines.append(
            f"  app {app}: sessions started in [{rfc3339(r.since)}, "
            f"{rfc3339(r.until)}): {r.listed} listed in {r.pages} page(s), "
            f"{r.ended} ENDED (breakout rooms included), {r.live} LIVE (not "
            f"exported, remembered), {r.looked_up} remembered LIVE looked up"
            + ("" if r.complete else "; LISTING INCOMPLETE")
        )
    if result.failed_retried:
        lines.append(
            f"  {result.failed_retried} pair(s) that failed in the last 7 days "
            "retried whatever the window"
        )
    made_text = f"{made} made to list sessions, " if settings.apps else ""
    lines.append(
        f"API requests: {made_text}at least {needed} to export (one URL per unit; "
        "retries and expired URLs add more)"
    )
    lines.append(
        f"estimated time at --rate {settings.rate}: about {eta:.0f} s"
        + (" (within the burst)" if eta == 0 else "")
    )
    return "\n".join(lines)
