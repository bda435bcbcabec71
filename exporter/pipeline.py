"""One run: read units, skip what is intact, export the rest concurrently, record each outcome.

One task group: a producer feeding a small bounded stream, `concurrency` workers, and a signal
watcher. Memory stays flat: the stream holds a few units, de-duplication a 64-bit key per unit.
"""

from __future__ import annotations

import logging
import select
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from exporter.client import ApiClient, Link
from exporter.config import Settings
from exporter.download import Downloader, Stored, remove_stale_temps
from exporter.errors import DiskError, ExportError, FatalError, LinkExpired, Unavailable
from exporter.keyset import KeySet
from exporter.manifest import DONE, Manifest, file_matches, record, unit_key
from exporter.ratelimit import Pacer
from exporter.retry import Tally, with_retries
from exporter.sessions import InvalidLine, Pair, open_sessions, read_pairs
from exporter.stats import Stats

log = logging.getLogger(__name__)

READ_BATCH = 512  # SESSIONS lines read per trip to a worker thread


@dataclass(frozen=True, slots=True)
class Unit:
    """One (pair, kind): what is exported, paced, retried and recorded as one."""

    app_id: str
    session_id: str
    kind: str


def relative_path(unit: Unit, transcript_format: str) -> str:
    name = {
        "chat": f"{unit.session_id}.csv",
        "transcript": f"{unit.session_id}.transcript.{transcript_format}",
        "summary": f"{unit.session_id}.summary.txt",
    }[unit.kind]
    return f"{unit.app_id}/{name}"


class Reporter(Protocol):
    """What the pipeline tells the outside (progress display, periodic log lines)."""

    def recorded(self, rec: dict[str, Any]) -> None: ...

    async def run(self, stats: Stats) -> None: ...


class QuietReporter:
    def recorded(self, rec: dict[str, Any]) -> None:
        return None

    async def run(self, stats: Stats) -> None:
        await anyio.sleep_forever()


@dataclass(slots=True)
class RunResult:
    run_id: str
    stats: Stats
    seconds: float
    invalid_lines: int = 0
    fatal: FatalError | None = None
    stopped_by: int | None = None  # the signal number that stopped the run
    left: int = 0  # units not started because of --max-duration
    cut_short: bool = False  # --max-duration stopped the reading of the input
    plan: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Attempts(Tally):
    """Per-unit retry state: the URL in hand, HTTP requests spent, failures counted by kind."""

    link: Link | None = None
    fresh: bool = False
    had_link: bool = False
    http: int = 0


