"""Where serve keeps what it receives and exports, opened once: for a folder, its serve lock
(a second serve exits 75), the inbox and the archive beside any export run; for a bucket, the
store's (exporter.objectstore.serve, the one lazy import of it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from exporter.archive import SERVE_LOCK_NAME, WEBHOOKS_NAME
from exporter.config import Settings
from exporter.webhooks.source import Inbox

if TYPE_CHECKING:
    from exporter.archive import Archive
    from exporter.manifest import Manifest


@dataclass(frozen=True, slots=True)
class Destination:
    inbox: Inbox
    make_archive: Callable[[], Archive]  # a fresh one for every run serve makes
    make_manifest: Callable[[Archive], Manifest | None]  # None: the folder's own manifest
    routes: Callable[[], Awaitable[Mapping[str, str]]]  # webhook id -> app, as registered
    poll: float  # seconds between listings of the inbox (other replicas' items)


@asynccontextmanager
async def open_destination(settings: Settings) -> AsyncIterator[Destination]:
    """Raises Locked (exit 75) for a folder another serve holds."""
    if settings.store is not None:
        from exporter.objectstore.serve import open_store_destination

        async with open_store_destination(settings) as dest:
            yield dest
        return
    from exporter.folder import FolderArchive
    from exporter.lock import DirLock
    from exporter.runstate import RunState
    from exporter.webhooks.inbox import FolderInbox
    from exporter.webhooks.routes import load_routes

    out = settings.out_dir
    routes_file = anyio.Path(out / WEBHOOKS_NAME)

    async def routes() -> Mapping[str, str]:
        try:
            return load_routes(await routes_file.read_bytes())
        except FileNotFoundError:
            return {}

    with DirLock(out, SERVE_LOCK_NAME):
        inbox = FolderInbox(out)
        await inbox.open()
        yield Destination(
            inbox=inbox,
            make_archive=lambda: FolderArchive(out, RunState.load, role="serve"),
            make_manifest=lambda archive: None,
            routes=routes,
            poll=5.0,
        )
