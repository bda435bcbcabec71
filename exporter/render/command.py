"""`rtk-export render DIR [--to SITE]`: arguments, checks, the one-line summary, exit codes."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from exporter.archive import MANIFEST_NAME

EXIT_OK, EXIT_DAMAGED, EXIT_STOPPED = 0, 1, 2


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="rtk-export render",
        description="Write a static, offline web site of the archive (default SITE: DIR/html).",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--to", metavar="SITE", help="where the site goes (default DIR/html)")
    p.add_argument("--manifest", metavar="PATH", help="default DIR/manifest.jsonl")
    args = p.parse_args(list(argv))
    out = Path(args.dir)
    manifest = Path(args.manifest) if args.manifest else out / MANIFEST_NAME
    site = Path(args.to) if args.to else out / "html"
    if not out.is_dir():
        print(f"rtk-export render: no such directory: {out}", file=sys.stderr)
        return EXIT_STOPPED
    if not manifest.is_file():
        print(f"rtk-export render: no manifest at {manifest}", file=sys.stderr)
        return EXIT_STOPPED
    from exporter.render.site import render_site

    def warn(line: str) -> None:
        print(f"rtk-export render: damaged, not rendered: {line}", file=sys.stderr, flush=True)

    try:
        outcome = render_site(out, manifest, site, warn)
    except (OSError, sqlite3.Error) as exc:
        where = getattr(exc, "filename", None) or site
        print(
            f"rtk-export render: {getattr(exc, 'strerror', None) or exc}: {where}", file=sys.stderr
        )
        return EXIT_STOPPED
    print(
        f"render: {outcome.rendered} sessions rendered, {outcome.unchanged} unchanged, "
        f"{len(outcome.damaged)} damaged, {outcome.removed} removed; "
        f"{outcome.index_pages} index page(s) -> {site / 'index.html'}",
        file=sys.stderr,
    )
    return EXIT_DAMAGED if outcome.damaged else EXIT_OK
