"""`rtk-export webhooks register|list`: arguments and environment, checks before any request,
one line per result, exit codes (0 done, 2 not done: bad arguments, API, archive)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.config import DEFAULT_BASE_URL, DEFAULT_RATE, Rate, RetryPolicy, Settings, Timeouts

EXIT_OK, EXIT_STOPPED = 0, 2
PROG = "rtk-export webhooks"


class _Usage(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--app", metavar="APP_ID", required=True, help="the RealtimeKit app")
    api.add_argument("--account-id", help="Cloudflare account id (else CLOUDFLARE_ACCOUNT_ID)")
    api.add_argument(
        "--base-url", help=f"API base URL (else CLOUDFLARE_BASE_URL, {DEFAULT_BASE_URL})"
    )
    api.add_argument("--rate", default=DEFAULT_RATE, metavar="N/Ws", help="API request budget")
    api.add_argument("--max-attempts", type=int, default=5, metavar="N")
    api.add_argument("--request-timeout", type=float, default=60.0, metavar="SECONDS")
    p = argparse.ArgumentParser(prog=PROG, description="Register or list an app's webhooks.")
    sub = p.add_subparsers(dest="command", required=True, metavar="register|list")
    reg = sub.add_parser(
        "register",
        parents=[api],
        help="create (or update) the app's webhook and record it in the archive",
        description="Create the app's webhook for the included kinds' events (or update the "
        "one with the same URL: never a duplicate) and record its id -> app in the archive, "
        "for serve to route deliveries.",
    )
    reg.add_argument("--url", required=True, help="where RealtimeKit posts: https only")
    reg.add_argument(
        "--out", metavar="DIR", required=True, help="the archive, or s3://BUCKET[/PREFIX]"
    )
    reg.add_argument("--include", default="chat", metavar="KINDS", help="as serve's (default chat)")
    reg.add_argument("--name", default="rtk-export", help="the webhook's name (default rtk-export)")
    reg.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint for s3://")
    sub.add_parser("list", parents=[api], help="print the app's webhooks")
    return p


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    from exporter.objectstore.target import store_options
    from exporter.sessions import app_id_problem
    from exporter.urls import base_url_problem

    token = environ.get("CLOUDFLARE_API_TOKEN", "")
    if not token:
        raise _Usage("CLOUDFLARE_API_TOKEN is not set (read from the environment only)")
    account = args.account_id or environ.get("CLOUDFLARE_ACCOUNT_ID", "")
    if not account:
        raise _Usage("no account id: pass --account-id or set CLOUDFLARE_ACCOUNT_ID")
    base_url = args.base_url or environ.get("CLOUDFLARE_BASE_URL") or DEFAULT_BASE_URL
    if (problem := base_url_problem(base_url)) or (problem := app_id_problem(args.app)):
        raise _Usage(problem)
    if args.max_attempts < 1 or args.request_timeout <= 0:
        raise _Usage("--max-attempts must be at least 1 and --request-timeout positive")
    try:
        rate = Rate.parse(args.rate)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    out = getattr(args, "out", None)
    store = None
    if out is not None:
        opts = argparse.Namespace(
            out=out, manifest=None, s3_endpoint=args.s3_endpoint, lock_lease="2m"
        )
        store, _ = store_options(opts, environ, _Usage)
    return Settings(
        token=token,
        account_id=account,
        base_url=base_url,
        out_dir=Path(out or "."),
        manifest_path=Path(out or "."),
        rate=rate,
        retry=RetryPolicy(max_attempts=args.max_attempts),
        timeouts=Timeouts(api=args.request_timeout),
        concurrency=1,
        store=store,
    )


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(list(argv))
    env = os.environ if environ is None else environ
    from exporter.config import parse_include
    from exporter.webhooks.registry import events_for, webhook_url_problem

    try:
        settings = _settings(args, env)
        events: list[str] = []
        if args.command == "register":
            if problem := webhook_url_problem(args.url):
                raise _Usage(problem)
            try:
                events = events_for(parse_include(args.include))
            except ValueError as exc:
                raise _Usage(str(exc)) from None
    except _Usage as exc:
        _say(str(exc))
        return EXIT_STOPPED
    import anyio

    return anyio.run(_run, settings, args, events, backend="asyncio")


async def _run(settings: Settings, args: argparse.Namespace, events: list[str]) -> int:
    from exporter.client import ApiClient
    from exporter.errors import ExportError
    from exporter.ratelimit import Pacer
    from exporter.stats import Stats

    def client() -> ApiClient:
        return ApiClient(settings, Pacer(settings.rate, hold=settings.timeouts.api), Stats())

    try:
        if args.command == "list":
            async with client() as api:
                for hook in await api.list_webhooks(args.app):
                    print(_line(hook), flush=True)
            return EXIT_OK
        if settings.store is None:
            from exporter.webhooks.registry import FolderRecord

            settings.out_dir.mkdir(parents=True, exist_ok=True)
            return await _register(client, FolderRecord(settings.out_dir), args, events)
        from exporter.objectstore.client import open_store
        from exporter.webhooks.registry import BucketRecord

        async with open_store(settings.store, settings.retry, settings.timeouts, 2) as store:
            await store.check_bucket()
            return await _register(client, BucketRecord(store), args, events)
    except ExportError as exc:
        _say(exc.message)
    except OSError as exc:
        _say(f"{exc.strerror or type(exc).__name__}: {exc.filename or settings.out_dir}")
    return EXIT_STOPPED


async def _register(client: Any, record: Any, args: argparse.Namespace, events: list[str]) -> int:
    from exporter.urls import redact
    from exporter.webhooks.registry import merged, register
    from exporter.webhooks.routes import parse_record

    existing = await record.read()
    if existing is not None:
        parse_record(existing)  # a damaged record stops us before any request
    async with client() as api:
        done = await register(api, args.app, args.url, events, args.name)
    webhook_id = done.webhook["id"]
    await record.update(lambda old: merged(old, webhook_id, args.app, args.url, events))
    print(
        f"{done.action} webhook {_shown(webhook_id)} of app {args.app}: {redact(args.url)} "
        f"({', '.join(events)}); recorded in {record}",
        flush=True,
    )
    return EXIT_OK


def _line(hook: Mapping[str, Any]) -> str:
    """id, enabled or disabled, name, URL without its query, events: tab-separated."""
    from exporter.urls import redact

    url, events = hook.get("url"), hook.get("events")
    try:
        shown_url = redact(url) if isinstance(url, str) else "-"
    except ValueError:  # a port that is not one
        shown_url = "(malformed URL)"
    if isinstance(events, list):
        shown_events = ",".join(e for e in events if isinstance(e, str))
    else:
        shown_events = "-"
    fields = (hook.get("id"), "enabled" if hook.get("enabled") is True else "disabled")
    return "\t".join(_shown(f) for f in (*fields, hook.get("name"), shown_url, shown_events))


def _shown(value: object) -> str:
    """An API value made safe for a terminal: no control or formatting character, bounded."""
    text = value if isinstance(value, str) else "-"
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text[:300])


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