def new_run_id() -> str:
    """Sortable and unique: the start time in UTC and a random suffix."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def _take(it: Iterator[Pair | InvalidLine], n: int) -> list[Pair | InvalidLine]:
    out = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out


async def read_live(stream: BinaryIO) -> AsyncIterator[Pair | InvalidLine]:
    """Pairs from a pipe, each as soon as its line arrives.

    A daemon thread reads, so that a pipe left open by the writer can neither hold back the
    pairs already written (it hands over what it has whenever the pipe runs dry) nor keep the
    process alive after a signal (anyio's worker threads are joined at exit).
    """
    send, recv = anyio.create_memory_object_stream[list[Pair | InvalidLine]](4)
    token = anyio.lowlevel.current_token()
    failure: list[BaseException] = []

    def hand_over(batch: list[Pair | InvalidLine]) -> None:
        anyio.from_thread.run(send.send, batch, token=token)

    def pump() -> None:
        try:
            batch: list[Pair | InvalidLine] = []
            for item in read_pairs(stream):
                batch.append(item)
                if len(batch) >= READ_BATCH or not _more_waiting(stream):
                    hand_over(batch)
                    batch = []
            if batch:
                hand_over(batch)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.RunFinishedError):
            return
        except Exception as exc:  # handed to the reading task, which raises it
            failure.append(exc)
        with suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(send.close, token=token)

    threading.Thread(target=pump, name="rtk-export-stdin", daemon=True).start()
    async with recv:
        async for batch in recv:
            for item in batch:
                yield item
    if failure:
        raise failure[0]


def _more_waiting(stream: BinaryIO) -> bool:
    """Whether reading on would not block: bytes (or EOF) wait in the pipe."""
    try:
        return bool(select.select([stream.fileno()], [], [], 0)[0])
    except (OSError, ValueError):  # not a real file: it never blocks
        return True


class Run:
    """Export every unit of the input once, as the spec says; `await run()` returns the result."""

    def __init__(self, settings: Settings, *, reporter: Reporter | None = None,
                 pacer: Pacer | None = None, clock: Callable[[], float] = time.monotonic,
                 handle_signals: bool = True) -> None:
        self.s = settings
        self.run_id = new_run_id()
        self.stats = Stats()
        self.reporter = reporter or QuietReporter()
        self.pacer = pacer or Pacer(settings.rate, hold=settings.timeouts.api)
        self.manifest = Manifest(settings.manifest_path)
        self._clock = clock
        self._handle_signals = handle_signals
        self._seen = KeySet()
        self._deadline = (clock() + settings.max_duration) if settings.max_duration else None
        self._result = RunResult(run_id=self.run_id, stats=self.stats, seconds=0.0)
        self._scope: anyio.CancelScope | None = None
        self._api: ApiClient | None = None
        self._dl: Downloader | None = None

    # -- the run --------------------------------------------------------------------------

    async def run(self, items: AsyncIterator[Pair | InvalidLine] | None = None) -> RunResult:
        started = self._clock()
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
                async with ApiClient(self.s, self.pacer, self.stats) as api, \
                        Downloader(self.s) as dl:
                    self._api, self._dl = api, dl
                    await self._run_group(items if items is not None else self._read_sessions())
                if dl.folder_error is not None:
                    self._stop(dl.folder_error)
                tg.cancel_scope.cancel()
        finally:
            self.manifest.close()  # synchronous: runs to the end even while cancelled
            self._result.seconds = self._clock() - started
        return self._result

    async def _prepare(self) -> None:
        await anyio.to_thread.run_sync(self.manifest.load, abandon_on_cancel=True)
        if not self.s.dry_run:
            removed = await anyio.to_thread.run_sync(remove_stale_temps, self.s.out_dir)
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted run", removed)
            try:
                self.manifest.open_for_append()
            except OSError as exc:
                raise DiskError(f"cannot write the manifest {self.s.manifest_path}: "
                                f"{exc.strerror}") from None

    async def _run_group(self, items: AsyncIterator[Pair | InvalidLine]) -> None:
        send, recv = anyio.create_memory_object_stream[Unit](self.s.concurrency)
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.reporter.run, self.stats)
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
                log.warning("%s received: abandoning units in flight and stopping",
                            signal.Signals(signum).name, extra={"event": "signal"})
                assert self._scope is not None
                self._scope.cancel()
                return

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    # -- the producer ---------------------------------------------------------------------

    async def _read_sessions(self) -> AsyncIterator[Pair | InvalidLine]:
        assert self.s.sessions is not None
        if self.s.sessions == "-":
            async for item in read_live(sys.stdin.buffer):
                yield item
            return
        with open_sessions(self.s.sessions) as stream:
            it = read_pairs(stream)
            while batch := await anyio.to_thread.run_sync(_take, it, READ_BATCH,
                                                          abandon_on_cancel=True):
                for item in batch:
                    yield item

    async def _produce(self, items: AsyncIterator[Pair | InvalidLine],
                       send: MemoryObjectSendStream[Unit]) -> None:
        async with send:
            try:
                async for item in items:
                    if self._past_deadline():
                        self._result.cut_short = True
                        return
                    if isinstance(item, InvalidLine):
                        self._invalid(item)
                        continue
                    for kind in self.s.kinds:
                        if self._seen.add(unit_key(item.app_id, item.session_id, kind)):
                            self.stats.total = (self.stats.total or 0) + 1
                            unit = Unit(item.app_id, item.session_id, kind)
                            try:  # as in _work: no trip round the loop while there is room
                                send.send_nowait(unit)
                            except anyio.WouldBlock:
                                await send.send(unit)
            except FatalError as exc:  # the input may call the API (discovery); disk full
                self._stop(exc)

    def _invalid(self, item: InvalidLine) -> None:
        self._result.invalid_lines += 1
        log.warning("SESSIONS line %d: %s", item.line, item.reason,
                    extra={"event": "invalid", "line": item.line})
        if self.s.dry_run:
            self.stats.counts["invalid"] += 1
            return
        self._finish(record(app_id=item.app_id, session_id=item.session_id, kind=self.s.kinds[0],
                            status="invalid", run_id=self.run_id, line=item.line,
                            error=ExportError(item.reason)))

    # -- the workers ----------------------------------------------------------------------

    async def _work(self, recv: MemoryObjectReceiveStream[Unit]) -> None:
        async with recv:
            while True:
                # A unit already waiting is taken at once: receive() would first go round the
                # event loop (a checkpoint), once per unit.
                try:
                    unit = recv.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        unit = await recv.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                if self._past_deadline():
                    self._result.left += 1
                    continue
                try:
                    rec = await self._do(unit)
                except FatalError as exc:
                    self._stop(exc)
                    return
                if rec is not None:
                    try:
                        self._finish(rec)
                    except FatalError as exc:
                        self._stop(exc)
                        return

    def _stop(self, exc: FatalError) -> None:
        if self._result.fatal is None:
            self._result.fatal = exc
            log.error("stopping the run: %s", exc.message)
        assert self._scope is not None
        self._scope.cancel()

    def _finish(self, rec: dict[str, Any]) -> None:
        self.stats.counts[rec["status"]] += 1
        if rec["status"] == "exported":
            self.stats.bytes += rec["bytes"]
        if not self.s.dry_run:
            try:
                self.manifest.append(rec)
            except OSError as exc:
                # A full disk: the line may be torn, and the next run tolerates that.
                raise DiskError(f"cannot write the manifest {self.s.manifest_path}: "
                                f"{exc.strerror}") from None
        self.reporter.recorded(rec)

    async def _do(self, unit: Unit) -> dict[str, Any] | None:
        rel = relative_path(unit, self.s.transcript_format)
        final = self.s.out_dir / rel
        prior = self.manifest.latest(unit.app_id, unit.session_id, unit.kind)
        if prior is not None and prior.get("status") in DONE:
            if await anyio.to_thread.run_sync(file_matches, final, prior.get("bytes"),
                                              prior.get("sha256")):
                if self.s.dry_run:
                    self._plan("skip", unit)
                    return None
                return record(app_id=unit.app_id, session_id=unit.session_id, kind=unit.kind,
                              status="skipped", run_id=self.run_id, path=rel,
                              size=prior["bytes"], sha256=prior["sha256"])
            # An archived file went missing or changed: worth a line of its own in the log,
            # whatever the new export's fate.
            log.warning("%s was exported by an earlier run but is missing or changed on disk; "
                        "exporting it again", rel,
                        extra={"event": "damaged", "app_id": unit.app_id,
                               "session_id": unit.session_id, "kind": unit.kind})
        if self.s.dry_run:
            self._plan("export", unit)
            return None
        state = _Attempts()
        try:
            stored = await self._export(unit, final, state)
        except Unavailable as exc:
            return self._record(unit, "unavailable", state, error=exc)
        except FatalError:
            raise
        except ExportError as exc:
            log.warning("%s/%s %s failed after %d attempt(s): %s", unit.app_id, unit.session_id,
                        unit.kind, state.http, exc.message,
                        extra={"event": "failed", "app_id": unit.app_id,
                               "session_id": unit.session_id, "kind": unit.kind})
            # Keep naming the archived copy (path, size, SHA-256) an earlier run recorded, so
            # that `verify` goes on reporting it missing or corrupt instead of forgetting it.
            known = prior if prior is not None and prior.get("sha256") else {}
            return self._record(unit, "failed", state, error=exc, path=known.get("path"),
                                size=known.get("bytes"), sha256=known.get("sha256"))
        log.debug("%s exported (%d bytes)", rel, stored.size,
                  extra={"event": "exported", "app_id": unit.app_id,
                         "session_id": unit.session_id, "kind": unit.kind})
        return self._record(unit, "exported", state, path=rel, size=stored.size,
                            sha256=stored.sha256)

    def _plan(self, what: str, unit: Unit) -> None:
        """--dry-run: count the unit under `what` (and `what:kind`) instead of doing it."""
        for key in (what, f"{what}:{unit.kind}"):
            self._result.plan[key] = self._result.plan.get(key, 0) + 1
        log.debug("plan: %s %s/%s %s", what, unit.app_id, unit.session_id, unit.kind,
                  extra={"event": "plan", "app_id": unit.app_id,
                         "session_id": unit.session_id, "kind": unit.kind})

    def _record(self, unit: Unit, status: str, state: _Attempts, *,
                error: ExportError | None = None, path: str | None = None,
                size: int | None = None, sha256: str | None = None) -> dict[str, Any]:
        return record(app_id=unit.app_id, session_id=unit.session_id, kind=unit.kind,
                      status=status, run_id=self.run_id, attempts=state.http, error=error,
                      path=path, size=size, sha256=sha256)

    async def _export(self, unit: Unit, final: Path, state: _Attempts) -> Stored:
        return await with_retries(lambda: self._attempt(unit, final, state), self.s.retry,
                                  state, self._count_retry)

    async def _attempt(self, unit: Unit, final: Path, state: _Attempts) -> Stored:
        assert self._api is not None and self._dl is not None
        # A URL is asked for just before its download; one in hand is reused only while it
        # has life left, but a freshly issued one is used at once, however short its life.
        if state.link is None or not (state.fresh or state.link.usable_for(1.0)):
            if state.had_link:
                self.stats.url_refreshes += 1
            state.link = None
            state.http += 1
            state.link = await self._api.get_link(unit.app_id, unit.session_id, unit.kind)
            state.fresh = state.had_link = True
        link, state.fresh = state.link, False
        state.http += 1
        try:
            return await self._dl.fetch(link, final)
        except LinkExpired:
            state.link = None
            raise

    def _count_retry(self) -> None:
        self.stats.retries += 1
