"""`rtk-export search DIR|s3://... QUERY [options]`: arguments, where the index lives, the
update before each search, the hits printed, exit codes (0 hits, 1 none, 2 cannot search)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from exporter.archive import MANIFEST_NAME, SEARCH_INDEX_NAME
from exporter.search.index import Filters, NotAnIndex, SearchIndex
from exporter.search.query import QueryError, fold, parse, to_match
from exporter.search.update import Updated

EXIT_HITS, EXIT_NONE, EXIT_STOPPED = 0, 1, 2
PROG = "rtk-export search"


class SearchError(Exception):
    """Cannot search: one clear line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Full-text search over the archive's chat messages and transcripts: "
        'words (all must match), "a phrase", prefix*; case and accents ignored.',
    )
    p.add_argument("archive", metavar="DIR|s3://BUCKET[/PREFIX]")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--app", metavar="APP_ID", help="only this app's sessions")
    p.add_argument("--since", metavar="WHEN", help="hits at or after WHEN (2026-11-20, 7d, ...)")
    p.add_argument("--until", metavar="WHEN", help="hits before WHEN")
    p.add_argument("--from", dest="author", metavar="NAME", help="a part of the display name")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N hits (50)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument("--index", metavar="PATH", help="the index file (default: beside the archive)")
    p.add_argument("--manifest", metavar="PATH", help="default DIR/manifest.jsonl")
    p.add_argument("--s3-endpoint", metavar="URL", help="else env AWS_ENDPOINT_URL_S3, ...")
    return p


@dataclass(frozen=True, slots=True)
class Request:
    match: str
    filters: Filters


def request_from(args: argparse.Namespace, now: datetime) -> Request:
    """The query and the filters, each value checked; SearchError naming the bad one."""
    from exporter.sessions import app_id_problem
    from exporter.times import LAST_RUN, parse_when

    try:
        match = to_match(parse(args.query))
    except QueryError as exc:
        raise SearchError(f"bad query: {exc}") from None
    if args.app is not None and (problem := app_id_problem(args.app)):
        raise SearchError(f"--app: {problem}")
    if args.limit < 1:
        raise SearchError(f"--limit must be at least 1, got {args.limit}")
    moments: dict[str, int | None] = {"since": None, "until": None}
    for name in moments:
        text = getattr(args, name)
        if text is None:
            continue
        if text.strip() == LAST_RUN:
            raise SearchError(f"--{name} last-run means nothing to search: give a time")
        try:
            moment = parse_when(text, now)
        except ValueError as exc:
            raise SearchError(f"--{name}: {exc}") from None
        assert moment is not None
        moments[name] = int(moment.timestamp() * 1000)
    since, until = moments["since"], moments["until"]
    if since is not None and until is not None and since >= until:
        raise SearchError(f"--since {args.since} is not before --until {args.until}")
    author = None
    if args.author is not None:
        author = fold(args.author).strip()
        if not author:
            raise SearchError("--from needs a part of a name")
    return Request(match, Filters(args.app, since, until, author, args.limit))


def cache_index(key: str, environ: Mapping[str, str]) -> Path:
    """An index kept in the user's cache folder (XDG), named by a digest of what it indexes."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "rtk-export"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.sqlite"


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(list(argv))
    environ = os.environ if environ is None else environ
    try:
        request = request_from(args, datetime.now(UTC))
        if args.archive.startswith("s3://"):
            index, updated = _open_store(args, environ)
        else:
            index, updated = _open_folder(args, environ)
    except SearchError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    try:
        _report_update(updated, index)
        return _search(index, request, args.json)
    except sqlite3.Error as exc:
        print(f"{PROG}: the index {index.path} cannot be read: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        index.close()


def _open_folder(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[SearchIndex, Updated]:
    from exporter.search.update import update_folder

    out = Path(args.archive)
    manifest = Path(args.manifest) if args.manifest else out / MANIFEST_NAME
    if args.s3_endpoint:
        raise SearchError("--s3-endpoint goes with an s3:// archive")
    if not out.is_dir():
        raise SearchError(f"no such directory: {out}")
    if not manifest.is_file():
        raise SearchError(f"no manifest at {manifest}")
    if args.index:
        path, owned = Path(args.index), False
    elif os.access(out, os.W_OK):
        path, owned = out / SEARCH_INDEX_NAME, True
    else:  # an archive mounted read-only is searched all the same
        path, owned = cache_index(f"dir\0{out.resolve()}", environ), True
    index = _open_index(path, owned)
    try:
        return index, update_folder(index, out, manifest)
    except (OSError, sqlite3.Error) as exc:
        index.close()
        raise SearchError(_os_problem(exc, path)) from None


def _open_store(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[SearchIndex, Updated]:
    import anyio

    from exporter.config import RetryPolicy, Timeouts
    from exporter.errors import FatalError
    from exporter.objectstore.client import open_store
    from exporter.objectstore.target import parse_target
    from exporter.search.bucket import update_store

    if args.manifest:
        raise SearchError("--manifest does not combine with s3://")
    try:
        target = parse_target(args.archive, args.s3_endpoint, environ)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    if args.index:
        path, owned = Path(args.index), False
    else:
        key = f"s3\0{target.bucket}\0{target.prefix}\0{target.endpoint or ''}"
        path, owned = cache_index(key, environ), True
    index = _open_index(path, owned)

    async def go() -> Updated:
        async with open_store(target, RetryPolicy(), Timeouts(), 8) as store:
            await store.check_bucket()
            return await update_store(index, store)

    try:
        return index, anyio.run(go, backend="asyncio")
    except FatalError as exc:
        index.close()
        raise SearchError(exc.message) from None
    except (OSError, sqlite3.Error) as exc:
        index.close()
        raise SearchError(_os_problem(exc, path)) from None


def _open_index(path: Path, owned: bool) -> SearchIndex:
    try:
        return SearchIndex(path, owned)
    except NotAnIndex as exc:
        raise SearchError(f"{exc}: not touched (choose another --index)") from None
    except (OSError, sqlite3.Error) as exc:
        raise SearchError(_os_problem(exc, path)) from None


def _os_problem(exc: OSError | sqlite3.Error, path: Path) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or path}"
    return f"the index {path} cannot be written: {exc}"


def _report_update(updated: Updated, index: SearchIndex) -> None:
    """What the update did, on stderr (nothing when the manifest had not changed)."""
    from exporter.search.show import visible

    for line in updated.damaged:
        print(f"{PROG}: not indexed: {visible(line)}", file=sys.stderr)
    if not updated.fresh and (updated.read or updated.removed):
        print(
            f"{PROG}: index updated: {updated.read} session(s) read, {updated.removed} removed",
            file=sys.stderr,
        )
    missing = index.unindexed()
    if missing and not updated.damaged:
        print(
            f"{PROG}: {missing} session(s) not indexed (damaged files: see rtk-export verify)",
            file=sys.stderr,
        )


def _search(index: SearchIndex, request: Request, as_json: bool) -> int:
    from exporter.search.show import new_marks, print_hits

    marks = new_marks()
    hits = index.search(request.match, request.filters, None if as_json else marks)
    mode = "json" if as_json else ("rich" if sys.stdout.isatty() else "plain")
    try:
        print_hits(hits, sys.stdout, mode, marks)
    except BrokenPipeError:
        # `| head` has read enough: no traceback, and none when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_HITS if hits else EXIT_NONE
