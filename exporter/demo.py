"""`rtk-export demo`: a real export against the package's own stand-in, no account needed.

The export itself is the command line's (`run_export` is handed in: lock, run, reports and
exit code), so the demo shows exactly what a user's run does, faults and all.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from exporter.archive import MANIFEST_NAME
from exporter.config import RetryPolicy, Settings
from exporter.report import Output

log = logging.getLogger("exporter")

RunExport = Callable[[Settings, Output], int]


def main(argv: Sequence[str], run_export: RunExport) -> int:
    """A real export against the package's own stand-in, which injects a few faults."""
    p = argparse.ArgumentParser(
        prog="rtk-export demo",
        description="Export sessions.example.txt from a local "
        "RealtimeKit stand-in on 127.0.0.1 (no account needed).",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default="rtk-export-demo",
        help="where to put the export (default ./rtk-export-demo)",
    )
    p.add_argument(
        "--sessions",
        metavar="FILE",
        default="sessions.example.txt",
        help="pairs to export (default ./sessions.example.txt, else the copy "
        "installed with the package)",
    )
    p.add_argument(
        "--discover",
        action="store_true",
        help="show discovery instead: list two apps by time, with transcripts and "
        "summaries, twice (a LIVE session ends between the runs)",
    )
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    args = p.parse_args(list(argv))
    from exporter import logs
    from exporter.standin import FaultRates, StandinConfig, standin_in_thread

    logs.setup(args.log_format)
    if args.discover:
        return discovery(args, run_export)
    out = Path(args.out)
    sessions = Path(args.sessions)
    if not sessions.is_file():
        # Outside a clone of the repository: the same file, installed with the package
        # (tests/test_cli.py keeps the two identical).
        sessions = Path(str(importlib.resources.files("exporter") / "sessions.example.txt"))
    # A few of the faults a real run meets, so that the demo shows them handled.
    config = StandinConfig(
        token="demo-token",  # noqa: S106 - the stand-in's own, not a secret
        account_id="demo-account",
        seed=2026,
        faults=FaultRates(api_5xx=0.15, download_expired=0.15, download_truncate=0.1),
        retry_after=1,
        # Attachments in every payload form, and two recordings a session: one uploaded, one
        # still being recorded (unavailable, looked at again by the next run). Pictures, the
        # PDF and the uploaded recording are real files: the rendered site shows and plays them.
        attachments=6,
        recording_statuses=("UPLOADED", "RECORDING"),
        recording_media=True,
    )
    with standin_in_thread(config) as server:
        log.info("local RealtimeKit stand-in listening at %s", server.base_url)
        # One recording download is cut off half way: the retry resumes it with Range.
        server.state.media.cut_next.append(1 << 19)
        settings = Settings(
            token=config.token,
            account_id=config.account_id,
            base_url=server.base_url,
            sessions=str(sessions),
            out_dir=out,
            manifest_path=out / MANIFEST_NAME,
            retry=RetryPolicy(initial_backoff=0.05, max_backoff=0.5),
            kinds=("chat", "attachment", "recording"),
            # The stand-in serves its attachments over http on 127.0.0.1: exempt it, as an
            # operator would an internal file store.
            attachment_allow_hosts=frozenset({"127.0.0.1"}),
        )
        code = run_export(settings, Output(progress=args.progress))
    log.info(
        "demo: files in %s/<app_id>/<session_id>.csv, .attachments/ and .recordings/, "
        "manifest in %s/manifest.jsonl; check them with: rtk-export verify %s",
        out,
        out,
        out,
    )
    return code


def discovery(args: argparse.Namespace, run_export: RunExport) -> int:
    """Two discovery runs a day apart, as cron would make them, against the stand-in."""
    from datetime import UTC, datetime, timedelta

    from exporter.standin import FaultRates, SessionSpec, StandinConfig, standin_in_thread

    now = datetime.now(UTC)
    apps = ("4f2a9c1be07d4e6a9b3c5d7e8f901a2b", "9e0d7c6b5a4f4e3d2c1b0a9f8e7d6c5b")
    a, b = apps
    catalogue = (
        SessionSpec(a, "1d8c6a0e-3b7f-4e2a-9c51-7f0e2d4b6a81", now - timedelta(hours=30)),
        SessionSpec(
            a,
            "6b2e9f47-0c1d-4a8e-b3f5-2e7d9c0a1b54",
            now - timedelta(hours=20),
            breakout_rooms=(
                SessionSpec(
                    a, "7c3f0a58-1d2e-4b9f-a4c6-3f8e0d1b2c65", now - timedelta(hours=19, minutes=50)
                ),
            ),
        ),
        SessionSpec(
            a,
            "8d4a1b69-2e3f-4c0a-b5d7-4a9f1e2c3d76",
            now - timedelta(hours=2),
            has_transcript=False,
            has_summary=False,
        ),
        SessionSpec(
            a, "9e5b2c70-3f4a-4d1b-86e8-5b0a2f3d4e87", now - timedelta(minutes=40), status="LIVE"
        ),
        SessionSpec(
            b, "2c4e6a80-1f3b-45d7-9e0a-b2c4d6e8f013", now - timedelta(hours=5), has_summary=False
        ),
    )
    config = StandinConfig(
        token="demo-token",  # noqa: S106 - the stand-in's own, not a secret
        account_id="demo-account",
        seed=2026,
        sessions=catalogue,
        accept_any=False,
        faults=FaultRates(api_5xx=0.1, download_expired=0.1),
        retry_after=1,
    )
    out = Path(args.out)
    code = 0
    with standin_in_thread(config) as server:
        log.info("local RealtimeKit stand-in listening at %s", server.base_url)
        settings = Settings(
            token=config.token,
            account_id=config.account_id,
            base_url=server.base_url,
            apps=apps,
            out_dir=out,
            manifest_path=out / MANIFEST_NAME,
            kinds=("chat", "transcript", "summary"),
            retry=RetryPolicy(initial_backoff=0.05, max_backoff=0.5),
        )
        for day, when in enumerate((now, now + timedelta(days=1)), start=1):
            if day == 2:
                live = server.state.catalogue[(a, "9e5b2c70-3f4a-4d1b-86e8-5b0a2f3d4e87")]
                live.status = "ENDED"
                log.info("demo: the LIVE session has ended; next day's run (--since last-run)")
            log.info(
                "demo: run %d: rtk-export --app %s --app %s --include "
                "chat,transcript,summary --out %s",
                day,
                a,
                b,
                out,
            )
            code = max(
                code, run_export(replace(settings, now=when), Output(progress=args.progress))
            )
    log.info(
        "demo: files in %s/<app_id>/, manifest in %s/manifest.jsonl, discovery state in "
        "%s/.rtk-export-state.json; check them with: rtk-export verify %s",
        out,
        out,
        out,
        out,
    )
    return code
