"""Discovery: the pairs of each app's sessions started in [since, until), listed page by page
as the export consumes them, plus remembered LIVE sessions and recently failed pairs. The
domain (windows, LIVE and ENDED, breakout rooms), not the protocol, which is the client's."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

from exporter.client import ApiClient
from exporter.config import Settings
from exporter.errors import ExportError, FatalError, PermanentError
from exporter.runstate import RunState
from exporter.sessions import Pair, session_id_problem
from exporter.stats import AppReport
from exporter.times import parse_rfc3339, rfc3339

log = logging.getLogger(__name__)

# The spec: `last-run` reaches back 24 h before the last run's start, so that a session still
# live then, or ended around the boundary, is listed again (and skipped if already exported).
OVERLAP = timedelta(hours=24)
DEFAULT_SINCE = timedelta(days=7)  # RealtimeKit keeps chat 7 days by default
FAILED_RETRY_AGE = timedelta(days=7)


class Discovery:
    """Lists the apps' sessions for one run; `pairs()` is the run's source of pairs.

    Listing without a status filter and sorting LIVE from ENDED here costs one pass instead
    of two, and keeps the listed set stable while it is paged: with `status=ENDED`, a session
    that ends mid-listing would shift the pages under us.
    """

    def __init__(
        self, settings: Settings, api: ApiClient, state: RunState, failed: list[Pair]
    ) -> None:
        self.s = settings
        self.now = settings.now
        self.state = state
        self._api = api
        self._failed = failed
        self.reports = {app: AppReport(*self.window(app)) for app in settings.apps}
        self._remembered = {app: state.live(app) for app in settings.apps}
        self._live_seen: dict[str, set[str]] = {app: set() for app in settings.apps}
        self._resolved: dict[str, set[str]] = {app: set() for app in settings.apps}

    def window(self, app_id: str) -> tuple[datetime, datetime]:
        """[since, until) for this app; `last-run` (the default) read from the state file."""
        until = self.s.until or self.now
        since = self.s.since
        if since is None:
            last = self.state.last_run(app_id)
            since = last - OVERLAP if last is not None else self.now - DEFAULT_SINCE
        return since, until

    # -- the pairs ------------------------------------------------------------------------

    async def pairs(self) -> AsyncIterator[Pair]:
        retry, self._failed = self._failed, []
        if retry:
            log.info(
                "retrying %d pair(s) that failed in the last 7 days",
                len(retry),
                extra={"event": "retry_failed"},
            )
        for pair in retry:
            yield pair
        del retry
        for app in self.s.apps:
            report = self.reports[app]
            for sid in sorted(self._remembered[app]):
                async for pair in self._look_up(app, sid, report):
                    yield pair
            try:
                async for pair in self._list(app, report):
                    yield pair
            except FatalError:
                raise
            except ExportError as exc:
                report.problems += 1
                log.error(
                    "listing the sessions of app %s broke off: %s",
                    app,
                    exc.message,
                    extra={"event": "listing_failed", "app_id": app},
                )
            log.info(
                "app %s: %d session(s) listed in %d page(s), started in [%s, %s); "
                "%d ENDED handed to the export (breakout rooms and remembered sessions "
                "included), %d LIVE remembered",
                app,
                report.listed,
                report.pages,
                rfc3339(report.since),
                rfc3339(report.until),
                report.ended,
                report.live,
                extra={"event": "listed", "app_id": app},
            )

    async def _look_up(self, app: str, sid: str, report: AppReport) -> AsyncIterator[Pair]:
        """A session remembered LIVE: exported (with its rooms) once it has ENDED."""
        report.looked_up += 1
        try:
            session = await self._api.get_session(app, sid)
        except FatalError:
            raise
        except ExportError as exc:
            if exc.http_status == 404 and type(exc) is PermanentError:
                log.warning(
                    "app %s session %s, remembered LIVE, no longer exists; forgotten",
                    app,
                    sid,
                    extra={"event": "live_gone", "app_id": app, "session_id": sid},
                )
                self._resolved[app].add(sid)
            else:
                report.problems += 1
                log.error(
                    "app %s session %s, remembered LIVE, could not be looked up: %s",
                    app,
                    sid,
                    exc.message,
                    extra={"event": "lookup_failed", "app_id": app, "session_id": sid},
                )
            return
        for pair in self._take(app, session, report):
            yield pair

    async def _list(self, app: str, report: AppReport) -> AsyncIterator[Pair]:
        if report.since >= report.until:
            log.warning(
                "app %s: empty window [%s, %s): nothing listed",
                app,
                rfc3339(report.since),
                rfc3339(report.until),
            )
            report.complete = True
            return
        # Oldest first, in creation order: new sessions join the end and do not shift the
        # pages already read, and those nearest the 7-day chat retention are exported first.
        query = {
            "start_time": rfc3339(report.since),
            "end_time": rfc3339(report.until),
            "sort_by": "createdAt",
            "sort_order": "ASC",
        }
        async for page in self._api.pages(app, query, per_page=self.s.per_page):
            report.pages += 1
            for session in page.items:
                report.listed += 1
                if isinstance(session, dict) and self._in_window(session, report):
                    for pair in self._take(app, session, report):
                        yield pair
        report.complete = True

    @staticmethod
    def _in_window(session: dict[str, Any], report: AppReport) -> bool:
        """Half-open [since, until) by start time, whatever the server makes of end_time."""
        started = parse_rfc3339(session.get("started_at"))
        return started is None or report.since <= started < report.until

    def _take(self, app: str, session: dict[str, Any], report: AppReport) -> Iterator[Pair]:
        """The pairs of one session and its breakout rooms: ENDED exported, the rest
        remembered to be looked up again by the next runs."""
        sid, status = session.get("id"), session.get("status")
        problem = session_id_problem(sid) if isinstance(sid, str) else "no session id"
        if problem is not None or not isinstance(sid, str):
            report.problems += 1
            log.warning(
                "app %s: a listed session cannot be exported: %s",
                app,
                problem,
                extra={"event": "bad_session", "app_id": app},
            )
            return
        if status == "ENDED":
            report.ended += 1
            if sid in self._remembered[app]:
                self._resolved[app].add(sid)
            yield Pair(app, sid, 0)
        else:  # LIVE (or a status this program does not know): not over yet
            report.live += 1
            self._live_seen[app].add(sid)
            log.debug(
                "app %s session %s is %s: remembered",
                app,
                sid,
                status,
                extra={"event": "live", "app_id": app, "session_id": sid},
            )
        for room in session.get("breakout_rooms") or ():
            if isinstance(room, dict):
                yield from self._take(app, room, report)

    # -- after the run --------------------------------------------------------------------

    def commit(self, whole: bool) -> None:
        """Record the run in the state file.

        LIVE sessions seen are always added (looking one up again is harmless). The rest
        moves only after a whole run (not interrupted, stopped or cut short: exit 0 or 1):
        remembered sessions that ENDED are dropped (their pairs have manifest lines, and
        failed ones are retried for 7 days), and `last-run` moves to this run's start for
        each app whose listing completed and whose window joins the previous one, so that no
        later `last-run` window can leave a gap.
        """
        for app, report in self.reports.items():
            entry = self.state.app(app)
            if whole:
                entry.live -= self._resolved[app]
            entry.live |= self._live_seen[app]
            last = entry.last_run
            joins = last is None or report.since <= last
            if whole and report.complete and joins and report.until >= self.now:
                entry.last_run = self.now if last is None else max(last, self.now)
        self.state.save()
