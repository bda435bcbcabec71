"""Discovery end to end against the stand-in over real HTTP: listing, windows, last-run, LIVE
sessions remembered, failed pairs retried. "Now" is injected; nothing sleeps."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from exporter.archive import STATE_NAME
from exporter.cli import exit_code
from exporter.client import ApiClient
from exporter.config import RetryPolicy
from exporter.discovery import Discovery
from exporter.errors import DiskError
from exporter.keyset import key_of
from exporter.manifest import Manifest, Record
from exporter.ratelimit import Pacer
from exporter.runstate import RunState
from exporter.sessions import Pair
from exporter.standin import CannedResponse, SessionSpec, StandinServer
from exporter.stats import RunResult, Stats
from exporter.times import parse_when
from tests.helpers import export, make_settings, manifest_lines

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
H, D = timedelta(hours=1), timedelta(days=1)


class KillAfter:
    """A reporter that cancels the run once `n` units were exported: a run killed half-way."""

    def __init__(self, n: int, scope: anyio.CancelScope) -> None:
        self.n, self.scope = n, scope

    def recorded(self, rec: Record) -> None:
        if rec.status == "exported":
            self.n -= 1
            if self.n == 0:
                self.scope.cancel()

    async def run(self, stats: Stats, pacer: object) -> None:
        await anyio.sleep_forever()


async def discover(
    server: StandinServer,
    out: Path,
    *,
    now: datetime = NOW,
    apps: tuple[str, ...] = ("app1",),
    kill_after: int | None = None,
    since: str | None = None,
    until: str | None = None,
    **kw: Any,
) -> tuple[RunResult | None, RunResult | None, int | None]:
    """One discovery run as the command line makes it: pipeline.export and its exit code
    (the state is committed by the run itself). WHEN texts are parsed against `now`, as the
    command line does; the result comes back twice (it holds discovery's reports)."""
    settings = make_settings(
        server,
        out,
        apps=apps,
        now=now,
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
        **kw,
    )
    with anyio.CancelScope() as scope:
        reporter = KillAfter(kill_after, scope) if kill_after else None
        result = await export(settings, reporter=reporter)
    if scope.cancelled_caught:
        return None, None, None  # killed: nothing after this point happens
    return result, result, exit_code(result)


def listings(server: StandinServer, app: str = "app1") -> list[dict[str, str]]:
    path = server.api_path(app)
    return [r.query for r in server.state.records("api") if r.path == path]


def chat_requests(server: StandinServer) -> list[str]:
    return [r.path for r in server.state.records("api") if r.path.endswith("/chat")]


def downloads(server: StandinServer) -> Counter[str]:
    return Counter(r.path for r in server.state.records("download") if r.status == 200)


def state(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / STATE_NAME).read_text())
    return doc


def ended(n: int, start: datetime = NOW - D, app: str = "app1") -> tuple[SessionSpec, ...]:
    return tuple(SessionSpec(app, f"s{i:03d}", start + timedelta(minutes=i)) for i in range(n))


def exported(out: Path) -> set[str]:
    return {
        x["session_id"] for x in manifest_lines(out / "manifest.jsonl") if x["status"] == "exported"
    }


# ----------------------------------------------------------------------------------- WHEN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T08:30:00Z", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
        ("2026-11-20T10:30:00+02:00", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("36h", NOW - 36 * H),
        ("7d", NOW - 7 * D),
        ("90m", NOW - timedelta(minutes=90)),
        ("last-run", None),
    ],
)
def test_when_forms(text: str, expected: datetime | None) -> None:
    """RFC 3339 (any offset, as UTC), a date at midnight UTC, a span back from now, last-run."""
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("yesterday", "RFC 3339"),
        ("2026-11-20T08:00:00", "no time zone"),
        ("2026-13-01", "not a date"),
        ("-3d", "RFC 3339"),
    ],
)
def test_bad_when_is_refused_naming_it(text: str, words: str) -> None:
    """Anything else is a ValueError that quotes the text and says what would do."""
    with pytest.raises(ValueError, match=words):
        parse_when(text, NOW)


# ----------------------------------------------------------------------------- pagination


