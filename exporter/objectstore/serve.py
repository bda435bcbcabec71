"""serve on a bucket: the store opened and checked (bucket, credentials, conditional writes
honoured) before anything is received, the shared inbox, and for each run serve makes an
archive that asks the store (not a listing made at its start) whether an object is there."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio

from exporter.archive import WEBHOOKS_NAME
from exporter.config import Settings
from exporter.manifest import Manifest
from exporter.objectstore.archive import StoreArchive
from exporter.objectstore.client import open_store
from exporter.objectstore.inbox import StoreInbox
from exporter.objectstore.manifest import StoreManifest
from exporter.objectstore.state import StoreState
from exporter.stats import new_run_id
from exporter.webhooks.source import Destination

POLL = 1.0  # seconds between listings of the shared inbox: other replicas' deliveries


@asynccontextmanager
async def open_store_destination(settings: Settings) -> AsyncIterator[Destination]:
    from exporter.webhooks.routes import load_routes

    target = settings.store
    assert target is not None
    async with open_store(
        target, settings.retry, settings.timeouts, settings.concurrency + 8
    ) as store:
        await store.check_bucket()
        check = getattr(store, "check_conditions", None)
        if check is not None:
            await check()
        inbox = StoreInbox(store, new_run_id())
        routes_key = target.key(WEBHOOKS_NAME)

        async def routes() -> Mapping[str, str]:
            got = await store.get_bytes(routes_key)
            return load_routes(got[0]) if got is not None else {}

        def make_archive() -> StoreArchive:
            return StoreArchive(store, StoreManifest, StoreState.read, serving=True)

        def make_manifest(archive: object) -> Manifest:
            assert isinstance(archive, StoreArchive)
            archive.manifest.run_id = new_run_id()  # names this run's manifest objects
            return inbox.attach(archive.manifest)

        async with anyio.create_task_group() as tg:
            tg.start_soon(inbox.keep)
            try:
                yield Destination(inbox, make_archive, make_manifest, routes, POLL)
            finally:
                with anyio.CancelScope(shield=True):
                    await inbox.flush_leaving()
                tg.cancel_scope.cancel()
