"""The command line: arguments and environment -> Settings; logging; exit codes; nothing else."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from exporter.archive import MANIFEST_NAME, writable_problem
from exporter.config import DEFAULT_BASE_URL, Rate, RetryPolicy, Settings, Timeouts, parse_include
from exporter.objectstore.target import store_options
from exporter.options import build_parser
from exporter.report import Output, report_end
from exporter.sessions import app_id_problem
from exporter.stats import RunResult
from exporter.times import LAST_RUN, parse_span, parse_when
from exporter.urls import base_url_problem

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_STOPPED, EXIT_CUT_SHORT, EXIT_LOCKED = 0, 1, 2, 3, 75
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class UsageError(Exception):
    """Bad arguments or environment: one clear line, exit 2, before any request."""


def settings_from(
    args: argparse.Namespace, environ: dict[str, str], now: datetime | None = None
) -> Settings:
    """Resolve arguments and environment into Settings, or raise UsageError naming the value.
    Every value is parsed here, once; WHEN against `now`, which is then the run's start."""
    now = now or datetime.now(UTC)
    token = environ.get("CLOUDFLARE_API_TOKEN", "")
    if not token:
        raise UsageError(
            "CLOUDFLARE_API_TOKEN is not set (the token is read from the "
            "environment only, never from the command line)"
        )
    account = args.account_id or environ.get("CLOUDFLARE_ACCOUNT_ID", "")
    if not account:
        raise UsageError("no account id: pass --account-id or set CLOUDFLARE_ACCOUNT_ID")
    base_url = args.base_url or environ.get("CLOUDFLARE_BASE_URL") or DEFAULT_BASE_URL
    if problem := base_url_problem(base_url):
        raise UsageError(problem)
    apps = tuple(dict.fromkeys(args.app))
    if args.sessions is not None and apps:
        raise UsageError("SESSIONS and --app do not combine: export a list, or discover by app")
    if args.sessions is None and not apps:
        raise UsageError(
            "SESSIONS is required: a file of 'APP_ID SESSION_ID' lines, or '-'; "
            "or discover sessions with --app APP_ID"
        )
    since = until = None
    if apps:
        since, until = discovery_window(apps, args.since, args.until, now)
    elif args.since or args.until:
        raise UsageError("--since and --until select sessions to discover: use them with --app")
    if args.sessions is not None and args.sessions != "-":
        if not os.path.isfile(args.sessions):
            raise UsageError(f"SESSIONS file not found: {args.sessions}")
        if not os.access(args.sessions, os.R_OK):
            raise UsageError(f"SESSIONS file is not readable: {args.sessions}")
    for name in ("concurrency", "max_attempts"):
        if getattr(args, name) < 1:
            raise UsageError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    try:
        rate, kinds = Rate.parse(args.rate), parse_include(args.include)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    max_duration = None
    if args.max_duration:
        try:
            max_duration = parse_span(args.max_duration)
        except ValueError as exc:
            raise UsageError(f"--max-duration: {exc}") from None
    for name in ("connect_timeout", "request_timeout", "read_timeout"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    store, lease = store_options(args, environ, UsageError)
    out = Path(args.out)
    return Settings(
        token=token,
        account_id=account,
        base_url=base_url,
        sessions=args.sessions,
        apps=apps,
        since=since,
        until=until,
        now=now,
        out_dir=out,
        manifest_path=Path(args.manifest) if args.manifest else out / MANIFEST_NAME,
        concurrency=args.concurrency,
        rate=rate,
        retry=RetryPolicy(max_attempts=args.max_attempts),
        timeouts=Timeouts(
            connect=args.connect_timeout, api=args.request_timeout, read=args.read_timeout
        ),
        kinds=kinds,
        attachment_allow_hosts=frozenset(args.attachment_allow_host),
        attachment_max_bytes=args.attachment_max_bytes,
        transcript_format=args.transcript_format,
        dry_run=args.dry_run,
        max_duration=max_duration,
        store=store,
        lock_lease=lease,
    )


def discovery_window(
    apps: tuple[str, ...], since: str | None, until: str | None, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """App ids as SESSIONS checks them; WHEN texts parsed; a window that is not empty."""
    for app in apps:
        if problem := app_id_problem(app):
            raise UsageError(f"--app: {problem}")
    moments: dict[str, datetime | None] = {"since": None, "until": None}
    for name, text in (("since", since), ("until", until)):
        if text is None:
            continue
        try:
            moments[name] = parse_when(text, now)
        except ValueError as exc:
            raise UsageError(f"--{name}: {exc}") from None
    if until is not None and until.strip() == LAST_RUN:
        raise UsageError("--until last-run means nothing: last-run is a --since")
    start, end = moments["since"], moments["until"]
    if start is not None and start >= (end or now):
        raise UsageError(
            f"--since {since} is not before --until {until or 'now'}: the window is empty"
        )
    return start, end


def exit_code(result: RunResult) -> int:
    if result.fatal is not None:
        return EXIT_STOPPED
    if result.stopped_by is not None:
        return EXIT_SIGNAL.get(signal.Signals(result.stopped_by), 128 + result.stopped_by)
    if result.cut_short or result.left:
        return EXIT_CUT_SHORT
    if result.stats.counts.get("failed") or result.invalid_lines or result.discovery_problems:
        return EXIT_FAILED  # a listing or lookup that failed may have missed sessions
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
        from exporter.objectstore.verify import main as verify_main  # DIR or s3://

        return verify_main(argv[1:])
    if argv[:1] == ["render"]:
        from exporter.render.command import main as render_main

        return render_main(argv[1:])
    if argv[:1] == ["webhooks"]:
        from exporter.webhooks.command import main as webhooks_main

        return webhooks_main(argv[1:])
    args = build_parser().parse_args(argv)
    from exporter import logs
    from exporter.notify import url_from

    logs.setup(args.log_format, args.verbose)
    notify_url, bad_notify = url_from(args.notify_url, os.environ)
    output = Output(
        progress=args.progress,
        summary_json=args.summary_json,
        metrics_file=args.metrics_file,
        notify_url=None if bad_notify else notify_url,
    )
    try:
        if bad_notify:
            raise UsageError(bad_notify)
        settings = settings_from(args, dict(os.environ))
        if settings.store is None and (
            problem := writable_problem(settings.out_dir, settings.manifest_path)
        ):
            raise UsageError(problem)
    except UsageError as exc:
        log.error("rtk-export: %s", exc, extra={"event": "usage_error"})
        report_end(output, None, EXIT_STOPPED)
        return EXIT_STOPPED
    return run_export(settings, output)


RunExport = Callable[[Settings, Output], int]


def run_export(settings: Settings, output: Output) -> int:
    """Run the export under DIR's lock and report it; returns the exit code."""
    import anyio

    from exporter import logs
    from exporter.display import reporter_for
    from exporter.lock import Locked
    from exporter.notify import ping_end, ping_start
    from exporter.objectstore.run import destination
    from exporter.pipeline import Run, export
    from exporter.report import plan_text, summary_text

    result = None
    try:
        go, lock = destination(settings, export, Run)
        with lock:
            ping_start(output.notify_url)
            try:
                result = anyio.run(go, settings, reporter_for(output), backend="asyncio")
            finally:
                catch_signals()
    except Locked as exc:
        log.error("rtk-export: %s", exc, extra={"event": "locked", "pid": exc.pid})
        ping_end(output.notify_url, EXIT_LOCKED, f"rtk-export exit {EXIT_LOCKED}: {exc}")
        return EXIT_LOCKED  # the running export owns the reports
    except Interrupted as exc:
        code = EXIT_SIGNAL[signal.Signals(exc.signum)]
        log.warning(
            "%s received: stopped", signal.Signals(exc.signum).name, extra={"event": "signal"}
        )
        report_end(output, result, code)
        return code
    except OSError as exc:
        log.error(
            "rtk-export: %s: %s",
            exc.strerror or exc,
            exc.filename or settings.out_dir,
            extra={"event": "os_error"},
        )
        report_end(output, result, EXIT_STOPPED)
        return EXIT_STOPPED
    except Exception as exc:  # a bug: say so plainly and let cron see a failed run
        logs.log_bug(exc, settings.token)
        report_end(output, result, EXIT_STOPPED)
        return EXIT_STOPPED
    code = exit_code(result)
    if settings.dry_run:
        # The plan is what --dry-run asks for: standard output, unless --summary-json - holds
        # it; then plan lines in the chosen log format on stderr.
        text = plan_text(settings, result)
        if output.summary_json == "-":
            for line in text.splitlines():
                log.info("%s", line.strip(), extra={"event": "plan"})
        else:
            print(text, flush=True)
    elif result.started:
        log.info("summary: %s", summary_text(result), extra={"event": "summary"})
    if result.fatal is not None:
        log.error("rtk-export: stopped: %s", result.fatal.message, extra={"event": "stopped"})
    report_end(output, result, code)
    return code