@pytest.mark.parametrize(
    ("n", "omit_paging", "requests"),
    [
        (10, False, 2),  # an exact multiple of per_page: total_count says when to stop
        (10, True, 3),  # the same without paging fields: the empty third page stops it
        (12, True, 3),  # a short last page stops it
        (3, False, 1),  # one short page, counted
        (3, True, 2),  # one short page, uncounted: page 2 checks that per_page was not capped
        (0, False, 1),  # an app with no session in the window
        (0, True, 1),
    ],
)
async def test_every_page_is_followed_and_no_more(
    standin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    omit_paging: bool,
    requests: int,
) -> None:
    """Pages are followed to the end, with or without paging fields, and not one too far."""
    async with standin(sessions=ended(n), omit_paging=omit_paging) as server:
        result, disc, code = await discover(server, tmp_path / "out", per_page=5)
        pages = listings(server)
    assert code == 0 and result is not None
    assert [q["page_no"] for q in pages] == [str(i) for i in range(1, requests + 1)]
    assert all(q["per_page"] == "5" for q in pages)
    assert result.stats.counts == ({"exported": n} if n else {})
    assert disc.apps["app1"].complete
    assert state(tmp_path / "out")["apps"]["app1"]["last_run"] is not None


async def test_a_server_capping_per_page_is_paged_by_total_count(standin, tmp_path: Path) -> None:
    """A server that silently serves fewer per page than asked is paged on until total_count."""
    async with standin(sessions=ended(23), max_per_page=10) as server:
        result, _, code = await discover(server, tmp_path / "out")
        assert len(listings(server)) == 3
    assert code == 0 and result is not None and result.stats.counts == {"exported": 23}


