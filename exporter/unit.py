"""What one unit goes through: skipped if its archived copy is intact, else a fresh URL just
before its download, retried as the policy says, and its outcome as a manifest line; and
`Source`, where units that come with their URLs (serve's inbox) arrive from."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from exporter.archive import relative_path
from exporter.client import ApiClient
from exporter.config import Settings
from exporter.download import Downloader, Stored
from exporter.errors import ExportError, FatalError, LinkExpired, PermanentError, Unavailable
from exporter.logs import unit_event
from exporter.manifest import DONE, Manifest, Record, Status, record
from exporter.retry import Attempts, RetryHook, with_retries
from exporter.seam import Archive
from exporter.sessions import Minted, Unit
from exporter.stats import Stats
from exporter.urls import Link

log = logging.getLogger("exporter.pipeline")


class Source(Protocol):
    """Units that arrive with their URLs (serve's inbox), yielded until it stops; told of
    each one's manifest line, once written."""

    def units(self) -> AsyncIterator[Minted]: ...

    async def finished(self, unit: Minted, rec: Record) -> None: ...


@dataclass(slots=True)
class _UnitAttempts(Attempts):
    """A unit's attempts, and the URL in hand."""

    link: Link | None = None
    fresh: bool = False
    had_link: bool = False


class UnitExport:
    """`await export_unit(unit)`: one unit, start to manifest line; shared by the workers."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        stats: Stats,
        manifest: Manifest,
        archive: Archive,
        api: ApiClient,
        downloader: Downloader,
        plan: dict[str, int],
        on_retry: RetryHook,
    ) -> None:
        self.s = settings
        self.run_id = run_id
        self.stats = stats
        self.manifest = manifest
        self._archive = archive
        self._api = api
        self._dl = downloader
        self._plan_counts = plan
        self._on_retry = on_retry

    async def __call__(self, unit: Unit) -> Record | None:
        """The unit skipped if intact, else exported; its manifest line (None in a dry run)."""
        rel = relative_path(unit.app_id, unit.session_id, unit.kind, self.s.transcript_format)
        prior = self.manifest.latest(unit.app_id, unit.session_id, unit.kind)
        if prior is not None and prior.status in DONE:
            if await self._archive.is_intact(rel, prior.bytes, prior.sha256):
                if self.s.dry_run:
                    self._plan("skip", unit)
                    return None
                return self._record(
                    unit, Status.SKIPPED, None, path=rel, size=prior.bytes, sha256=prior.sha256
                )
            # An archived file went missing or changed: worth a line of its own in the log,
            # whatever the new export's fate.
            log.warning(
                "%s was exported by an earlier run but is missing or changed on disk; "
                "exporting it again",
                rel,
                extra=unit_event("damaged", unit.app_id, unit.session_id, unit.kind),
            )
        if self.s.dry_run:
            self._plan("export", unit)
            return None
        state = _UnitAttempts(what=f"{unit.app_id}/{unit.session_id} {unit.kind}")
        if isinstance(unit, Minted):
            state.link = unit.link  # used while it has life left, as any URL in hand
        try:
            stored = await self._export(unit, rel, state)
        except Unavailable as exc:
            return self._record(unit, Status.UNAVAILABLE, state, error=exc)
        except FatalError:
            raise
        except ExportError as exc:
            log.warning(
                "%s/%s %s failed after %d attempt(s): %s",
                unit.app_id,
                unit.session_id,
                unit.kind,
                state.http,
                exc.message,
                extra=unit_event("failed", unit.app_id, unit.session_id, unit.kind),
            )
            # Keep naming the archived copy (path, size, SHA-256) an earlier run recorded, so
            # that `verify` goes on reporting it missing or corrupt instead of forgetting it.
            known = prior if prior is not None and prior.sha256 else None
            return self._record(
                unit,
                Status.FAILED,
                state,
                error=exc,
                path=known.path if known else None,
                size=known.bytes if known else None,
                sha256=known.sha256 if known else None,
            )
        log.debug(
            "%s exported (%d bytes)",
            rel,
            stored.size,
            extra=unit_event("exported", unit.app_id, unit.session_id, unit.kind),
        )
        return self._record(
            unit, Status.EXPORTED, state, path=rel, size=stored.size, sha256=stored.sha256
        )

    def _plan(self, what: str, unit: Unit) -> None:
        """--dry-run: count the unit under `what` (and `what:kind`) instead of doing it."""
        for key in (what, f"{what}:{unit.kind}"):
            self._plan_counts[key] = self._plan_counts.get(key, 0) + 1
        log.debug(
            "plan: %s %s/%s %s",
            what,
            unit.app_id,
            unit.session_id,
            unit.kind,
            extra=unit_event("plan", unit.app_id, unit.session_id, unit.kind),
        )

    def _record(
        self,
        unit: Unit,
        status: Status,
        state: Attempts | None,
        *,
        error: ExportError | None = None,
        path: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
    ) -> Record:
        return record(
            app_id=unit.app_id,
            session_id=unit.session_id,
            kind=unit.kind,
            status=status,
            run_id=self.run_id,
            attempts=state.http if state else 0,
            error=error,
            path=path,
            size=size,
            sha256=sha256,
        )

    async def _export(self, unit: Unit, rel: str, state: _UnitAttempts) -> Stored:
        return await with_retries(
            lambda: self._attempt(unit, rel, state), self.s.retry, state, self._on_retry
        )

    async def _attempt(self, unit: Unit, rel: str, state: _UnitAttempts) -> Stored:
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
            return await self._dl.fetch(link, rel)
        except LinkExpired:
            state.link = None
            raise
        except PermanentError as exc:
            # A delivered URL refused (403) is taken for expired: one fresh URL from the API.
            if exc.http_status == 403 and isinstance(unit, Minted) and link is unit.link:
                state.link = None
                raise LinkExpired("delivered URL refused (HTTP 403)", http_status=403) from None
            raise
