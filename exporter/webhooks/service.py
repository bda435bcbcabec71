"""serve's life, whatever the archive (opened once: a folder with its serve lock, so that a
second serve exits 75; a bucket by exporter.objectstore.serve, the one lazy import of it): the
key loaded (not ready until it is), the web server up, the pipeline draining the inbox run
after run, old delivery ids forgotten, and on SIGTERM/SIGINT the intake closed, units in
flight given the grace, the rest left waiting."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from aiohttp import web

from exporter.archive import SERVE_LOCK_NAME, WEBHOOKS_NAME
from exporter.config import Settings
from exporter.errors import ExportError
from exporter.webhooks.metrics import ServeMetrics, ServeReporter
from exporter.webhooks.receive import Receiver
from exporter.webhooks.server import Server
from exporter.webhooks.signature import WebhookKey
from exporter.webhooks.source import Destination, InboxSource

if TYPE_CHECKING:
    from exporter.arguments import ServeOptions

log = logging.getLogger("exporter.serve")

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
RESTART_AFTER = 5.0  # seconds before a run stopped by a fatal error (disk full) is made anew
PRUNE_EVERY = 3600.0
KEY_RETRY = (1.0, 60.0)  # first and longest wait between attempts to load the key


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


async def serve(settings: Settings, opts: ServeOptions) -> int:
    """`rtk-export serve`, start to exit code; Locked if another serve holds the folder."""
    async with open_destination(settings) as dest:
        return await Service(settings, opts, dest).run()


class Service:
    """One serve process: `await Service(...).run()` is its exit code."""

    def __init__(self, settings: Settings, opts: ServeOptions, dest: Destination) -> None:
        self.s = settings
        self.opts = opts
        self.inbox = inbox = dest.inbox
        self._make_archive = dest.make_archive
        self._make_manifest = dest.make_manifest
        routes = dest.routes
        kinds = frozenset(settings.pair_kinds)
        self.source = InboxSource(inbox, kinds, poll=dest.poll)
        self.key = WebhookKey(
            key_url=opts.key_url, pem_file=opts.key_file, timeouts=settings.timeouts
        )
        self.receiver = Receiver(
            self.key, inbox, kinds, self.source.notify, routes, opts.default_app
        )
        self.reporter = ServeReporter()
        self.metrics = ServeMetrics(self.reporter, self.receiver.deliveries)
        self.server = Server(self._accept, self._ready, self._exposition)
        self.exporting = False  # a run drains the inbox
        self._drained = anyio.Event()
        self.port = 0

    # -- the server's questions ------------------------------------------------------------

    async def _accept(self, raw: bytes, request: web.Request) -> int:
        return await self.receiver.accept(raw, request.headers)

    async def _ready(self) -> bool:
        if not self.key.ready or not self.exporting:
            return False
        return await self.inbox.writable()

    async def _exposition(self) -> bytes:
        self.metrics.inbox_items, self.metrics.inbox_oldest_age = await self.inbox.stats()
        return self.metrics.exposition()

    # -- the process -----------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit code (143/130, or 2 if it cannot listen)."""
        await self.receiver.load_routes()
        await self.inbox.prune()
        runner = web.AppRunner(self.server.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.opts.host, self.opts.port, shutdown_timeout=1.0)
            await site.start()  # an OSError (address in use) ends it: exit 2
            self.port = int(runner.addresses[0][1])  # the port bound (--listen HOST:0)
            log.info(
                "listening on %s:%d for deliveries to /webhooks/realtimekit",
                self.opts.host,
                self.port,
                extra={"event": "listening", "port": self.port},
            )
            async with self.key:
                return await self._until_signal()
        finally:
            await runner.cleanup()
            if self.opts.metrics_file:
                from prometheus_client import write_to_textfile

                write_to_textfile(self.opts.metrics_file, self.metrics.registry)

    async def _until_signal(self) -> int:
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                tg.start_soon(self._load_key)
                tg.start_soon(self._drain)
                tg.start_soon(self._prune)
                signum = signal.SIGTERM
                async for signum in signals:  # noqa: B007 - the first one ends the service
                    break
            log.warning(
                "%s received: no new deliveries; units in flight have %.0f s to finish",
                signal.Signals(signum).name,
                self.opts.grace,
                extra={"event": "signal"},
            )
            self.server.closing = True
            self.source.stop()
            with anyio.move_on_after(self.opts.grace):
                await self._drained.wait()
            if not self._drained.is_set():
                self.source.abandoned()
                log.warning("units still in flight stay in the inbox for the next serve")
            tg.cancel_scope.cancel()
        return EXIT_SIGNAL[signal.Signals(signum)]

    async def _load_key(self) -> None:
        wait = KEY_RETRY[0]
        while True:
            try:
                await self.key.load()
                log.info("the webhook public key is loaded", extra={"event": "key_loaded"})
                return
            except ExportError as exc:
                why = exc.message
                log.warning("the webhook public key cannot be loaded (not ready): %s", why)
            await anyio.sleep(wait)
            wait = min(wait * 2, KEY_RETRY[1])

    async def _drain(self) -> None:
        """The pipeline over the inbox; a run stopped by a fatal error is made anew."""
        from exporter.pipeline import Run

        try:
            while not self.server.closing:
                archive = self._make_archive()
                run = Run(
                    self.s,
                    reporter=self.reporter,
                    handle_signals=False,
                    archive=archive,
                    manifest=self._make_manifest(archive),
                    source=self.source,
                )
                self.exporting = True
                try:
                    result = await run.run()
                finally:
                    self.exporting = False
                    archive.close()
                if result.fatal is None or self.server.closing:
                    return
                log.error(
                    "the export of deliveries stopped: %s; deliveries are still kept when "
                    "they can be, and the export starts again in %.0f s",
                    result.fatal.message,
                    RESTART_AFTER,
                    extra={"event": "export_stopped"},
                )
                await anyio.sleep(RESTART_AFTER)
        finally:
            self._drained.set()

    async def _prune(self) -> None:
        while True:
            await anyio.sleep(PRUNE_EVERY)
            await self.inbox.prune()
