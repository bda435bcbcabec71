"""Arguments and environment -> Settings, each value parsed once; the exit codes; the one
error for bad input. Shared by the export's command line and serve's."""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from exporter.archive import MANIFEST_NAME
from exporter.config import DEFAULT_BASE_URL, Rate, RetryPolicy, Settings, Timeouts, parse_include
from exporter.objectstore.target import store_options
from exporter.sessions import app_id_problem
from exporter.times import LAST_RUN, parse_span, parse_when
from exporter.urls import base_url_problem

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


DEFAULT_KEY_URL = "https://api.realtime.cloudflare.com/.well-known/webhooks.json"

# An export's options that mean nothing to serve: refused rather than silently ignored.
_EXPORT_ONLY = {
    "sessions": "SESSIONS",
    "since": "--since",
    "until": "--until",
    "max_duration": "--max-duration",
    "manifest": "--manifest",
    "dry_run": "--dry-run",
    "summary_json": "--summary-json",
}


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    port: int
    key_url: str | None
    key_file: Path | None
    grace: float
    default_app: str | None  # the one --app: the app of deliveries no registration names
    metrics_file: str | None = None


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:8080 for IPv6); ValueError naming the value."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"--listen: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def serve_options(args: argparse.Namespace, environ: Mapping[str, str]) -> ServeOptions:
    from exporter.times import parse_span

    host, port = parse_listen(args.listen)
    if args.webhook_public_key and args.webhook_key_url:
        raise ValueError("--webhook-public-key and --webhook-key-url do not combine")
    key_file = Path(args.webhook_public_key) if args.webhook_public_key else None
    if key_file is not None and not key_file.is_file():
        raise ValueError(f"--webhook-public-key: no such file: {key_file}")
    key_url = None if key_file else (args.webhook_key_url or DEFAULT_KEY_URL)
    if key_url is not None:
        from exporter.webhooks.signature import key_url_problem  # serve loads it anyway

        if problem := key_url_problem(key_url):
            raise ValueError(f"--webhook-key-url: {problem}")
    try:
        grace = parse_span(args.shutdown_grace)
    except ValueError as exc:
        raise ValueError(f"--shutdown-grace: {exc}") from None
    apps = tuple(dict.fromkeys(args.app))
    return ServeOptions(
        host=host,
        port=port,
        key_url=key_url,
        key_file=key_file,
        grace=grace,
        default_app=apps[0] if len(apps) == 1 else None,
        metrics_file=args.metrics_file,
    )


def serve_settings(
    args: argparse.Namespace, environ: dict[str, str]
) -> tuple[Settings, ServeOptions]:
    """serve's arguments: its own options, and the export's that say how units are exported
    (an export's SESSIONS, window and the like are refused); UsageError naming the value."""
    try:
        opts = serve_options(args, environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for app in args.app:
        if problem := app_id_problem(app):
            raise UsageError(f"--app: {problem}")
    for name, flag in _EXPORT_ONLY.items():
        if getattr(args, name):
            raise UsageError(f"{flag} does not apply to serve")
    args.sessions, args.app = "-", []  # what an export needs to resolve its Settings
    return settings_from(args, environ), opts
