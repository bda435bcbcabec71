"""The command line: arguments and environment -> Settings; logging; exit codes; nothing else."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter import __version__
from exporter.config import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE,
    KINDS,
    TRANSCRIPT_FORMATS,
    Rate,
    RetryPolicy,
    Settings,
    Timeouts,
)
from exporter.spans import parse_span
from exporter.urls import is_loopback_host

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_STOPPED, EXIT_CUT_SHORT, EXIT_LOCKED = 0, 1, 2, 3, 75
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

DESCRIPTION = """\
Export the chat (and optionally transcript and summary) of many Cloudflare RealtimeKit
sessions: paced under the API rate limit, retried, stored atomically, recorded in a manifest,
resumable. The token comes from CLOUDFLARE_API_TOKEN only.

  rtk-export SESSIONS --out DIR [options]     export the pairs listed in SESSIONS ('-' = stdin)
  rtk-export --app APP_ID [--app ...] [--since WHEN] [--until WHEN] --out DIR [options]
                                              list each app's sessions started in [since,
                                              until) and export the ENDED ones
  rtk-export demo [--discover] [--out DIR]    a real export against the built-in local stand-in
  rtk-export verify DIR [--manifest PATH]     re-hash the archive against its manifest
"""

EPILOG = """\
exit codes: 0 all exported or skipped; 1 some failed or invalid; 2 could not start or stopped
early (bad arguments, credentials, disk); 3 stopped by --max-duration with pairs left;
75 DIR locked by another run; 130/143 interrupted by SIGINT/SIGTERM.
"""


class UsageError(Exception):
    """Bad arguments or environment: one clear line, exit 2, before any request."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtk-export", description=DESCRIPTION, epilog=EPILOG,
        # A fixed width keeps --help identical on every terminal (the README quotes it).
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100))
    p.add_argument("sessions", metavar="SESSIONS", nargs="?",
                   help="file of 'APP_ID SESSION_ID' lines, or '-' for standard input")
    p.add_argument("--app", metavar="APP_ID", action="append", default=[],
                   help="discover the sessions of this app instead of reading SESSIONS "
                   "(repeatable)")
    p.add_argument("--since", metavar="WHEN",
                   help="with --app: sessions started at or after WHEN: RFC 3339, a date "
                   "(midnight UTC), a span back from now (36h, 7d) or last-run (default: "
                   "last-run if there was one, else 7d)")
    p.add_argument("--until", metavar="WHEN",
                   help="with --app: sessions started before WHEN (default now)")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="where CSVs and the manifest go (created if missing)")
    p.add_argument("--manifest", metavar="PATH", help="manifest file (default DIR/manifest.jsonl)")
    p.add_argument("--account-id", help="Cloudflare account id (else env CLOUDFLARE_ACCOUNT_ID)")
    p.add_argument("--base-url", help="API base URL (else env CLOUDFLARE_BASE_URL, else "
                   f"{DEFAULT_BASE_URL})")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                   help=f"units in flight at once (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--rate", default=DEFAULT_RATE, metavar="N/Ws",
                   help=f"API request budget, a sliding window (default {DEFAULT_RATE})")
    p.add_argument("--include", default="chat", metavar="KINDS",
                   help="what to export: any of chat,transcript,summary (default chat)")
    p.add_argument("--transcript-format", default="csv", choices=TRANSCRIPT_FORMATS,
                   help="transcript file format (default csv)")
    p.add_argument("--max-duration", metavar="SPAN",
                   help="start no new pair after SPAN (50m, 2h); exit 3 if pairs were left")
    p.add_argument("--max-attempts", type=int, default=RetryPolicy().max_attempts, metavar="N",
                   help="failed attempts before a pair is 'failed' (429s and expired URLs "
                   "do not count; default %(default)s)")
    p.add_argument("--connect-timeout", type=float, default=Timeouts().connect, metavar="S",
                   help="seconds to connect (default %(default)s)")
    p.add_argument("--request-timeout", type=float, default=Timeouts().api, metavar="S",
                   help="seconds for one whole API request (default %(default)s)")
    p.add_argument("--read-timeout", type=float, default=Timeouts().read, metavar="S",
                   help="longest silence while downloading, in seconds (default %(default)s)")
    p.add_argument("--summary-json", metavar="PATH",
                   help="write a JSON summary of the run at the end ('-' = stdout)")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="write Prometheus textfile metrics at the end (atomically)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="stderr lines as text (default) or one JSON object a line")
    p.add_argument("--dry-run", action="store_true",
                   help="read the input and print the plan; request no download URL")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="live progress display (default: on a terminal only)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log every pair")
    p.add_argument("--version", action="version", version=f"rtk-export {__version__}")
    return p


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Resolve arguments and environment into Settings, or raise UsageError naming the value."""
    token = environ.get("CLOUDFLARE_API_TOKEN", "")
    if not token:
        raise UsageError("CLOUDFLARE_API_TOKEN is not set (the token is read from the "
                         "environment only, never from the command line)")
    account = args.account_id or environ.get("CLOUDFLARE_ACCOUNT_ID", "")
    if not account:
        raise UsageError("no account id: pass --account-id or set CLOUDFLARE_ACCOUNT_ID")
    base_url = args.base_url or environ.get("CLOUDFLARE_BASE_URL") or DEFAULT_BASE_URL
    if not base_url.startswith(("https://", "http://")):
        raise UsageError(f"--base-url must be an http(s) URL, got {base_url!r}")
    if base_url.startswith("http://") and not is_loopback_host(urlsplit(base_url).hostname):
        # The token would cross the network in clear text.
        raise UsageError(f"--base-url must be https (plain http only to a loopback address), "
                         f"got {base_url!r}")
    apps = tuple(dict.fromkeys(args.app))
    if args.sessions is not None and apps:
        raise UsageError("SESSIONS and --app do not combine: export a list, or discover by app")
    if args.sessions is None and not apps:
        raise UsageError("SESSIONS is required: a file of 'APP_ID SESSION_ID' lines, or '-'; "
                         "or discover sessions with --app APP_ID")
    if apps:
        check_discovery(apps, args.since, args.until)
    elif args.since or args.until:
        raise UsageError("--since and --until select sessions to discover: use them with --app")
    if args.sessions is not None and args.sessions != "-" and not os.path.isfile(args.sessions):
        raise UsageError(f"SESSIONS file not found: {args.sessions}")
    if (args.sessions is not None and args.sessions != "-"
            and not os.access(args.sessions, os.R_OK)):
        raise UsageError(f"SESSIONS file is not readable: {args.sessions}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.max_attempts < 1:
        raise UsageError(f"--max-attempts must be at least 1, got {args.max_attempts}")
    try:
        rate = Rate.parse(args.rate)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    kinds = tuple(k.strip() for k in args.include.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise UsageError(f"--include takes chat,transcript,summary; got {args.include!r}")
    max_duration = None
    if args.max_duration:
        try:
            max_duration = parse_span(args.max_duration)
        except ValueError as exc:
            raise UsageError(f"--max-duration: {exc}") from None
    for name in ("connect_timeout", "request_timeout", "read_timeout"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    out = Path(args.out)
    manifest = Path(args.manifest) if args.manifest else out / "manifest.jsonl"
    return Settings(
        token=token, account_id=account, base_url=base_url, sessions=args.sessions,
        apps=apps, since=args.since, until=args.until,
        out_dir=out, manifest_path=manifest, concurrency=args.concurrency, rate=rate,
        retry=RetryPolicy(max_attempts=args.max_attempts),
        timeouts=Timeouts(connect=args.connect_timeout, api=args.request_timeout,
                          read=args.read_timeout),
        kinds=tuple(dict.fromkeys(kinds)), transcript_format=args.transcript_format,
        dry_run=args.dry_run, max_duration=max_duration)


def check_discovery(apps: tuple[str, ...], since: str | None, until: str | None) -> None:
    """App ids as SESSIONS checks them; WHEN texts that parse; a window that is not empty."""
    from datetime import UTC, datetime

    from exporter.discovery import parse_when
    from exporter.sessions import app_id_problem

    for app in apps:
        if problem := app_id_problem(app):
            raise UsageError(f"--app: {problem}")
    now = datetime.now(UTC)
    moments = {}
    for name, text in (("since", since), ("until", until)):
        if text is None:
            continue
        try:
            moments[name] = parse_when(text, now)
        except ValueError as exc:
            raise UsageError(f"--{name}: {exc}") from None
    if until is not None and moments["until"] is None:
        raise UsageError("--until last-run means nothing: last-run is a --since")
    start, end = moments.get("since"), moments.get("until") or now
    if start is not None and start >= end:
        raise UsageError(f"--since {since} is not before --until {until or 'now'}: the window "
                         "is empty")


def check_writable(settings: Settings) -> None:
    """Fail before any request if DIR or the manifest cannot be written.

    By writing, not by asking os.access(): that says yes to root whatever the modes, and
    knows nothing of read-only bind mounts or file systems that refuse new files.
    """
    for folder in dict.fromkeys((settings.out_dir, settings.manifest_path.parent)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {folder}: {exc.strerror}") from None
        try:
            # Named like a download's temporary file, so a run killed right here leaves
            # nothing the next run does not clean up.
            fd, probe = tempfile.mkstemp(prefix=".rtk-export-probe-", suffix=".part",
                                         dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UsageError(f"cannot write to {folder}: {exc.strerror}") from None
    m = settings.manifest_path
    if m.is_dir():
        raise UsageError(f"the manifest {m} is a directory")
    if m.exists():
        try:
            open(m, "ab").close()
        except OSError as exc:
            raise UsageError(f"cannot write the manifest {m}: {exc.strerror}") from None


def exit_code(result: object) -> int:
    from exporter.pipeline import RunResult

    assert isinstance(result, RunResult)
    if result.fatal is not None:
        return EXIT_STOPPED
    if result.stopped_by is not None:
        return EXIT_SIGNAL.get(signal.Signals(result.stopped_by), 128 + result.stopped_by)
    if result.cut_short or result.left:
        return EXIT_CUT_SHORT
    if result.stats.counts.get("failed") or result.invalid_lines:
        return EXIT_FAILED
    return EXIT_OK


class Interrupted(BaseException):
    """SIGINT or SIGTERM outside the run's own signal watcher (start-up, the final reports).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def catch_signals() -> None:
    """Turn SIGINT/SIGTERM into Interrupted, so that they exit 130/143, never a bare kill.

    Called again after the event loop ends: asyncio puts the default handlers back when the
    run's signal watcher closes.
    """
    for signum in EXIT_SIGNAL:
        signal.signal(signum, _interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    catch_signals()
    try:
        return _main(argv)
    except Interrupted as exc:
        return EXIT_SIGNAL[signal.Signals(exc.signum)]
    except KeyboardInterrupt:
        return EXIT_SIGNAL[signal.SIGINT]


def _main(argv: list[str]) -> int:
    # A full disk under RLIMIT_FSIZE must be an EFBIG error we can report, not a silent kill.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if argv[:1] == ["demo"]:
        from exporter.demo import main as demo_main

        return demo_main(argv[1:], run_export)
    if argv[:1] == ["verify"]:
        from exporter.verify import main as verify_main

        return verify_main(argv[1:])
    args = build_parser().parse_args(argv)
    from exporter import logs

    logs.setup(args.log_format, args.verbose)
    try:
        settings = settings_from(args, dict(os.environ))
        check_writable(settings)
    except UsageError as exc:
        log.error("rtk-export: %s", exc, extra={"event": "usage_error"})
        report_end(args, None, EXIT_STOPPED)
        return EXIT_STOPPED
    return run_export(settings, args)


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    """Run the export under DIR's lock and report it; returns the exit code."""
    import anyio

    from exporter.discovery import export_discovered
    from exporter.lock import DirLock, Locked
    from exporter.pipeline import Run
    from exporter.progress import LogReporter, RichReporter
    from exporter.report import summary_text

    show_bar = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    reporter = (RichReporter(settings.rate.requests / settings.rate.seconds) if show_bar
                else LogReporter())
    discovery = None
    result = None
    try:
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        with DirLock(settings.out_dir):
            run = Run(settings, reporter=reporter)
            try:
                if settings.apps:
                    discovery = new_discovery(settings, run, args)
                    result = anyio.run(export_discovered, run, discovery, backend="asyncio")
                    if not settings.dry_run:
                        discovery.commit(discovery_exit_code(result, discovery))
                else:
                    result = anyio.run(run.run, backend="asyncio")
            finally:
                catch_signals()
    except Locked as exc:
        log.error("rtk-export: %s", exc, extra={"event": "locked", "pid": exc.pid})
        return EXIT_LOCKED  # the running export owns the reports
    except Interrupted as exc:
        code = EXIT_SIGNAL[signal.Signals(exc.signum)]
        log.warning("%s received: stopped", signal.Signals(exc.signum).name,
                    extra={"event": "signal"})
        report_end(args, result, code)
        return code
    except OSError as exc:
        log.error("rtk-export: %s: %s", exc.strerror or exc, exc.filename or settings.out_dir,
                  extra={"event": "os_error"})
        report_end(args, result, EXIT_STOPPED)
        return EXIT_STOPPED
    except Exception as exc:  # a bug: say so plainly and let cron see a failed run
        from exporter.urls import redact_text

        # The bug itself, not anyio's wrapper around it; and no secret: an exception's message
        # may quote a request (aiohttp's RequestInfo repr holds the headers) or a presigned URL.
        bug: BaseException = exc
        while isinstance(bug, BaseExceptionGroup) and len(bug.exceptions) == 1:
            bug = bug.exceptions[0]
        log.critical("rtk-export: internal error, the run stopped: %s",
                     redact_text(f"{type(bug).__name__}: {bug}", settings.token),
                     extra={"event": "internal_error"})
        report_end(args, result, EXIT_STOPPED)
        return EXIT_STOPPED
    code = exit_code(result) if discovery is None else discovery_exit_code(result, discovery)
    if settings.dry_run:
        # The plan is what --dry-run asks for: standard output, unless --summary-json - holds
        # it; then plan lines in the chosen log format on stderr.
        text = plan_text(settings, result, discovery)
        if getattr(args, "summary_json", None) == "-":
            for line in text.splitlines():
                log.info("%s", line.strip(), extra={"event": "plan"})
        else:
            print(text, flush=True)
    else:
        log.info("summary: %s", summary_text(result), extra={"event": "summary"})
    if result.fatal is not None:
        log.error("rtk-export: stopped: %s", result.fatal.message, extra={"event": "stopped"})
    report_end(args, result, code)
    return code


def report_end(args: argparse.Namespace, result: Any, code: int) -> None:
    """--summary-json and --metrics-file, whatever the exit code: a monitor must see a run
    that could not start as clearly as one that failed."""
    from exporter.pipeline import RunResult, new_run_id
    from exporter.report import (
        metrics_text,
        previous_success,
        summary_dict,
        write_atomic,
        write_summary_json,
    )
    from exporter.stats import Stats

    if result is None:
        result = RunResult(run_id=new_run_id(), stats=Stats(), seconds=0.0)
    try:
        if getattr(args, "summary_json", None):
            write_summary_json(args.summary_json, summary_dict(result, code))
        if getattr(args, "metrics_file", None):
            path = Path(args.metrics_file)
            write_atomic(path, metrics_text(result, code, previous_success(path)))
    except OSError as exc:
        log.error("rtk-export: cannot write the run's report: %s: %s", exc.strerror,
                  exc.filename, extra={"event": "os_error"})


def new_discovery(settings: Settings, run: Any, args: argparse.Namespace) -> Any:
    """Discovery for this run, sharing its rate budget and counters; `now` is its start."""
    from datetime import UTC, datetime

    from exporter.discovery import Discovery
    from exporter.runstate import RunState

    now = getattr(args, "now", None) or datetime.now(UTC)
    return Discovery(settings, pacer=run.pacer, stats=run.stats,
                     state=RunState.load(settings.out_dir), now=now)


def discovery_exit_code(result: object, discovery: Any) -> int:
    """As for SESSIONS, and 1 where a listing or a lookup failed (something may be missed)."""
    code = exit_code(result)
    return EXIT_FAILED if code == EXIT_OK and discovery.problems else code


def plan_text(settings: Settings, result: Any, discovery: Any) -> str:
    """--dry-run: units to export and skip by kind, invalid lines, requests, time at --rate."""
    from exporter.runstate import rfc3339

    plan = result.plan

    def by_kind(what: str) -> str:
        parts = [f"{k} {plan[f'{what}:{k}']}" for k in settings.kinds if plan.get(f"{what}:{k}")]
        return f" ({', '.join(parts)})" if parts else ""

    needed, made = plan.get("export", 0), result.stats.api_requests
    per_second = settings.rate.requests / settings.rate.seconds
    eta = max(0.0, (made + needed - settings.rate.requests) / per_second)
    lines = [f"plan: {needed} to export{by_kind('export')}, {plan.get('skip', 0)} to skip"
             f"{by_kind('skip')} (already exported, intact), {result.invalid_lines} invalid "
             "line(s)"]
    if discovery is not None:
        for app, r in discovery.reports.items():
            lines.append(f"  app {app}: sessions started in [{rfc3339(r.since)}, "
                         f"{rfc3339(r.until)}): {r.listed} listed in {r.pages} page(s), "
                         f"{r.ended} ENDED (breakout rooms included), {r.live} LIVE (not "
                         f"exported, remembered), {r.looked_up} remembered LIVE looked up"
                         + ("" if r.complete else "; LISTING INCOMPLETE"))
        if discovery.failed_retried:
            lines.append(f"  {discovery.failed_retried} pair(s) that failed in the last 7 days "
                         "retried whatever the window")
    made_text = f"{made} made to list sessions, " if discovery is not None else ""
    lines.append(f"API requests: {made_text}at least {needed} to export (one URL per unit; "
                 "retries and expired URLs add more)")
    lines.append(f"estimated time at --rate {settings.rate}: about {eta:.0f} s"
                 + (" (within the burst)" if eta == 0 else ""))
    return "\n".join(lines)
