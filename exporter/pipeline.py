"""One run, as the spec tells it: `export(settings)` builds the pacer, one API client, the
archive and the downloader, picks the source (SESSIONS, discovery or serve's inbox), runs the
task group (a producer feeding a small bounded stream, `concurrency` workers, a signal
watcher), and commits discovery's state. Memory stays flat: de-duplication is 8 bytes a unit.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from exporter.attachments import Attachment
from exporter.client import ApiClient
from exporter.config import Settings
from exporter.discovery import FAILED_RETRY_AGE, Discovery
from exporter.download import Downloader
from exporter.errors import DiskError, ExportError, FatalError
from exporter.folder import FolderArchive
from exporter.keyset import KeySet, key_of
from exporter.manifest import DONE, Manifest, Record, Status, record, unit_key
from exporter.media import MediaExport
from exporter.media_names import recorded_id
from exporter.progress import QuietReporter, Reporter
from exporter.ratelimit import Pacer
from exporter.resume import MAX_AGE as PARTIAL_MAX_AGE
from exporter.retry import RetryDetails
from exporter.runstate import RunState
from exporter.seam import Archive
from exporter.sessions import (
    InvalidLine,
    Minted,
    Pair,
    Unit,
    count_lines,
    read_file,
    read_live,
)
from exporter.stats import RunResult, Stats, new_run_id
from exporter.unit import Source, UnitExport
from exporter.untrusted import UntrustedFetcher

log = logging.getLogger(__name__)


async def export(
    settings: Settings,
    reporter: Reporter | None = None,
    *,
    pacer: Pacer | None = None,
    clock: Callable[[], float] = time.monotonic,
    handle_signals: bool = True,
) -> RunResult:
    """The whole run; every outcome, discovery's included, is in the RunResult."""
    return await Run(
        settings, reporter=reporter, pacer=pacer, clock=clock, handle_signals=handle_signals
    ).run()


