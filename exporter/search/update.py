"""Bring the index up to date from the manifest, of a folder or of a bucket: nothing at all when
the manifest is as it was; else only the sessions whose files changed are read again, and the
sessions no longer in the manifest leave the index."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from exporter.manifest import Manifest
from exporter.search.index import SearchIndex
from exporter.search.rows import KINDS, SessionFile, Unreadable, session_rows
from exporter.sessions import app_id_problem, session_id_problem

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from exporter.objectstore.client import Store

log = logging.getLogger("exporter.search")

_COMMIT_EVERY = 200  # sessions: a build cut short keeps what it did
_DOWNLOADS = 8  # objects fetched at once from a bucket

OnRead = Callable[[str, str], None]
Todo = tuple[str, str, str, list[SessionFile]]  # app, session, fingerprint, files
Fetched = tuple[str, str, str, list[tuple[SessionFile, Path]], Unreadable | None]


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


def _reload(
    index: SearchIndex, units: Iterable[tuple[str, str, SessionFile]], done: Updated
) -> None:
    index.load_units(units)
    done.removed = index.remove_gone()


def _index_one(
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
        _reload(index, manifest_units(manifest), done)
    finally:
        manifest.close()
    try:
        for app, sid, fp, files in index.changed():
            located = [(f, out_dir / f.rel) for f in files]
            _index_one(index, app, sid, fp, located, done, on_read)
    finally:
        if done.read:
            index.commit()
    index.set_meta("manifest", token)
    return done


# -- a bucket ------------------------------------------------------------------------------


async def update_store(index: SearchIndex, store: Store, on_read: OnRead | None = None) -> Updated:
    """The same from `PREFIX/manifest/` and the objects, read through the store's client (its
    retries and error mapping); objects are fetched a few at a time into a temporary area."""
    import shutil

    from exporter.objectstore.manifest import FOLDER, SUFFIX, StoreManifest
    from exporter.objectstore.upload import make_temp_area

    folder = store.target.key(FOLDER)
    listing = []
    async for page in store.list_pages(folder):
        for obj in page:
            key = obj["Key"]
            if key.endswith(SUFFIX) and "/" not in key[len(folder) :]:
                listing.append([key, str(obj.get("ETag", "")), int(obj.get("Size", 0))])
    token = hashlib.sha256(json.dumps([str(store.target), listing]).encode()).hexdigest()
    done = Updated()
    if index.meta("manifest") == token:
        done.fresh = True
        return done
    tmp = Path(make_temp_area())
    try:
        manifest = StoreManifest(store, tmp / "manifest.read.jsonl")
        await manifest.fetch()
        manifest.load()
        try:
            _reload(index, manifest_units(manifest), done)
        finally:
            manifest.close()
        try:
            await _fetch_and_index(index, store, tmp, done, on_read)
        finally:
            if done.read:
                index.commit()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    index.set_meta("manifest", token)
    return done


async def _fetch_and_index(
    index: SearchIndex, store: Store, tmp: Path, done: Updated, on_read: OnRead | None
) -> None:
    import anyio

    todo_send, todo_recv = anyio.create_memory_object_stream[Todo](_DOWNLOADS)
    got_send, got_recv = anyio.create_memory_object_stream[Fetched](_DOWNLOADS)

    async def produce() -> None:
        async with todo_send:
            for item in index.changed():
                await todo_send.send(item)

    async def fetch(
        recv: MemoryObjectReceiveStream[Todo], send: MemoryObjectSendStream[Fetched]
    ) -> None:
        async with recv, send:
            async for app, sid, fp, files in recv:
                located: list[tuple[SessionFile, Path]] = []
                problem: Unreadable | None = None
                for f in files:
                    fd, name = tempfile.mkstemp(dir=tmp, suffix=".read")
                    os.close(fd)
                    located.append((f, Path(name)))
                    if problem is None and not await _download(store, f.rel, Path(name)):
                        problem = Unreadable(f.rel, "is not in the bucket")
                await send.send((app, sid, fp, located, problem))

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        for _ in range(_DOWNLOADS):
            tg.start_soon(fetch, todo_recv.clone(), got_send.clone())
        todo_recv.close()
        got_send.close()
        async with got_recv:
            async for app, sid, fp, located, problem in got_recv:
                try:
                    _index_one(index, app, sid, fp, located, done, on_read, problem)
                finally:
                    for _, path in located:
                        path.unlink(missing_ok=True)


async def _download(store: Store, rel: str, path: Path) -> bool:
    """The object into `path`; False when it is not there."""
    from exporter.objectstore.client import NotFound

    key = store.target.key(rel)

    async def get() -> None:
        with open(path, "wb") as out:  # noqa: ASYNC230 - a local temporary file, per chunk
            resp = await store.client.get_object(Bucket=store.bucket, Key=key)
            async with resp["Body"] as body:
                async for chunk in body.iter_chunks(1024 * 1024):
                    out.write(chunk)

    try:
        await store.call(f"GET {key}", get)
    except NotFound:
        return False
    return True
