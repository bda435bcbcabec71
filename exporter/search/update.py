"""Bring the index up to date from a folder's manifest: nothing at all when the manifest is as
it was; else only the sessions whose files changed are read again, and the sessions no longer
in the manifest leave the index. The steps a bucket's update (search.bucket) shares."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from exporter.manifest import Manifest
from exporter.search.rows import KINDS, SessionFile, Unreadable, session_rows
from exporter.sessions import app_id_problem, session_id_problem

if TYPE_CHECKING:
    from exporter.search.index import SearchIndex

log = logging.getLogger("exporter.search")

_COMMIT_EVERY = 200  # sessions: a build cut short keeps what it did

OnRead = Callable[[str, str], None]


@dataclass(slots=True)
class Updated:
    fresh: bool = False  # the manifest had not changed: nothing was looked at
    read: int = 0  # sessions read again
    rows: int = 0
    removed: int = 0
    damaged: list[str] = field(default_factory=list)  # "path: why", this update


def manifest_units(manifest: Manifest) -> Iterator[tuple[str, str, SessionFile]]:
    """The chat and transcript files each unit's last line records as stored. A line whose
    ids break the id rule, or whose path leaves the session's app folder, is passed over: a
    hand-edited manifest must not make us read outside the archive."""
    for rec in manifest.iter_latest():
        if rec.kind not in KINDS or rec.path is None or rec.sha256 is None or rec.bytes is None:
            continue
        app, sid = rec.app_id or "", rec.session_id or ""
        if app_id_problem(app) or session_id_problem(sid) or not _inside(rec.path, app):
            continue
        yield app, sid, SessionFile(rec.kind, rec.path, rec.sha256, rec.bytes)


def _inside(rel: str, app: str) -> bool:
    parts = PurePosixPath(rel).parts
    return (
        len(parts) >= 2
        and parts[0] == app
        and not rel.startswith("/")
        and ".." not in parts
        and "\\" not in rel
    )


def reload(
    index: SearchIndex, units: Iterable[tuple[str, str, SessionFile]], done: Updated
) -> None:
    index.load_units(units)
    done.removed = index.remove_gone()


def index_one(
    index: SearchIndex,
    app: str,
    sid: str,
    fp: str,
    files: list[tuple[SessionFile, Path]],
    done: Updated,
    on_read: OnRead | None,
    problem: Unreadable | None = None,
) -> None:
    """Index one session (in transactions of _COMMIT_EVERY sessions); a damaged one leaves
    the index, to be read again by the next update."""
    if done.read % _COMMIT_EVERY == 0:
        if done.read:
            index.commit()
        index.begin()
    done.read += 1
    if on_read is not None:
        on_read(app, sid)
    try:
        if problem is not None:
            raise problem
        done.rows += index.put_session(app, sid, fp, session_rows(files))
    except Unreadable as exc:
        index.forget(app, sid)
        done.damaged.append(str(exc))


# -- a folder ------------------------------------------------------------------------------


def update_folder(
    index: SearchIndex, out_dir: Path, manifest_path: Path, on_read: OnRead | None = None
) -> Updated:
    st = os.stat(manifest_path)
    # Taken before reading: a manifest that grows meanwhile is read again by the next search.
    token = f"{manifest_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    done = Updated()
    if index.meta("manifest") == token:
        done.fresh = True
        return done
    manifest = Manifest(manifest_path)
    manifest.load()
    try:
        reload(index, manifest_units(manifest), done)
    finally:
        manifest.close()
    try:
        for app, sid, fp, files in index.changed():
            located = [(f, out_dir / f.rel) for f in files]
            index_one(index, app, sid, fp, located, done, on_read)
    finally:
        if done.read:
            index.commit()
    index.set_meta("manifest", token)
    return done
