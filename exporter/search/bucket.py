"""The index brought up to date from a bucket: the manifest objects listed (unchanged: nothing
more is read) and copied, then the changed sessions' objects fetched a few at a time into a
temporary area, through the store's client (its retries and error mapping)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from exporter.manifest import Manifest
from exporter.objectstore.client import NotFound, Store
from exporter.objectstore.target import MANIFEST_FOLDER
from exporter.objectstore.upload import make_temp_area
from exporter.search.rows import SessionFile, Unreadable
from exporter.search.update import OnRead, Updated, index_one, manifest_units, reload

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from exporter.search.index import SearchIndex

_DOWNLOADS = 8  # objects fetched at once
_SUFFIX = ".jsonl"  # objectstore.manifest's: PREFIX/manifest/*.jsonl, read in key order
_RESTARTS = 5
Todo = tuple[str, str, str, list[SessionFile]]  # app, session, fingerprint, files
Fetched = tuple[str, str, str, list[tuple[SessionFile, Path]], Unreadable | None]


async def update_store(index: SearchIndex, store: Store, on_read: OnRead | None = None) -> Updated:
    done = Updated()
    listing = await _manifest_objects(store)
    token = hashlib.sha256(json.dumps([str(store.target), listing]).encode()).hexdigest()
    if index.meta("manifest") == token:
        done.fresh = True
        return done
    tmp = Path(make_temp_area())
    try:
        copy = tmp / "manifest.read.jsonl"
        token = await _copy_manifest(store, listing, copy)
        manifest = Manifest(copy)
        manifest.load()
        try:
            reload(index, manifest_units(manifest), done)
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


async def _manifest_objects(store: Store) -> list[list[Any]]:
    """[key, ETag, size] of each manifest object, in key order (the manifest's line order)."""
    folder = store.target.key(MANIFEST_FOLDER)
    out = []
    async for page in store.list_pages(folder):
        for obj in page:
            key = obj["Key"]
            if key.endswith(_SUFFIX) and "/" not in key[len(folder) :]:
                out.append([key, str(obj.get("ETag", "")), int(obj.get("Size", 0))])
    return out


async def _copy_manifest(store: Store, listing: list[list[Any]], dest: Path) -> str:
    """Every manifest object, in order, into `dest`; the token of the listing read. An object
    compacted away between listing and reading (objectstore.manifest) means: list again."""
    for _ in range(_RESTARTS):
        try:
            with open(dest, "w+b") as out:  # noqa: ASYNC230 - local, written per chunk
                for key, _etag, _size in listing:
                    await _get(store, key, out)
                    if out.tell():
                        out.seek(-1, os.SEEK_END)
                        if out.read(1) != b"\n":
                            out.write(b"\n")  # a torn last line must not swallow the next
            return hashlib.sha256(json.dumps([str(store.target), listing]).encode()).hexdigest()
        except NotFound:
            listing = await _manifest_objects(store)
    raise NotFound("the manifest objects kept changing while being read")


async def _get(store: Store, key: str, out: IO[bytes]) -> None:
    start = out.tell()

    async def get() -> None:
        out.seek(start)
        out.truncate()  # a retry starts the object again
        resp = await store.client.get_object(Bucket=store.bucket, Key=key)
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(1024 * 1024):
                out.write(chunk)

    await store.call(f"GET {key}", get)


async def _fetch_and_index(
    index: SearchIndex, store: Store, tmp: Path, done: Updated, on_read: OnRead | None
) -> None:
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
                    index_one(index, app, sid, fp, located, done, on_read, problem)
                finally:
                    for _, path in located:
                        path.unlink(missing_ok=True)


async def _download(store: Store, rel: str, path: Path) -> bool:
    """The object into `path`; False when it is not there."""
    with open(path, "wb") as out:  # noqa: ASYNC230 - a local temporary file, per chunk
        try:
            await _get(store, store.target.key(rel), out)
        except NotFound:
            return False
    return True
