"""The command line: subcommands, logging, the lock, `anyio.run`, outcome -> exit code
(arguments and environment -> Settings: exporter.arguments)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from exporter.archive import writable_problem
from exporter.arguments import (
    EXIT_CUT_SHORT,
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SIGNAL,
    EXIT_STOPPED,
    UsageError,
    settings_from,
)
from exporter.config import Settings
from exporter.options import build_parser
from exporter.report import Output, report_end
from exporter.stats import RunResult

log = logging.getLogger("exporter")


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
    """SIGINT or SIGTERM outside the run's own signal watcher (start-up, the final reports):
    a BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

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
        from exporter.render import command as render

        return render.main(argv[1:])
    if argv[:1] == ["serve"]:
        return run_serve(argv[1:])
    if argv[:1] == ["search"]:
        from exporter.search import command as search

        return search.main(argv[1:])
    if argv[:1] == ["webhooks"]:
        from exporter.webhooks import command as webhooks

        return webhooks.main(argv[1:])
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


def run_serve(argv: list[str]) -> int:
    """`rtk-export serve` until a signal (143/130); 75 if another serve holds DIR."""
    import anyio

    from exporter import logs
    from exporter.arguments import serve_settings
    from exporter.lock import Locked
    from exporter.options import serve_parser
    from exporter.webhooks.service import serve

    args = serve_parser().parse_args(argv)
    logs.setup(args.log_format, args.verbose)
    try:
        settings, opts = serve_settings(args, dict(os.environ))
        if settings.store is None and (
            problem := writable_problem(settings.out_dir, settings.manifest_path)
        ):
            raise UsageError(problem)
    except UsageError as exc:
        log.error("rtk-export serve: %s", exc, extra={"event": "usage_error"})
        return EXIT_STOPPED
    try:
        return anyio.run(serve, settings, opts, backend="asyncio")
    except Locked as exc:
        log.error("rtk-export serve: %s", exc, extra={"event": "locked", "pid": exc.pid})
        return EXIT_LOCKED
    except OSError as exc:
        log.error("rtk-export serve: %s", exc.strerror or exc, extra={"event": "os_error"})
        return EXIT_STOPPED
