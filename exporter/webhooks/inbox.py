"""serve's inbox in a folder: each verified delivery an atomic, fsynced file
`DIR/.rtk-export-inbox/<rtk-uuid>.json` before it is acknowledged; it moves to `done/` once its
unit's manifest line is written, and `done/` answers replays for 30 days (on disk, so memory
stays flat and a restart remembers). Signed but unusable deliveries go to `rejected/` or
`unroutable/` with the reason."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import anyio

from exporter.archive import INBOX_NAME, TMP_PREFIX, TMP_SUFFIX, is_temp_name

KEEP_SECONDS = 30 * 86400  # a delivery id seen in the last 30 days is a replay
ITEM_SUFFIX = ".json"
DONE, REJECTED, UNROUTABLE = "done", "rejected", "unroutable"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def delivery_name(delivery_id: str) -> str:
    """The file stem of a delivery id, which a sender chose: as it is when it is a plain id,
    else a digest of it (never a path)."""
    if _SAFE_ID.fullmatch(delivery_id):
        return delivery_id
    return "x-" + hashlib.sha256(delivery_id.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Item:
    """One kept delivery: its raw body and the headers that matter (never the signature)."""

    delivery_id: str
    received_at: float
    webhook_id: str | None
    body: bytes
    app_id: str | None = None
    event: str | None = None
    reason: str | None = None  # why it was put aside

    def encode(self) -> bytes:
        doc: dict[str, object] = {
            "delivery_id": self.delivery_id,
            "received_at": self.received_at,
            "headers": {"rtk-uuid": self.delivery_id, "rtk-webhook-id": self.webhook_id},
            "app_id": self.app_id,
            "event": self.event,
        }
        if self.reason is not None:
            doc["reason"] = self.reason
        try:
            doc["body"] = self.body.decode("utf-8")
        except UnicodeDecodeError:
            doc["body_base64"] = base64.b64encode(self.body).decode("ascii")
        return json.dumps(doc, ensure_ascii=False).encode() + b"\n"


def decode_item(raw: bytes) -> Item:
    """An item file read back; ValueError when it is not one."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("delivery_id"), str):
        raise ValueError("not an inbox item")
    if isinstance(doc.get("body"), str):
        body = doc["body"].encode("utf-8")
    else:
        body = base64.b64decode(str(doc.get("body_base64", "")))
    headers = doc.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    hook, app, event = headers.get("rtk-webhook-id"), doc.get("app_id"), doc.get("event")
    when = doc.get("received_at")
    return Item(
        delivery_id=doc["delivery_id"],
        received_at=float(when) if isinstance(when, int | float) else 0.0,
        webhook_id=hook if isinstance(hook, str) else None,
        body=body,
        app_id=app if isinstance(app, str) else None,
        event=event if isinstance(event, str) else None,
    )