class Run:
    """Export every unit of the input once; `await run()` returns the result."""

    def __init__(
        self,
        settings: Settings,
        *,
        reporter: Reporter | None = None,
        pacer: Pacer | None = None,
        clock: Callable[[], float] = time.monotonic,
        handle_signals: bool = True,
        archive: Archive | None = None,
        manifest: Manifest | None = None,
        source: Source | None = None,
    ) -> None:
        self.s = settings
        self.run_id = new_run_id()
        self.stats = Stats()
        self.reporter = reporter or QuietReporter()
        self.pacer = pacer or Pacer(settings.rate, hold=settings.timeouts.api)
        # The destination, and the manifest that goes with it: DIR by default; object
        # storage hands in its own (exporter.objectstore.run).
        self.manifest = manifest or Manifest(settings.manifest_path)
        self._clock = clock
        self._handle_signals = handle_signals
        self._seen = KeySet()
        self._deadline = (clock() + settings.max_duration) if settings.max_duration else None
        self._result = RunResult(run_id=self.run_id, stats=self.stats)
        self._scope: anyio.CancelScope | None = None
        self._export_unit: UnitExport | None = None
        self._media: MediaExport | None = None
        self._archive = archive or FolderArchive(settings.out_dir, RunState.load)
        self._source = source  # serve's inbox, instead of SESSIONS or discovery

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> RunResult:
        started = self._clock()
        discovery: Discovery | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if self._handle_signals:
                    # Listening before anything else: a signal while the manifest loads must
                    # end the run with 130/143 too, not kill it.
                    await tg.start(self._watch_signals)
                try:
                    await self._prepare()
                except FatalError as exc:
                    self._stop(exc)
                    return self._result
                async with (
                    ApiClient(self.s, self.pacer, self.stats, self._retry_scheduled) as api,
                    self._archive,
                    Downloader(self.s, self._archive) as dl,
                    UntrustedFetcher(self.s, self._archive) as fetcher,
                ):
                    self._media = MediaExport(
                        self.s,
                        self.run_id,
                        self.manifest,
                        self._archive,
                        api,
                        dl,
                        fetcher,
                        self._retry_scheduled,
                        self._seen.add,
                        self.stats,
                        self._result.plan,
                    )
                    self._export_unit = UnitExport(
                        self.s,
                        self.run_id,
                        self.stats,
                        self.manifest,
                        self._archive,
                        api,
                        dl,
                        self._result.plan,
                        self._retry_scheduled,
                    )
                    self.manifest.shared = self._archive.shared
                    if self._source is not None:
                        items: AsyncIterator[Pair | InvalidLine | Minted] = self._source.units()
                    elif self.s.apps:
                        self.stats.discovering = True
                        discovery = await self._discovery(api)
                        items = discovery.pairs()
                    else:
                        items = self._read_sessions()
                    await self._run_group(items)
                if self._archive.folder_error is not None:
                    self._stop(self._archive.folder_error)
                tg.cancel_scope.cancel()
        finally:
            self.manifest.close()  # synchronous: runs to the end even while cancelled
            self._result.seconds = self._clock() - started
            self.stats.paused_seconds = self.pacer.paused_seconds
            self.stats.budget_wait_seconds = self.pacer.budget_wait_seconds
        if discovery is not None:
            self._result.apps = discovery.reports
            if not self.s.dry_run:
                discovery.commit(self._result.whole)
        return self._result

    async def _prepare(self) -> None:
        await self._archive.load_manifest(self.manifest)
        self.stats.damaged_lines = self.manifest.damaged_lines
        if not self.s.dry_run:
            removed = await self._archive.clean_up()
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted run", removed)
            old = await self._archive.remove_old_partials(PARTIAL_MAX_AGE, time.time())
            if old:
                log.info("removed %d recording partial(s) not resumed for 7 days", old)
            try:
                self.manifest.open_for_append()
            except OSError as exc:
                raise DiskError(
                    f"cannot write the manifest {self.s.manifest_path}: {exc.strerror}"
                ) from None

    async def _discovery(self, api: ApiClient) -> Discovery:
        state = await self._archive.load_state()
        failed = self.manifest.recent_failures(
            frozenset(self.s.apps), self.s.now - FAILED_RETRY_AGE
        )
        self._result.failed_retried = len(failed)
        return Discovery(self.s, api, state, failed)

    async def _run_group(self, items: AsyncIterator[Pair | InvalidLine | Minted]) -> None:
        send, recv = anyio.create_memory_object_stream[Unit](self.s.concurrency)
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.reporter.run, self.stats, self.pacer)
            if self.s.sessions not in (None, "-"):
                outer.start_soon(self._count_input)
            async with anyio.create_task_group() as inner:
                inner.start_soon(self._produce, items, send)
                for _ in range(self.s.concurrency):
                    inner.start_soon(self._work, recv.clone())
                recv.close()
            outer.cancel_scope.cancel()

    async def _watch_signals(self, *, task_status: TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                self._result.stopped_by = signum
                log.warning(
                    "%s received: abandoning units in flight and stopping",
                    signal.Signals(signum).name,
                    extra={"event": "signal"},
                )
                assert self._scope is not None
                self._scope.cancel()
                return

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def _stop(self, exc: FatalError) -> None:
        if self._result.fatal is None:
            self._result.fatal = exc
            log.error("stopping the run: %s", exc.message)
        assert self._scope is not None
        self._scope.cancel()

    # -- the producer ---------------------------------------------------------------------

    async def _count_input(self) -> None:
        """The display's total: the SESSIONS file's lines, counted in a worker thread while
        the export already runs (a FIFO or a device is not counted: reading it would eat it)."""
        assert self.s.sessions is not None
        lines = await anyio.to_thread.run_sync(count_lines, self.s.sessions, abandon_on_cancel=True)
        if lines is not None and not self.stats.input_done:
            self.stats.expected = lines * len(self.s.kinds)

    def _read_sessions(self) -> AsyncIterator[Pair | InvalidLine]:
        assert self.s.sessions is not None
        if self.s.sessions == "-":
            return read_live(sys.stdin.buffer)
        return read_file(self.s.sessions)

    async def _produce(
        self,
        items: AsyncIterator[Pair | InvalidLine | Minted],
        send: MemoryObjectSendStream[Unit],
    ) -> None:
        kinds = self.s.pair_kinds
        async with send:
            try:
                async for item in items:
                    if self._past_deadline():
                        self._result.cut_short = True
                        return
                    if isinstance(item, Minted):  # de-duplicated by its source, not here
                        self.stats.total = (self.stats.total or 0) + 1
                        await send.send(item)
                        continue
                    if isinstance(item, InvalidLine):
                        self._invalid(item)
                        continue
                    for kind in kinds:
                        if self._seen.add(key_of(item.app_id, item.session_id, kind)):
                            self.stats.total = (self.stats.total or 0) + 1
                            unit = Unit(item.app_id, item.session_id, kind)
                            try:  # fast path: no trip round the loop while there is room
                                send.send_nowait(unit)
                            except anyio.WouldBlock:
                                await send.send(unit)
                self.stats.input_done = True
            except FatalError as exc:  # the input may call the API (discovery); disk full
                self._stop(exc)
            finally:  # a cancelled run closes the SESSIONS file now, not at garbage collection
                if (close := getattr(items, "aclose", None)) is not None:
                    with anyio.CancelScope(shield=True):
                        await close()

    def _invalid(self, item: InvalidLine) -> None:
        self._result.invalid_lines += 1
        ids = {"app_id": item.app_id, "session_id": item.session_id}
        extra = {"event": "invalid", "line": item.line, **ids}
        log.warning("SESSIONS line %d: %s", item.line, item.reason, extra=extra)
        if self.s.dry_run:
            self.stats.counts[Status.INVALID] += 1
            return
        self._finish(
            record(
                app_id=item.app_id,
                session_id=item.session_id,
                kind=self.s.kinds[0],
                status=Status.INVALID,
                run_id=self.run_id,
                line=item.line,
                error=ExportError(item.reason),
            )
        )

    # -- the workers ----------------------------------------------------------------------

    async def _work(self, recv: MemoryObjectReceiveStream[Unit]) -> None:
        async with recv:
            while True:
                assert self._media is not None
                while (att := self._media.take()) is not None:  # queued attachments first
                    await self._attachment(att)
                # Fast path: a unit already waiting is taken at once; receive() would first go
                # round the event loop, once per unit (measured by bench.instructions and
                # bench.ab against the same code without it: docs/performance.md).
                try:
                    unit = recv.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        unit = await recv.receive()
                    except anyio.EndOfStream:
                        break
                except anyio.EndOfStream:
                    break
                if self._past_deadline():
                    self._result.left += 1
                    continue
                try:
                    rec = await self._unit(unit)
                    if rec is not None:
                        if self._source is not None and isinstance(unit, Minted):
                            await self._source.finished(unit, rec)
                        if rec.kind == "chat" and rec.status in DONE and self._media.attachments:
                            await self._media.after_chat(unit, self._attachment)
                except FatalError as exc:
                    self._stop(exc)
                    return
            await self._media.drain(self._attachment)

    async def _unit(self, unit: Unit) -> Record | None:
        """One unit, its line written (None: a dry run, or recordings, which write their
        own), held against any other process on the archive until the line is written."""
        assert self._media is not None and self._export_unit is not None
        async with self._archive.hold(key_of(unit.app_id, unit.session_id, unit.kind)):
            if self._archive.shared:
                self.manifest.refresh()  # what the other process recorded meanwhile
            if unit.kind == "recording" and not isinstance(unit, Minted):
                await self._media.recordings(unit, self._finish)
                return None
            if isinstance(unit, Minted) and unit.kind == "recording":
                rec: Record | None = await self._media.delivered_recording(unit)
            else:
                rec = await self._export_unit(unit)
            if rec is not None:
                if isinstance(unit, Minted):
                    rec.source, rec.delivery_id = "webhook", unit.delivery_id
                self._finish(rec)
            return rec

    async def _attachment(self, att: Attachment) -> None:
        """One attachment unit, as a worker does any unit (deadline, fatal errors)."""
        assert self._media is not None
        if self._past_deadline():
            self._result.left += 1
            return
        item = unit_key("attachment", recorded_id(att.message_id))  # the line's own id
        try:
            async with self._archive.hold(key_of(att.app_id, att.session_id, item)):
                if self._archive.shared:
                    self.manifest.refresh()
                self._finish(await self._media.attachment(att))
        except FatalError as exc:
            self._stop(exc)

    def _finish(self, rec: Record) -> None:
        self.stats.counts[rec.status] += 1
        if rec.status is Status.EXPORTED:
            self.stats.bytes += rec.bytes or 0
        if not self.s.dry_run:
            self.manifest.append(rec)
        self.reporter.recorded(rec)

    def _retry_scheduled(self, details: RetryDetails) -> None:
        """The one hook for every retry of the run: a log line, and counts by kind."""
        self.stats.retries += 1
        self.stats.retries_by_kind[details.kind] += 1
        log.info(
            "retry %d of %s in %.1f s after %s: %s",
            details.retry_number,
            details.what,
            details.wait,
            details.kind,
            details.message,
            extra={
                "event": "retry_scheduled",
                "kind": details.kind,
                "wait": round(details.wait, 3),
                **details.pair,
            },
        )
