"""`rtk-export serve`: the composition root of a receiver. The web server keeps each verified
delivery in the archive's inbox; the same pipeline that exports SESSIONS drains it, one run
after another (a run stopped by a full disk gives way to a new one once it can write again);
SIGTERM/SIGINT stop the intake, give units in flight --shutdown-grace, and leave the rest in
the inbox."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from exporter.config import Settings

log = logging.getLogger("exporter.serve")

DEFAULT_LISTEN = "127.0.0.1:8080"
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
    from exporter.urls import private_transport

    host, port = parse_listen(args.listen)
    if args.webhook_public_key and args.webhook_key_url:
        raise ValueError("--webhook-public-key and --webhook-key-url do not combine")
    key_file = Path(args.webhook_public_key) if args.webhook_public_key else None
    if key_file is not None and not key_file.is_file():
        raise ValueError(f"--webhook-public-key: no such file: {key_file}")
    key_url = None if key_file else (args.webhook_key_url or DEFAULT_KEY_URL)
    if key_url is not None:
        from yarl import URL

        url = URL(key_url)
        if not private_transport(url.scheme, url.host):
            raise ValueError("--webhook-key-url must be https (or http to a loopback address)")
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


def main(argv: list[str]) -> int:
    from exporter import logs
    from exporter.cli import EXIT_LOCKED, EXIT_STOPPED, UsageError, settings_from
    from exporter.options import serve_parser

    args = serve_parser().parse_args(argv)
    logs.setup(args.log_format, args.verbose)
    try:
        opts = serve_options(args, os.environ)
        for app in args.app:
            from exporter.sessions import app_id_problem

            if problem := app_id_problem(app):
                raise ValueError(f"--app: {problem}")
        for name, flag in _EXPORT_ONLY.items():
            if getattr(args, name):
                raise ValueError(f"{flag} does not apply to serve")
        args.sessions, args.app = "-", []  # what an export needs to resolve its Settings
        settings = settings_from(args, dict(os.environ))
    except (UsageError, ValueError) as exc:
        log.error("rtk-export serve: %s", exc, extra={"event": "usage_error"})
        return EXIT_STOPPED
    import anyio

    from exporter.lock import Locked

    try:
        if settings.store is not None:
            from exporter.objectstore.serve import serve_bucket

            return anyio.run(serve_bucket, settings, opts, backend="asyncio")
        return _serve_folder(settings, opts)
    except Locked as exc:
        log.error("rtk-export serve: %s", exc, extra={"event": "locked", "pid": exc.pid})
        return EXIT_LOCKED
    except OSError as exc:
        log.error("rtk-export serve: %s: %s", exc.strerror or exc, exc.filename or "")
        return EXIT_STOPPED


def _serve_folder(settings: Settings, opts: ServeOptions) -> int:
    import anyio

    from exporter.archive import SERVE_LOCK_NAME, writable_problem
    from exporter.cli import EXIT_STOPPED
    from exporter.lock import DirLock

    if problem := writable_problem(settings.out_dir, settings.manifest_path):
        log.error("rtk-export serve: %s", problem, extra={"event": "usage_error"})
        return EXIT_STOPPED
    with DirLock(settings.out_dir, SERVE_LOCK_NAME):
        return anyio.run(serve_folder, settings, opts, backend="asyncio")


async def serve_folder(settings: Settings, opts: ServeOptions) -> int:
    import anyio

    from exporter.archive import WEBHOOKS_NAME
    from exporter.folder import FolderArchive
    from exporter.runstate import RunState
    from exporter.webhooks.inbox import FolderInbox
    from exporter.webhooks.registry import load_routes
    from exporter.webhooks.service import Service

    inbox = FolderInbox(settings.out_dir)
    await inbox.open()
    routes_file = anyio.Path(settings.out_dir / WEBHOOKS_NAME)

    async def routes() -> Mapping[str, str]:
        try:
            return load_routes(await routes_file.read_bytes())
        except FileNotFoundError:
            return {}

    return await Service(
        settings,
        opts,
        inbox,
        lambda: FolderArchive(settings.out_dir, RunState.load, role="serve"),
        routes,
    ).run()
