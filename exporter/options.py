"""The command line's surface: every option, its help text, and the --help page."""

from __future__ import annotations

import argparse

from exporter import __version__
from exporter.config import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE,
    TRANSCRIPT_FORMATS,
    RetryPolicy,
    Timeouts,
    parse_size,
)

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
  rtk-export render DIR [--to SITE]           a static, offline web site of the archive
  rtk-export ... --out s3://BUCKET[/PREFIX]   the archive in an S3-compatible bucket (verify too)
"""

EPILOG = """\
exit codes: 0 all exported or skipped; 1 some failed or invalid; 2 could not start or stopped
early (bad arguments, credentials, disk); 3 stopped by --max-duration with pairs left;
75 DIR (or the s3:// PREFIX) locked by another run; 130/143 interrupted by SIGINT/SIGTERM.
"""


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host(text: str) -> str:
    # As the link's host is compared: lower case, an IPv6 literal without its brackets.
    host = text.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or "/" in host or "@" in host:
        raise argparse.ArgumentTypeError(f"expected a host name or address, got {text!r}")
    return host


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtk-export",
        description=DESCRIPTION,
        epilog=EPILOG,
        # A fixed width keeps --help identical on every terminal (the README quotes it).
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100),
    )
    p.add_argument(
        "sessions",
        metavar="SESSIONS",
        nargs="?",
        help="file of 'APP_ID SESSION_ID' lines, or '-' for standard input",
    )
    p.add_argument(
        "--app",
        metavar="APP_ID",
        action="append",
        default=[],
        help="discover the sessions of this app instead of reading SESSIONS (repeatable)",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="with --app: sessions started at or after WHEN: RFC 3339, a date "
        "(midnight UTC), a span back from now (36h, 7d) or last-run (default: "
        "last-run if there was one, else 7d)",
    )
    p.add_argument(
        "--until", metavar="WHEN", help="with --app: sessions started before WHEN (default now)"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="where CSVs and the manifest go (created if missing), or s3://BUCKET[/PREFIX]",
    )
    p.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3-compatible endpoint for an s3:// --out (else env AWS_ENDPOINT_URL_S3, "
        "AWS_ENDPOINT_URL; default AWS S3)",
    )
    p.add_argument(
        "--lock-lease",
        default="2m",
        metavar="SPAN",
        help="with an s3:// --out: the lease of the lock, renewed while the run lives (default 2m)",
    )
    p.add_argument("--manifest", metavar="PATH", help="manifest file (default DIR/manifest.jsonl)")
    p.add_argument("--account-id", help="Cloudflare account id (else env CLOUDFLARE_ACCOUNT_ID)")
    p.add_argument(
        "--base-url", help=f"API base URL (else env CLOUDFLARE_BASE_URL, else {DEFAULT_BASE_URL})"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"units in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--rate",
        default=DEFAULT_RATE,
        metavar="N/Ws",
        help=f"API request budget, a sliding window (default {DEFAULT_RATE})",
    )
    p.add_argument(
        "--include",
        default="chat",
        metavar="KINDS",
        help="what to export: any of chat,transcript,summary,attachments,recordings "
        "(default chat; attachments implies chat)",
    )
    p.add_argument(
        "--attachment-allow-host",
        metavar="HOST",
        action="append",
        default=[],
        type=_host,
        help="exempt this attachment host (as written in the link) from the public-address "
        "rule; http to a loopback address is then allowed too (repeatable)",
    )
    p.add_argument(
        "--attachment-max-bytes",
        metavar="SIZE",
        type=_size,
        default="1GiB",
        help="refuse an attachment larger than SIZE (bytes, or KiB/MiB/GiB; default 1GiB)",
    )
    p.add_argument(
        "--transcript-format",
        default="csv",
        choices=TRANSCRIPT_FORMATS,
        help="transcript file format (default csv)",
    )
    p.add_argument(
        "--max-duration",
        metavar="SPAN",
        help="start no new pair after SPAN (50m, 2h); exit 3 if pairs were left",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=RetryPolicy().max_attempts,
        metavar="N",
        help="failed attempts before a pair is 'failed' (429s and expired URLs "
        "do not count; default %(default)s)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=Timeouts().connect,
        metavar="S",
        help="seconds to connect (default %(default)s)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=Timeouts().api,
        metavar="S",
        help="seconds for one whole API request (default %(default)s)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=Timeouts().read,
        metavar="S",
        help="longest silence while downloading, in seconds (default %(default)s)",
    )
    p.add_argument(
        "--summary-json",
        metavar="PATH",
        help="write a JSON summary of the run at the end ('-' = stdout)",
    )
    p.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write Prometheus textfile metrics at the end (atomically)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr lines as text (default) or one JSON object a line",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read the input and print the plan; request no download URL",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="live progress display (default: on a terminal only)",
    )
    p.add_argument(
        "--notify-url",
        metavar="URL",
        help="ping URL/start at the start and URL/<exit code> at the end (Healthchecks "
        "style; else env RTK_EXPORT_NOTIFY_URL)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="log every pair")
    p.add_argument("--version", action="version", version=f"rtk-export {__version__}")
    return p


SERVE_DESCRIPTION = """\
Receive RealtimeKit's webhooks and archive the units they carry with no API request: each
verified delivery is kept in the archive's inbox (DIR/.rtk-export-inbox/ or under the s3://
PREFIX) before it is acknowledged, then exported as an export run would (same files, same
manifest). An expired URL costs one paced API request. Behind a TLS proxy.
"""


def serve_parser() -> argparse.ArgumentParser:
    """The export's options (the units are exported the same way), and serve's own."""
    p = build_parser()
    p.prog = "rtk-export serve"
    p.description = SERVE_DESCRIPTION
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8080; TLS belongs to a proxy in front)",
    )
    p.add_argument(
        "--webhook-key-url",
        metavar="URL",
        help="where RealtimeKit's public key is fetched (default "
        "https://api.realtime.cloudflare.com/.well-known/webhooks.json)",
    )
    p.add_argument(
        "--webhook-public-key", metavar="FILE", help="the public key as a PEM file instead"
    )
    p.add_argument(
        "--shutdown-grace",
        default="30s",
        metavar="SPAN",
        help="on SIGTERM/SIGINT, how long units in flight may finish (default 30s)",
    )
    return p
