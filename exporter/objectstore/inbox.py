"""serve's inbox in a bucket, shared by every replica on PREFIX: a delivery is one
conditional PUT (`If-None-Match: *`) of `PREFIX/.rtk-export-inbox/<rtk-uuid>.json`, so it is
stored once whichever replica received it; an item is exported by the replica that holds its
claim (a lease object, the lock's rules: renewed, taken over once expired or its holder dead);
it leaves the inbox once its manifest line is in a manifest object."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio

from exporter.archive import INBOX_NAME
from exporter.errors import ExportError, FatalError
from exporter.manifest import Manifest
from exporter.objectstore.client import NotFound, PreconditionFailed, Store
from exporter.objectstore.lease import Lease, LeaseHeld
from exporter.webhooks.inbox import (
    DONE,
    ITEM_SUFFIX,
    KEEP_SECONDS,
    Item,
    decode_item,
    delivery_name,
)

log = logging.getLogger("exporter.objectstore")

CLAIMS = "claims"
CLAIM_LEASE = 60.0  # seconds; renewed every third of it while the unit is exported
FLUSH_EVERY = 1.0  # seconds between manifest flushes while items wait to leave


class StoreInbox:
    def __init__(self, store: Store, run_id: str, claim_lease: float = CLAIM_LEASE) -> None:
        self._store = store
        self._run_id = run_id
        self._lease = claim_lease
        self.root = store.target.key(f"{INBOX_NAME}/")
        self._claims: dict[str, Lease] = {}
        self._leaving: list[str] = []  # done, waiting for their lines to be in an object
        self._manifest: Manifest | None = None
        self._failing = False

    def _key(self, name: str, sub: str = "") -> str:
        return f"{self.root}{sub + '/' if sub else ''}{name}{ITEM_SUFFIX}"

    def attach(self, manifest: Manifest) -> Manifest:
        """The manifest of the run now draining the inbox: flushed before items leave."""
        self._manifest = manifest
        return manifest

    # -- receiving -----------------------------------------------------------------------

    async def put(self, item: Item) -> bool:
        name = delivery_name(item.delivery_id)
        if await self._exists(self._key(name, DONE)):
            return False
        try:
            await self._store.put(
                self._key(name), item.encode(), IfNoneMatch="*", ContentType="application/json"
            )
        except PreconditionFailed:
            return False  # kept already, by this replica or another
        except ExportError:
            self._failing = True
            raise
        self._failing = False
        return True

    async def put_aside(self, item: Item, where: str) -> bool:
        name = delivery_name(item.delivery_id)
        try:
            await self._store.put(self._key(name, where), item.encode(), IfNoneMatch="*")
        except PreconditionFailed:
            return False
        return True

    async def _exists(self, key: str) -> bool:
        c = self._store.client
        try:
            await self._store.call(
                f"HEAD {key}", partial(c.head_object, Bucket=self._store.bucket, Key=key)
            )
        except NotFound:
            return False
        return True

    async def writable(self) -> bool:
        return not self._failing

    # -- draining ------------------------------------------------------------------------

    async def _listing(self) -> list[dict[str, Any]]:
        c, found = self._store.client, []
        kw: dict[str, Any] = {"Bucket": self._store.bucket, "Prefix": self.root, "Delimiter": "/"}
        while True:
            page = await self._store.call("LIST inbox", partial(c.list_objects_v2, **kw))
            found += [o for o in page.get("Contents") or () if o["Key"].endswith(ITEM_SUFFIX)]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return found
            kw["ContinuationToken"] = token

    async def pending(self) -> list[str]:
        found = sorted(await self._listing(), key=lambda o: (o.get("LastModified"), o["Key"]))
        return [o["Key"][len(self.root) : -len(ITEM_SUFFIX)] for o in found]

    async def stats(self) -> tuple[int, float]:
        found = await self._listing()
        times = [o["LastModified"] for o in found if isinstance(o.get("LastModified"), datetime)]
        age = (datetime.now(UTC) - min(times)).total_seconds() if times else 0.0
        return len(found), max(age, 0.0)

    async def claim(self, name: str) -> bool:
        """Hold the item's claim; False if another live replica holds it."""
        lease = Lease(self._store, self._run_id, self._lease, key=self._key(name, CLAIMS))
        try:
            await lease.acquire()
        except LeaseHeld:
            return False
        self._claims[name] = lease
        return True

    async def release(self, name: str) -> None:
        lease = self._claims.pop(name, None)
        if lease is not None:
            with anyio.CancelScope(shield=True):
                await lease.release()

    async def read(self, name: str) -> Item | None:
        got = await self._store.get_bytes(self._key(name))
        return decode_item(got[0]) if got is not None else None

    async def done(self, name: str) -> None:
        self._leaving.append(name)  # leaves once the manifest object with its line is written

    async def set_aside(self, name: str, where: str, reason: str) -> None:
        got = await self._store.get_bytes(self._key(name))
        if got is not None:
            try:
                item = decode_item(got[0])
                raw = dataclasses.replace(item, reason=reason).encode()
            except ValueError:
                raw = got[0]
            await self._store.put(self._key(name, where), raw)
        await self._store.delete(self._key(name))
        await self.release(name)

    async def prune(self) -> int:
        """Forget delivery ids older than 30 days (their `done/` markers)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=KEEP_SECONDS)
        removed = 0
        async for page in self._store.list_pages(f"{self.root}{DONE}/"):
            for obj in page:
                when = obj.get("LastModified")
                if isinstance(when, datetime) and when < cutoff:
                    await self._store.delete(obj["Key"])
                    removed += 1
        return removed

    # -- the background: claims renewed, items leaving -------------------------------------

    async def keep(self) -> None:
        """Renew the claims held and let done items leave, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_claims)
            while True:
                await anyio.sleep(FLUSH_EVERY)
                await self.flush_leaving()

    async def flush_leaving(self) -> None:
        if not self._leaving:
            return
        names, self._leaving = self._leaving, []
        try:
            if self._manifest is not None:
                await self._manifest.flush()  # type: ignore[attr-defined]
            for name in names:
                await self._store.put(self._key(name, DONE), b"{}\n")
                await self._store.delete(self._key(name))
                await self.release(name)
        except ExportError as exc:
            log.warning("inbox items could not leave yet: %s", exc.message)
            self._leaving = names + self._leaving

    async def _renew_claims(self) -> None:
        while True:
            await anyio.sleep(self._lease / 3)
            for name, lease in list(self._claims.items()):
                try:
                    await lease.renew()
                except FatalError:
                    log.warning("the claim on inbox item %s was taken over", name)
                    self._claims.pop(name, None)
