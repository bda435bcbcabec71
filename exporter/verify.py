"""`rtk-export verify DIR`: re-hash the archive against its manifest, offline, no credentials.

Memory stays flat in the archive's size: the manifest is held as an offset index, and the set
of files it names as 64-bit keys.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from exporter.archive import MANIFEST_NAME, SITE_RECORD_NAME, file_matches, is_ours
from exporter.keyset import KeySet, key_of
from exporter.manifest import Manifest

log = logging.getLogger("exporter.verify")


@dataclass(slots=True)
class Findings:
    checked: int = 0
    intact: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.untracked)


def verify(out_dir: Path, manifest_path: Path, *, on_progress: object = None) -> Findings:
    manifest = Manifest(manifest_path)
    manifest.load()
    found = Findings()
    named = KeySet()
    try:
        # Any line's path is "named" (an older line may name a file the last one does not,
        # e.g. after a change of --transcript-format); only last lines are checked.
        for rec in manifest.iter_lines():
            if rec.path is not None:
                named.add(key_of(rec.path))
        for rec in manifest.iter_latest():
            rel = rec.path
            # Every last line that records a stored file, whatever its status: a `failed`
            # re-export of a file that went missing still names the copy that was archived.
            if rel is None or not rec.sha256:
                continue
            found.checked += 1
            path = out_dir / rel
            if not _inside(rel):
                # A hand-edited line: never read, let alone trust, a file outside DIR.
                found.corrupt.append(rel)
            elif not path.is_file():
                found.missing.append(rel)
            elif file_matches(path, rec.bytes, rec.sha256):
                found.intact += 1
            else:
                found.corrupt.append(rel)
            if callable(on_progress):
                on_progress(found.checked)
    finally:
        manifest.close()
    manifest_abs = manifest_path.resolve()
    for path in _files(out_dir):
        if is_ours(path.name) or path.resolve() == manifest_abs:
            continue
        rel = path.relative_to(out_dir).as_posix()
        if key_of(rel) not in named:
            found.untracked.append(rel)
    return found


def _inside(rel: str) -> bool:
    """A plain relative path that stays in DIR (what the exporter itself writes)."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and not rel.startswith("/") and ".." not in parts and "\\" not in rel


def _files(top: Path) -> Iterator[Path]:
    """Every regular file under `top`, streamed (os.walk would list a whole folder first),
    except the pages of a site `render` wrote (a folder holding its record, and below)."""
    stack = [(top, False)]
    while stack:
        folder, in_site = stack.pop()
        in_site = in_site or (folder / SITE_RECORD_NAME).is_file()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), in_site))
                elif entry.is_file(follow_symlinks=False) and not (
                    in_site and entry.name.endswith(".html")
                ):
                    yield Path(entry.path)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="rtk-export verify", description="Re-hash every exported file against the manifest."
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--manifest", metavar="PATH", help="default DIR/manifest.jsonl")
    args = p.parse_args(list(argv))
    from exporter import logs

    logs.setup()
    out = Path(args.dir)
    manifest = Path(args.manifest) if args.manifest else out / MANIFEST_NAME
    if not out.is_dir():
        print(f"rtk-export verify: no such directory: {out}", file=sys.stderr)
        return 2
    if not manifest.is_file():
        print(f"rtk-export verify: no manifest at {manifest}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("verify", total=None)
            found = verify(out, manifest, on_progress=lambda n: bar.update(task, completed=n))
    else:
        found = verify(out, manifest)
    return report(found, "files")


def report(found: Findings, what: str) -> int:
    """One line per problem on stdout, the counts on stderr; the exit code (0 intact, 1 not).
    `what` names what was checked: files of a folder, objects of a bucket."""
    for label, items in (
        ("missing", found.missing),
        ("corrupt", found.corrupt),
        ("untracked", found.untracked),
    ):
        for rel in items:
            print(f"{label}: {rel}")
    print(
        f"verify: {found.checked} {what} checked, {found.intact} intact, "
        f"{len(found.missing)} missing, {len(found.corrupt)} corrupt, "
        f"{len(found.untracked)} untracked",
        file=sys.stderr,
    )
    return 0 if found.ok else 1