async def test_a_silent_cap_without_paging_fields_is_learnt(
    standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without paging fields, a short first page is checked with page 2: a server that caps
    per_page silently is then paged at its own size, to the end."""
    async with standin(sessions=ended(8), max_per_page=3, omit_paging=True) as server:
        result, _, code = await discover(server, tmp_path / "out", per_page=5)
        assert [q["page_no"] for q in listings(server)] == ["1", "2", "3"]
    assert code == 0 and result is not None and result.stats.counts == {"exported": 8}


async def test_a_short_first_page_repeated_is_not_an_error(
    standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server ignoring page_no, with everything on a short first page, misses nothing."""
    page = {"success": True, "data": {"sessions": [s.to_json("org") for s in ended(2)]}}
    async with standin(sessions=ended(2)) as server:
        server.script(server.api_path("app1"), *[CannedResponse(200, body=page)] * 3)
        result, disc, code = await discover(server, tmp_path / "out", per_page=5)
        assert len(listings(server)) == 2
    assert code == 0 and result is not None and result.stats.counts == {"exported": 2}
    assert disc.apps["app1"].complete


async def test_a_failing_page_is_retried_like_any_request(
    standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing request answered 503, then dropped, is retried; nothing is missed."""
    async with standin(sessions=ended(8)) as server:
        server.script(server.api_path("app1"), CannedResponse(503), CannedResponse(action="drop"))
        result, _, code = await discover(server, tmp_path / "out", per_page=5)
        pages = [q["page_no"] for q in listings(server)]
    assert code == 0 and result is not None
    assert pages == ["1", "1", "1", "2"]
    assert result.stats.retries == 2 and result.stats.counts == {"exported": 8}


async def test_a_429_on_a_listing_pauses_and_fails_nothing(standin, tmp_path: Path) -> None:
    """A 429 on a listing request goes through the shared pacer and the shared retry policy."""
    async with standin(sessions=ended(3)) as server:
        server.script(server.api_path("app1"), CannedResponse(429, headers={"Retry-After": "0"}))
        result, _, code = await discover(server, tmp_path / "out")
    assert code == 0 and result is not None
    assert result.stats.rate_limited == 1 and result.stats.counts == {"exported": 3}


async def test_a_listing_that_gives_up_exits_1_and_keeps_last_run(standin, tmp_path: Path) -> None:
    """A listing that keeps failing: the other app is exported, exit 1, last-run not moved."""
    sessions = ended(2) + ended(2, app="app2")
    async with standin(sessions=sessions) as server:
        server.script(server.api_path("app1"), *[CannedResponse(502)] * 3)
        result, disc, code = await discover(
            server,
            tmp_path / "out",
            apps=("app1", "app2"),
            retry=RetryPolicy.immediate(max_attempts=3),
        )
    assert code == 1 and result is not None
    assert result.stats.counts == {"exported": 2}
    assert not disc.apps["app1"].complete and disc.apps["app2"].complete
    apps = state(tmp_path / "out")["apps"]
    assert apps["app1"]["last_run"] is None and apps["app2"]["last_run"] is not None


async def test_a_server_ignoring_page_no_does_not_loop(
    standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages that repeat the previous one stop the listing (exit 1) instead of looping."""
    page = {
        "success": True,
        "paging": {"total_count": 50},
        "data": {"sessions": [s.to_json("org") for s in ended(2)]},
    }
    async with standin(sessions=ended(2)) as server:
        server.script(server.api_path("app1"), *[CannedResponse(200, body=page)] * 5)
        result, disc, code = await discover(server, tmp_path / "out", per_page=2)
        assert len(listings(server)) == 2
    assert code == 1 and result is not None and result.stats.counts == {"exported": 2}
    assert disc.apps["app1"].problems == 1


async def test_downloads_start_before_the_last_page_is_listed(
    standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairs flow into the export as pages arrive: the first download precedes the last page."""
    async with standin(sessions=ended(40)) as server:
        result, _, code = await discover(server, tmp_path / "out", per_page=5, concurrency=1)
        records = server.state.records()
    assert code == 0 and result is not None and result.stats.counts == {"exported": 40}
    first_download = next(i for i, r in enumerate(records) if r.route == "download")
    last_page = max(i for i, r in enumerate(records) if r.path.endswith("/sessions"))
    assert first_download < last_page


# --------------------------------------------------------------------------- what is listed


async def test_the_window_is_half_open_and_sent_to_the_api(standin, tmp_path: Path) -> None:
    """[since, until) by start time; start_time and end_time go to the API as RFC 3339."""
    since, until = NOW - 2 * D, NOW - D
    sessions = (
        SessionSpec("app1", "before", since - timedelta(seconds=1)),
        SessionSpec("app1", "first", since),
        SessionSpec("app1", "last", until - timedelta(seconds=1)),
        SessionSpec("app1", "at-until", until),
    )
    async with standin(sessions=sessions) as server:
        _, _, code = await discover(
            server,
            tmp_path / "out",
            since=since.isoformat(),
            until=until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        query = listings(server)[0]
    assert code == 0 and exported(tmp_path / "out") == {"first", "last"}
    assert parse_when(query["start_time"], NOW) == since
    assert parse_when(query["end_time"], NOW) == until


async def test_breakout_rooms_are_exported_and_live_sessions_remembered(
    standin, tmp_path: Path
) -> None:
    """ENDED sessions and their ENDED breakout rooms are exported; LIVE ones only remembered."""
    room = SessionSpec("app1", "b-room", NOW - 5 * H)
    live_room = SessionSpec("app1", "l-room", NOW - H, status="LIVE")
    sessions = (
        SessionSpec("app1", "a", NOW - 6 * H, breakout_rooms=(room,)),
        SessionSpec("app1", "live", NOW - 2 * H, status="LIVE", breakout_rooms=(live_room,)),
    )
    out = tmp_path / "out"
    async with standin(sessions=sessions, accept_any=False) as server:
        _, _, code = await discover(server, out)
        assert sorted(chat_requests(server)) == [
            server.api_path("app1", s, "chat") for s in ("a", "b-room")
        ]
    assert code == 0 and exported(out) == {"a", "b-room"}
    assert state(out)["apps"]["app1"]["live"] == ["l-room", "live"]


async def test_a_remembered_session_is_looked_up_in_either_shape(standin, tmp_path: Path) -> None:
    """A session remembered LIVE is looked up (data or data.session) until it has ENDED."""
    out = tmp_path / "out"
    old = NOW - 10 * D  # long before any window
    live = SessionSpec(
        "app1",
        "long",
        old,
        status="LIVE",
        breakout_rooms=(SessionSpec("app1", "long-room", old + H),),
    )
    out.mkdir()
    st = RunState.load(out)
    st.app("app1").live.add("long")
    st.save()
    async with standin(sessions=(live,), accept_any=False) as server:
        _, _, code = await discover(server, out, now=NOW)
        assert code == 0 and exported(out) == {"long-room"}
        assert state(out)["apps"]["app1"]["live"] == ["long"]
        server.state.catalogue[("app1", "long")].status = "ENDED"
        details = server.api_path("app1", "long")
        body = {
            "success": True,
            "data": {"session": server.state.catalogue[("app1", "long")].to_json("org")},
        }
        server.script(details, CannedResponse(200, body=body))
        _, _, code = await discover(server, out, now=NOW + D)
        lookups = [r for r in server.state.records("api") if r.path == details]
    assert code == 0 and exported(out) == {"long", "long-room"}
    assert len(lookups) == 2 and lookups[0].query == {"include_breakout_rooms": "true"}
    assert state(out)["apps"]["app1"]["live"] == []


async def test_a_remembered_session_that_is_gone_is_forgotten(standin, tmp_path: Path) -> None:
    """A remembered session the API answers 404 for is dropped from the state, exit 0."""
    out = tmp_path / "out"
    out.mkdir()
    st = RunState.load(out)
    st.app("app1").live.add("gone")
    st.save()
    async with standin(sessions=ended(1), accept_any=False) as server:
        _, disc, code = await discover(server, out)
    assert code == 0 and disc.apps["app1"].looked_up == 1
    assert state(out)["apps"]["app1"]["live"] == []


async def test_a_refused_token_while_listing_stops_the_run(standin, tmp_path: Path) -> None:
    """A 401 on the listing stops the run (exit 2) after one request; last-run stays unset."""
    async with standin(token="another-token") as server:
        result, _, code = await discover(server, tmp_path / "out", apps=("app1", "app2"))
        sent = len(server.state.records())
    assert code == 2 and result is not None and result.fatal is not None
    assert sent == 1
    assert state(tmp_path / "out")["apps"]["app1"]["last_run"] is None


async def test_failed_pairs_are_retried_whatever_the_window(standin, tmp_path: Path) -> None:
    """A pair whose last line is `failed` (under 7 days old) is retried by the next run even
    though the window no longer covers it; one of another app is not."""
    out = tmp_path / "out"
    sessions = (SessionSpec("app1", "flaky", NOW - 5 * D), SessionSpec("app2", "other", NOW - D))
    async with standin(sessions=sessions) as server:
        server.script(server.api_path("app1", "flaky", "chat"), *[CannedResponse(500)] * 2)
        _, _, code = await discover(
            server, out, apps=("app1", "app2"), retry=RetryPolicy.immediate(max_attempts=2)
        )
        assert code == 1 and exported(out) == {"other"}
        result, disc, code = await discover(server, out, now=NOW + D, since="1h")
    assert code == 0 and result is not None and disc.failed_retried == 1
    assert exported(out) == {"other", "flaky"}


def test_failed_pairs_reads_only_the_latest_recent_line(tmp_path: Path) -> None:
    """The last line of each unit decides; older than 7 days or another app: not retried."""
    manifest = tmp_path / "m.jsonl"
    old, new = "2026-01-01T00:00:00.000Z", "2026-11-27T00:00:00.000Z"
    lines = [
        ("a", "s1", "chat", "failed", new),
        ("a", "s1", "chat", "exported", new),
        ("a", "s2", "chat", "exported", new),
        ("a", "s2", "summary", "failed", new),
        ("a", "s3", "chat", "failed", old),
        ("b", "s4", "chat", "failed", new),
    ]
    stored = {"bytes": 1, "sha256": "ab" * 32}  # what an exported line always has
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "app_id": a,
                    "session_id": s,
                    "kind": k,
                    "status": st,
                    "finished_at": t,
                    **(stored if st == "exported" else {}),
                }
            )
            + "\n"
            for a, s, k, st, t in lines
        )
        + "garbage\n"
    )
    m = Manifest(manifest)
    m.load()  # the same single pass that builds the index
    got = m.recent_failures(frozenset({"a"}), datetime(2026, 11, 20, tzinfo=UTC))
    assert got == [Pair("a", "s2", 0)]
    assert m.index.get(key_of("a", "s1", "chat")) is not None


# ------------------------------------------------------------------- three days of cron runs


async def test_three_daily_runs_with_one_killed_miss_nothing_and_repeat_nothing(
    standin, tmp_path: Path
) -> None:
    """Day 1 exports the last 7 days and remembers a LIVE session; day 2 is killed half-way;
    day 3 (last-run still day 1, minus 24 h) catches up. Every ENDED session started in the
    window is exported once; no file is downloaded twice; last-run moves only after whole runs."""
    out = tmp_path / "out"
    d1, d2, d3 = NOW, NOW + D, NOW + 2 * D
    first = (
        SessionSpec("app1", "too-old", d1 - 8 * D),
        SessionSpec("app1", "a", d1 - 3 * D),
        SessionSpec(
            "app1", "b", d1 - 10 * H, breakout_rooms=(SessionSpec("app1", "b-room", d1 - 9 * H),)
        ),
        SessionSpec("app1", "live", d1 - 4 * H, status="LIVE"),
    )
    async with standin(sessions=first, accept_any=False) as server:
        _, _, code = await discover(server, out, now=d1, concurrency=1)
        assert code == 0 and exported(out) == {"a", "b", "b-room"}
        assert state(out)["apps"]["app1"]["live"] == ["live"]
        # Day 2: sessions that started since, one that started just before day 1's run but
        # was listed only later, and the LIVE one still going.
        for spec in (
            SessionSpec("app1", "late", d1 - 30 * timedelta(minutes=1)),
            SessionSpec("app1", "c", d1 + 5 * H),
            SessionSpec("app1", "d", d1 + 20 * H),
            SessionSpec("app1", "e", d1 + 21 * H),
        ):
            server.state.add_session(spec)
        result, _, _ = await discover(server, out, now=d2, concurrency=1, kill_after=2)
        assert result is None  # killed
        assert len(exported(out)) == 5
        assert parse_when(listings(server)[-1]["start_time"], d2) == d1 - D
        assert state(out)["apps"]["app1"]["last_run"].startswith(d1.strftime("%Y-%m-%dT%H"))
        # Day 3: the LIVE one has ended; one more session.
        server.state.catalogue[("app1", "live")].status = "ENDED"
        server.state.add_session(SessionSpec("app1", "f", d2 + 3 * H))
        result, _, code = await discover(server, out, now=d3, concurrency=1)
        assert code == 0 and result is not None
        assert parse_when(listings(server)[-1]["start_time"], d3) == d1 - D  # not d2 - D
        counts = downloads(server)
    assert exported(out) == {"a", "b", "b-room", "late", "c", "d", "e", "live", "f"}
    assert len(counts) == 9 and set(counts.values()) == {1}
    assert result.stats.counts["skipped"] >= 2  # b and b-room, listed again in the overlap
    final = state(out)["apps"]["app1"]
    assert final["live"] == [] and final["last_run"].startswith(d3.strftime("%Y-%m-%dT%H"))
    assert not list(out.rglob("*.part"))


async def test_default_since_is_last_run_minus_24h_else_7d(standin, tmp_path: Path) -> None:
    """Without --since: 7 days on the first run, then the last whole run's start minus 24 h;
    an explicit window that leaves a gap does not move last-run."""
    out = tmp_path / "out"
    async with standin(sessions=ended(1)) as server:
        await discover(server, out, now=NOW)
        await discover(server, out, now=NOW + 3 * H)
        await discover(server, out, now=NOW + 6 * H, since="1h")  # leaves a gap: no move
        await discover(server, out, now=NOW + 9 * H)
        starts = [parse_when(q["start_time"], NOW) for q in listings(server)]
    assert starts == [NOW - 7 * D, NOW - D, NOW + 5 * H, NOW + 3 * H - D]


@pytest.mark.parametrize("code", [2, 3, 130, 143])
async def test_a_run_cut_short_adds_live_sessions_but_moves_nothing_else(
    standin, tmp_path: Path, code: int
) -> None:
    """After exit 2, 3, 130 or 143 the LIVE sessions seen are added, but last-run stays and
    no remembered session is dropped (its pairs may not have been exported)."""
    out = tmp_path / "out"
    out.mkdir()
    st = RunState.load(out)
    st.app("app1").live.add("was-live")
    st.save()
    sessions = (
        SessionSpec("app1", "was-live", NOW - H),
        SessionSpec("app1", "now-live", NOW - H, status="LIVE"),
    )
    # A run that ends so: the outcome the exit code is read from, and the commit it makes.
    result = RunResult(run_id="r", stats=Stats())
    if code == 2:
        result.fatal = DiskError("disk full")
    elif code == 3:
        result.left = 1
    else:
        result.stopped_by = {130: signal.SIGINT, 143: signal.SIGTERM}[code]
    assert exit_code(result) == code and not result.whole
    async with standin(sessions=sessions, accept_any=False) as server:
        settings = make_settings(server, out, apps=("app1",), now=NOW)
        async with ApiClient(settings, Pacer(settings.rate), Stats()) as api:
            disc = Discovery(settings, api, RunState.load(out), failed=[])
            assert {p.session_id async for p in disc.pairs()} == {"was-live"}  # looked up, listed
    disc.commit(result.whole)
    assert state(out)["apps"]["app1"] == {"last_run": None, "live": ["now-live", "was-live"]}


async def test_dry_run_lists_but_requests_no_url_and_writes_nothing(
    standin, tmp_path: Path
) -> None:
    """--dry-run lists the sessions and plans per kind; no URL request, no manifest, no state."""
    out = tmp_path / "out"
    async with standin(sessions=ended(4)) as server:
        result, _, code = await discover(server, out, dry_run=True, kinds=("chat", "transcript"))
        routes = {r.path.rsplit("/", 1)[-1] for r in server.state.records()}
    assert code == 0 and result is not None
    assert routes == {"sessions"}
    assert result.plan == {"export": 8, "export:chat": 4, "export:transcript": 4}
    assert not (out / "manifest.jsonl").exists() and not (out / STATE_NAME).exists()
