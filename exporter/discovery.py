"""Discovery: the pairs of each app's sessions started in [since, until), listed page by page
as the export consumes them, plus remembered LIVE sessions and recently failed pairs."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from exporter.client import ApiClient
from exporter.config import Settings
from exporter.errors import ExportError, FatalError, PermanentError
from exporter.ratelimit import Pacer
from exporter.retry import with_retries
from exporter.runstate import RunState, parse_rfc3339, rfc3339
from exporter.sessions import Pair, session_id_problem
from exporter.spans import parse_span
from exporter.stats import Stats

if TYPE_CHECKING:
    from exporter.pipeline import Run, RunResult

log = logging.getLogger(__name__)

LAST_RUN = "last-run"
# The spec: `last-run` reaches back 24 h before the last run's start, so that a session still
# live then, or ended around the boundary, is listed again (and skipped if already exported).
OVERLAP = timedelta(hours=24)
DEFAULT_SINCE = timedelta(days=7)  # RealtimeKit keeps chat 7 days by default
FAILED_RETRY_AGE = timedelta(days=7)
# Sources give no maximum; 100 keeps listing cheap against the budget (one request per 100
# sessions) and a page far under the client's 1 MiB answer cap.
PER_PAGE = 100
MAX_PAGES = 100_000  # a server that never stops paging must not keep a run going for ever

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_when(text: str, now: datetime) -> datetime | None:
    """WHEN as a UTC moment: RFC 3339, a date (midnight UTC), a span back from `now` (`36h`,
    `7d`); None for `last-run`, which only the state file can resolve. ValueError otherwise."""
    text = text.strip()
    if text == LAST_RUN:
        return None
    if _DATE.match(text):
        try:
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"{text!r} is not a date") from None
    try:
        return now - timedelta(seconds=parse_span(text))
    except ValueError:
        pass
    moment = parse_rfc3339(text)
    if moment is None:
        naive = "T" in text and parse_rfc3339(text + "Z") is not None
        raise ValueError(
            f"{text!r} has no time zone: write it as {text}Z (UTC) or with +hh:mm" if naive else
            f"expected an RFC 3339 time (2026-11-20T08:00:00Z), a date (2026-11-20), a span "
            f"back from now (36h, 7d) or last-run; got {text!r}")
    return moment.astimezone(UTC)


def failed_pairs(manifest: Path, apps: frozenset[str], not_before: datetime) -> list[Pair]:
    """Pairs of `apps` with a unit whose last manifest line is `failed` and not older than
    `not_before`. One pass over the file; memory grows with the failed units only."""
    failed: dict[tuple[str, str, str], None] = {}
    try:
        fh = open(manifest, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    with fh:
        for raw in fh:
            if not failed and b'"failed"' not in raw:
                continue  # nothing to retry yet, nothing to cancel: no need to parse
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue  # the run's own load() reports damaged lines
            if not isinstance(rec, dict) or rec.get("app_id") not in apps:
                continue
            key = (str(rec["app_id"]), str(rec.get("session_id")), str(rec.get("kind", "chat")))
            when = parse_rfc3339(rec.get("finished_at"))
            if rec.get("status") == "failed" and when is not None and when >= not_before:
                failed[key] = None
            else:
                failed.pop(key, None)
    pairs = dict.fromkeys((app, sid) for app, sid, _ in failed)
    return [Pair(app, sid, 0) for app, sid in pairs if session_id_problem(sid) is None]


def page_of(body: bytes) -> tuple[list[Any], int | None]:
    """(sessions, paging.total_count or None) from a listing answer."""
    doc, data = _envelope(body)
    sessions = data.get("sessions")
    if not isinstance(sessions, list):
        raise PermanentError("malformed listing: no data.sessions list", http_status=200)
    paging = doc.get("paging") if isinstance(doc.get("paging"), dict) else data.get("paging")
    total = paging.get("total_count") if isinstance(paging, dict) else None
    ok = isinstance(total, int) and not isinstance(total, bool) and total >= 0
    return sessions, total if ok else None


def session_of(body: bytes) -> dict[str, Any]:
    """The session in a session-details answer: `data`, or `data.session` (older schema)."""
    _, data = _envelope(body)
    inner = data.get("session")
    session = inner if isinstance(inner, dict) else data
    if not isinstance(session.get("id"), str):
        raise PermanentError("malformed session details: no session id", http_status=200)
    return session


def _envelope(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the answer, its `data` object) of a successful answer; PermanentError otherwise."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PermanentError("malformed API answer: not JSON", http_status=200) from None
    if not isinstance(doc, dict) or doc.get("success") is False:
        raise PermanentError("API answered without success", http_status=200)
    data = doc.get("data")
    if not isinstance(data, dict):
        raise PermanentError("malformed API answer: no 'data' object", http_status=200)
    return doc, data


@dataclass(slots=True)
class AppReport:
    """What discovery did for one app this run."""

    since: datetime
    until: datetime
    pages: int = 0  # listing pages received
    listed: int = 0  # sessions on them (breakout rooms aside)
    ended: int = 0  # ENDED sessions handed to the export, breakout rooms included
    live: int = 0  # LIVE sessions remembered
    looked_up: int = 0  # remembered sessions looked up again
    complete: bool = False  # every page listed
    problems: int = 0  # a lookup failed, an id was unusable, or the listing broke off


class Discovery:
    """Lists the apps' sessions for one run; `pairs()` feeds `Run.run(items=...)`.

    Listing without a status filter and sorting LIVE from ENDED here costs one pass instead
    of two, and keeps the listed set stable while it is paged: with `status=ENDED`, a session
    that ends mid-listing would shift the pages under us.
    """

    def __init__(self, settings: Settings, *, pacer: Pacer, stats: Stats, state: RunState,
                 now: datetime) -> None:
        self.s = settings
        self.stats = stats
        self.state = state
        self.now = now
        self._api = ApiClient(settings, pacer, stats)
        self.reports = {app: AppReport(*self.window(app)) for app in settings.apps}
        self._remembered = {app: state.live(app) for app in settings.apps}
        self._live_seen: dict[str, set[str]] = {app: set() for app in settings.apps}
        self._resolved: dict[str, set[str]] = {app: set() for app in settings.apps}
        self.failed_retried = 0

    def window(self, app_id: str) -> tuple[datetime, datetime]:
        """[since, until) for this app; `last-run` (the default) read from the state file."""
        until = parse_when(self.s.until, self.now) if self.s.until else self.now
        since = parse_when(self.s.since or LAST_RUN, self.now)
        if since is None:
            last = self.state.last_run(app_id)
            since = last - OVERLAP if last is not None else self.now - DEFAULT_SINCE
        assert until is not None, "--until last-run is refused by the command line"
        return since, until

    async def __aenter__(self) -> Discovery:
        await self._api.__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._api.__aexit__(et, e, tb)

    @property
    def problems(self) -> int:
        return sum(r.problems for r in self.reports.values())

    # -- the pairs ------------------------------------------------------------------------

    async def pairs(self) -> AsyncIterator[Pair]:
        retry = await anyio.to_thread.run_sync(
            failed_pairs, self.s.manifest_path, frozenset(self.s.apps),
            self.now - FAILED_RETRY_AGE)
        if retry:
            log.info("retrying %d pair(s) that failed in the last 7 days", len(retry),
                     extra={"event": "retry_failed"})
        self.failed_retried = len(retry)
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
                log.error("listing the sessions of app %s broke off: %s", app, exc.message,
                          extra={"event": "listing_failed", "app_id": app})
            log.info("app %s: %d session(s) listed in %d page(s), started in [%s, %s); "
                     "%d ENDED handed to the export (breakout rooms and remembered sessions "
                     "included), %d LIVE remembered", app, report.listed, report.pages,
                     rfc3339(report.since), rfc3339(report.until), report.ended, report.live,
                     extra={"event": "listed", "app_id": app})

    async def _look_up(self, app: str, sid: str, report: AppReport) -> AsyncIterator[Pair]:
        """A session remembered LIVE: exported (with its rooms) once it has ENDED."""
        report.looked_up += 1
        url = self._api.session_url(app, sid)
        try:
            body = await with_retries(
                lambda: self._api.get_json(url, {"include_breakout_rooms": "true"}),
                self.s.retry, on_retry=self._count_retry)
            session = session_of(body)
        except FatalError:
            raise
        except ExportError as exc:
            if exc.http_status == 404 and type(exc) is PermanentError:
                log.warning("app %s session %s, remembered LIVE, no longer exists; forgotten",
                            app, sid, extra={"event": "live_gone", "app_id": app,
                                             "session_id": sid})
                self._resolved[app].add(sid)
            else:
                report.problems += 1
                log.error("app %s session %s, remembered LIVE, could not be looked up: %s",
                          app, sid, exc.message, extra={"event": "lookup_failed",
                                                        "app_id": app, "session_id": sid})
            return
        for pair in self._take(app, session, report):
            yield pair

    async def _list(self, app: str, report: AppReport) -> AsyncIterator[Pair]:
        if report.since >= report.until:
            log.warning("app %s: empty window [%s, %s): nothing listed", app,
                        rfc3339(report.since), rfc3339(report.until))
            report.complete = True
            return
        url = self._api.sessions_url(app)
        # Oldest first, in creation order: new sessions join the end and do not shift the
        # pages already read, and those nearest the 7-day chat retention are exported first.
        query = {"start_time": rfc3339(report.since), "end_time": rfc3339(report.until),
                 "per_page": str(PER_PAGE), "sort_by": "createdAt", "sort_order": "ASC"}
        seen, previous, page_size = 0, None, PER_PAGE
        for page_no in range(1, MAX_PAGES + 1):
            params = {**query, "page_no": str(page_no)}

            async def get_page(params: dict[str, str] = params) -> bytes:
                return await self._api.get_json(url, params)

            body = await with_retries(get_page, self.s.retry, on_retry=self._count_retry)
            sessions, total = page_of(body)
            report.pages += 1
            ids = [s.get("id") if isinstance(s, dict) else None for s in sessions]
            if ids and ids == previous:
                if total is None and page_no == 2 and page_size < PER_PAGE:
                    break  # page 1 was short, so it held everything: nothing is missing
                raise PermanentError(f"page {page_no} repeats page {page_no - 1}: the server "
                                     "seems to ignore page_no; later sessions may be missing")
            if page_no == 2 and sessions and page_size < PER_PAGE:
                log.info("app %s: the server serves %d sessions a page, not %d", app,
                         page_size, PER_PAGE)
            previous = ids
            seen += len(sessions)
            for session in sessions:
                report.listed += 1
                if isinstance(session, dict) and self._in_window(session, report):
                    for pair in self._take(app, session, report):
                        yield pair
            if not sessions or (total is not None and seen >= total):
                break
            if total is None:
                # The paging fields are optional: then a short page is the last one, except a
                # short first page, which may be a server capping per_page silently: page 2
                # tells (empty: it was all; more: the cap is the page size from now on).
                if page_no == 1 and len(sessions) < PER_PAGE:
                    page_size = len(sessions)
                elif len(sessions) < page_size:
                    break
        else:
            raise PermanentError(f"more than {MAX_PAGES} pages of sessions: gave up")
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
            log.warning("app %s: a listed session cannot be exported: %s", app, problem,
                        extra={"event": "bad_session", "app_id": app})
            return
        if status == "ENDED":
            report.ended += 1
            if sid in self._remembered[app]:
                self._resolved[app].add(sid)
            yield Pair(app, sid, 0)
        else:  # LIVE (or a status this program does not know): not over yet
            report.live += 1
            self._live_seen[app].add(sid)
            log.debug("app %s session %s is %s: remembered", app, sid, status,
                      extra={"event": "live", "app_id": app, "session_id": sid})
        for room in session.get("breakout_rooms") or ():
            if isinstance(room, dict):
                yield from self._take(app, room, report)

    def _count_retry(self) -> None:
        self.stats.retries += 1

    # -- after the run --------------------------------------------------------------------

    def commit(self, exit_code: int) -> None:
        """Record the run in the state file.

        LIVE sessions seen are always added (looking one up again is harmless). The rest
        moves only after a run that was not interrupted (exit 0 or 1): remembered sessions
        that ENDED are dropped (their pairs have manifest lines, and failed ones are retried
        for 7 days), and `last-run` moves to this run's start for each app whose listing
        completed and whose window joins the previous one, so that no later `last-run`
        window can leave a gap.
        """
        whole = exit_code in (0, 1)
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


async def export_discovered(run: Run, discovery: Discovery) -> RunResult:
    """The run fed by discovery: pairs flow into the export as the pages arrive."""
    async with discovery:
        return await run.run(items=discovery.pairs())
