"""The media kinds in a run: attachment units found in each stored chat CSV (handed to the
workers through a small bounded queue, or done at once when it is full), and a session's
recordings, each its own manifest line. Attachment hosts are not the API: nothing here paces
them; recording requests go through the API client, which does."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

import anyio

from exporter.archive import relative_path
from exporter.attachments import Attachment, iter_attachments
from exporter.client import ApiClient
from exporter.config import Settings
from exporter.download import Downloader, Stored
from exporter.errors import (
    ExportError,
    FatalError,
    InvalidItem,
    LinkExpired,
    PermanentError,
    Refused,
    Unavailable,
)
from exporter.keyset import key_of
from exporter.logs import unit_event
from exporter.manifest import DONE, Manifest, Record, Status, record, unit_key
from exporter.media_names import (
    attachment_path,
    extension,
    id_problem,
    recorded_id,
    recording_path,
)
from exporter.recordings import UPLOADED, Recording, RecordingsApi
from exporter.resume import RecordingDownload
from exporter.retry import Attempts, RetryHook, with_retries
from exporter.seam import Archive
from exporter.sessions import Minted, Unit
from exporter.stats import Stats
from exporter.untrusted import UntrustedFetcher

log = logging.getLogger("exporter.pipeline")

Run = Callable[[Attachment], Awaitable[None]]


class MediaExport:
    """Attachments and recordings for the workers of one run."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        manifest: Manifest,
        archive: Archive,
        api: ApiClient,
        downloader: Downloader,
        fetcher: UntrustedFetcher,
        on_retry: RetryHook,
        claim: Callable[[int], bool],
        stats: Stats,
        plan: dict[str, int],
    ) -> None:
        self.s = settings
        self.run_id = run_id
        self.manifest = manifest
        self._archive = archive
        self._fetcher = fetcher
        self._on_retry = on_retry
        self._claim = claim  # True the first time a unit's key is seen in this run
        self._stats = stats  # units found here count in the progress total
        self._plan = plan
        self._recordings = RecordingsApi(api)
        self._recording_dl = RecordingDownload(archive, downloader)
        self.attachments = "attachment" in settings.kinds and not settings.dry_run
        self._queue: deque[Attachment] = deque()
        self._room = max(2, settings.concurrency * 2)
        self._readers = 0  # chat CSVs being read: more attachments may come
        self._changed = anyio.Event()

    # -- the queue between the chat that lists attachments and the workers ---------------

    def take(self) -> Attachment | None:
        return self._queue.popleft() if self._queue else None

    async def drain(self, run: Run) -> None:
        """After the input ends: take attachments until no chat is being read any more."""
        while True:
            att = self.take()
            if att is not None:
                await run(att)
            elif self._readers == 0:
                return
            else:
                await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def after_chat(self, unit: Unit, run: Run) -> None:
        """List the attachments of a chat just stored (or found intact) and queue each; one
        that finds the queue full is done here and now, so that no worker ever waits on it."""
        rel = relative_path(unit.app_id, unit.session_id, "chat", self.s.transcript_format)
        self._readers += 1
        try:
            fh = await self._archive.open_stored(rel)
        except (OSError, ExportError) as exc:
            self._readers -= 1
            self._signal()
            if isinstance(exc, FatalError):
                raise  # the store stays down: the run stops
            why = exc.strerror if isinstance(exc, OSError) else exc.message
            log.warning("%s cannot be read back for its attachments: %s", rel, why)
            return
        try:
            rows = iter_attachments(unit.app_id, unit.session_id, fh)
            while (att := await anyio.to_thread.run_sync(_next, rows)) is not None:
                key = key_of(att.app_id, att.session_id, unit_key("attachment", att.message_id))
                if not self._claim(key):
                    continue
                self._stats.total = (self._stats.total or 0) + 1
                if len(self._queue) < self._room:
                    self._queue.append(att)
                    self._signal()
                else:
                    await run(att)
        finally:
            self._readers -= 1
            self._signal()
            fh.close()

    # -- one attachment --------------------------------------------------------------------

    async def attachment(self, att: Attachment) -> Record:
        app, sid, mid = att.app_id, att.session_id, att.message_id
        if problem := id_problem(mid, "message id"):
            return self._line(att, Status.FAILED, recorded_id(mid), error=InvalidItem(problem))
        link = att.payload.link
        if link is None:
            return self._line(
                att, Status.UNAVAILABLE, mid, error=Unavailable("the message names no link")
            )
        rel = attachment_path(app, sid, mid, extension(att.payload.name, link))
        skipped = await self._skipped(att, mid, rel)
        if skipped is not None:
            return skipped
        if problem := self._fetcher.problem(link):
            return self._failed(att, mid, Refused(f"attachment link refused: {problem}"), 0)
        state = Attempts(what=f"{app}/{sid} attachment {mid}")

        async def attempt() -> Stored:
            state.http += 1
            got = await self._fetcher.fetch(link, rel)
            return Stored(got.size, got.sha256)

        try:
            stored = await with_retries(attempt, self.s.retry, state, self._on_retry)
        except FatalError:
            raise
        except ExportError as exc:
            return self._failed(att, mid, exc, state.http)
        return self._line(att, Status.EXPORTED, mid, state.http, rel, stored)

    # -- a session's recordings ----------------------------------------------------------

    async def recordings(self, unit: Unit, finish: Callable[[Record], None]) -> None:
        """One line per recording of the session, or one `unavailable` line if it has none."""
        if self.s.dry_run:  # listing the recordings would be API requests: counted as one unit
            for key in ("export", "export:recording"):
                self._plan[key] = self._plan.get(key, 0) + 1
            return
        state = Attempts(what=f"{unit.app_id}/{unit.session_id} recordings")
        try:
            found = await self._recordings.of_session(unit.app_id, unit.session_id, state)
        except FatalError:
            raise
        except ExportError as exc:
            finish(self._failed(unit, None, exc, state.http))
            return
        if not found:
            error = Unavailable("the session has no recording")
            finish(self._line(unit, Status.UNAVAILABLE, None, state.http, error=error))
            return
        self._stats.total = (self._stats.total or 0) + len(found) - 1  # one line each
        for rec in found:
            finish(await self._recording(unit, rec, state.http))

    async def delivered_recording(self, unit: Minted) -> Record:
        """A recording named by a webhook: its delivered URL first, fresh ones from the API for
        any attempt after it (a resumed download continues on a new URL, as in an export)."""
        rec = Recording(
            id=unit.recording_id,
            status=UPLOADED,
            session_id=unit.session_id,
            output_file_name=unit.output_file_name,
            file_size=unit.file_size,
            link=unit.link,
        )
        return await self._recording(unit, rec, 0)

    async def _recording(self, unit: Unit, rec: Recording, listed: int) -> Record:
        if problem := id_problem(rec.id, "recording id"):
            rid = recorded_id(rec.id) if isinstance(rec.id, str) else None
            return self._line(unit, Status.FAILED, rid, listed, error=InvalidItem(problem))
        assert isinstance(rec.id, str)
        rid = rec.id
        url = rec.link.url if rec.link else None
        rel = recording_path(
            unit.app_id, unit.session_id, rid, extension(rec.output_file_name, url)
        )
        skipped = await self._skipped(unit, rid, rel)
        if skipped is not None:
            return skipped
        if rec.status != UPLOADED:
            error = Unavailable(f"recording {rid} is {rec.status}, not {UPLOADED} yet")
            return self._line(unit, Status.UNAVAILABLE, rid, listed, error=error)
        state = Attempts(what=f"{unit.app_id}/{unit.session_id} recording {rid}")

        delivered = [rec] if rec.link is not None and isinstance(unit, Minted) else []

        async def attempt() -> Stored:
            # A fresh URL for every attempt: a resumed download continues on a new one. The
            # URL a webhook delivered is the first attempt's, while it has life left.
            first = bool(delivered) and delivered[0].link is not None
            if first and delivered[0].link.usable_for(1.0):  # type: ignore[union-attr]
                now = delivered.pop()
            else:
                first = False
                delivered.clear()
                now = await self._recordings.one(unit.app_id, rid, state)
            if now.status != UPLOADED or now.link is None:
                raise Unavailable(f"recording {rid} is {now.status}, with no download URL")
            state.http += 1
            try:
                size, sha256 = await self._recording_dl.fetch(now.link, rel, rid, now.file_size)
            except PermanentError as exc:
                if first and exc.http_status == 403:  # a delivered URL refused: expired
                    raise LinkExpired("delivered URL refused (HTTP 403)", http_status=403) from None
                raise
            return Stored(size, sha256)

        try:
            stored = await with_retries(attempt, self.s.retry, state, self._on_retry)
        except Unavailable as exc:
            return self._line(unit, Status.UNAVAILABLE, rid, state.http, error=exc)
        except FatalError:
            raise
        except ExportError as exc:
            return self._failed(unit, rid, exc, state.http)
        return self._line(unit, Status.EXPORTED, rid, state.http, rel, stored)

    # -- lines ---------------------------------------------------------------------------

    async def _skipped(self, unit: Unit | Attachment, item: str, rel: str) -> Record | None:
        """The SKIPPED line if an earlier run archived this item and it is still intact."""
        kind = unit.kind
        prior = self.manifest.latest(unit.app_id, unit.session_id, kind, item)
        if prior is None or prior.status not in DONE:
            return None
        path = prior.path or rel
        if not await self._archive.is_intact(path, prior.bytes, prior.sha256):
            return None
        return self._line(
            unit, Status.SKIPPED, item, 0, path, Stored(prior.bytes or 0, prior.sha256 or "")
        )

    def _failed(
        self, unit: Unit | Attachment, item: str | None, exc: ExportError, attempts: int
    ) -> Record:
        log.warning(
            "%s/%s %s %s failed: %s",
            unit.app_id,
            unit.session_id,
            unit.kind,
            item or "",
            exc.message,
            extra=unit_event("failed", unit.app_id, unit.session_id, unit.kind),
        )
        return self._line(unit, Status.FAILED, item, attempts, error=exc)

    def _line(
        self,
        unit: Unit | Attachment,
        status: Status,
        item: str | None,
        attempts: int = 0,
        rel: str | None = None,
        stored: Stored | None = None,
        *,
        error: ExportError | None = None,
    ) -> Record:
        kind = "recording" if unit.kind == "recording" else "attachment"
        if status is Status.EXPORTED and stored is not None:  # as unit.py tells chat's, for -v
            log.debug(
                "%s exported (%d bytes)",
                rel,
                stored.size,
                extra=unit_event("exported", unit.app_id, unit.session_id, kind),
            )
        return record(
            app_id=unit.app_id,
            session_id=unit.session_id,
            kind=kind,
            status=status,
            run_id=self.run_id,
            attempts=attempts,
            path=rel,
            size=stored.size if stored else None,
            sha256=stored.sha256 if stored else None,
            error=error,
            item=item,
        )


def _next(rows: Iterator[Attachment]) -> Attachment | None:
    return next(rows, None)