def _write_new(folder: Path, name: str, data: bytes) -> bool:
    """Create folder/name with `data`, durably, only if it does not exist: temporary file,
    fsync, link(2) (which refuses an existing name, atomically), folder fsync."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, folder / name)
        except FileExistsError:
            return False
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return True


class FolderInbox:
    """The inbox under DIR. Blocking file work runs in threads."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir / INBOX_NAME

    def _open(self) -> None:
        for sub in (DONE, REJECTED, UNROUTABLE):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    # -- receiving -----------------------------------------------------------------------

    def _put(self, item: Item) -> bool:
        name = delivery_name(item.delivery_id) + ITEM_SUFFIX
        done = self.root / DONE / name
        if done.exists():
            return False
        if not _write_new(self.root, name, item.encode()):
            return False
        if done.exists():
            # Done between the check and the link (the fsync between them takes a while): this
            # copy of a finished item is a replay. Only this serve writes here (the serve lock).
            (self.root / name).unlink(missing_ok=True)
            return False
        return True

    async def put(self, item: Item) -> bool:
        """Keep a delivery durably: True if new, False if it is a replay (pending or done
        within 30 days). OSError when it cannot be kept."""
        return await anyio.to_thread.run_sync(self._put, item)

    async def put_aside(self, item: Item, where: str) -> bool:
        """Keep a signed delivery that will not be exported (rejected/, unroutable/)."""
        name = delivery_name(item.delivery_id) + ITEM_SUFFIX
        return await anyio.to_thread.run_sync(_write_new, self.root / where, name, item.encode())

    def _probe(self) -> None:
        # A page written, not just a name made: a full disk still has room for an empty file.
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
        try:
            data = memoryview(bytes(4096))
            while data:  # a short write is a full disk's first answer, EFBIG/ENOSPC its next
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
            os.unlink(tmp)

    async def writable(self) -> bool:
        try:
            await anyio.to_thread.run_sync(self._probe)
        except OSError:
            return False
        return True

    # -- draining ------------------------------------------------------------------------

    def _pending(self) -> list[tuple[int, str]]:
        found = []
        for entry in os.scandir(self.root):
            if entry.name.endswith(ITEM_SUFFIX) and entry.is_file(follow_symlinks=False):
                with suppress(FileNotFoundError):
                    found.append((entry.stat().st_mtime_ns, entry.name[: -len(ITEM_SUFFIX)]))
        return sorted(found)

    async def pending(self) -> list[str]:
        """The names of the items waiting, oldest first."""
        return [name for _, name in await anyio.to_thread.run_sync(self._pending)]

    async def stats(self) -> tuple[int, float]:
        """(items waiting, the oldest one's age in seconds)."""
        found = await anyio.to_thread.run_sync(self._pending)
        age = time.time() - found[0][0] / 1e9 if found else 0.0
        return len(found), max(age, 0.0)

    def _read(self, name: str) -> Item | None:
        try:
            return decode_item((self.root / f"{name}{ITEM_SUFFIX}").read_bytes())
        except FileNotFoundError:
            return None

    async def read(self, name: str) -> Item | None:
        """An item, or None when it is gone (done meanwhile). ValueError if damaged."""
        return await anyio.to_thread.run_sync(self._read, name)

    async def claim(self, name: str) -> bool:
        return True  # one serve per folder: its own items are its own

    def _done(self, name: str) -> None:
        file = f"{name}{ITEM_SUFFIX}"
        with suppress(FileNotFoundError):
            os.replace(self.root / file, self.root / DONE / file)
            os.utime(self.root / DONE / file)  # its 30 days start now

    async def done(self, name: str) -> None:
        await anyio.to_thread.run_sync(self._done, name)

    async def set_aside(self, name: str, where: str, reason: str) -> None:
        """A pending item that turned out unusable: moved to `where` with the reason."""
        item = await self.read(name)
        if item is not None:
            await self.put_aside(dataclasses.replace(item, reason=reason), where)
        await anyio.to_thread.run_sync(
            lambda: (self.root / f"{name}{ITEM_SUFFIX}").unlink(missing_ok=True)
        )

    def _prune(self, now: float) -> int:
        removed = 0
        for entry in os.scandir(self.root / DONE):
            with suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > KEEP_SECONDS:
                    os.unlink(entry.path)
                    removed += 1
        # A killed serve's half-written items: only this serve (it holds the serve lock) writes
        # here, and it has not started listening yet, so none of them is a write in flight.
        for folder in (self.root, self.root / REJECTED, self.root / UNROUTABLE):
            for entry in os.scandir(folder) if folder.is_dir() else ():
                if is_temp_name(entry.name):
                    with suppress(FileNotFoundError):
                        os.unlink(entry.path)
        return removed

    async def prune(self) -> int:
        """Forget delivery ids older than 30 days; remove a killed serve's temporary files
        (call before listening)."""
        return await anyio.to_thread.run_sync(self._prune, time.time())

    async def release(self, name: str) -> None:
        return None
