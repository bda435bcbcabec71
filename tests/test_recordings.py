"""Recordings end to end against the stand-in: statuses, sessions without any, lists that
ignore the filter, and downloads that resume (a dropped connection, a later run), start again
(a server ignoring Range, an object changed), and partials cleaned up after 7 days."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from exporter.config import RetryPolicy
from exporter.standin import CannedResponse, StandinServer
from tests.helpers import export, leftovers, make_settings, manifest_lines, write_sessions

SIZE = 600_000


def recording_lines(out: Path) -> list[dict[str, object]]:
    return [x for x in manifest_lines(out / "manifest.jsonl") if x["kind"] == "recording"]


def settings_for(server: StandinServer, tmp_path: Path, pairs=(("app1", "s1"),), **kw: object):
    sessions = write_sessions(tmp_path / "s.txt", list(pairs))
    return make_settings(server, tmp_path / "out", sessions, kinds=("recording",), **kw)


def partials(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*.recordings/*") if p.name.startswith(".rtk-export"))


async def test_uploaded_recordings_are_exported_the_others_unavailable_until_they_are(
    standin, tmp_path: Path
) -> None:
    """UPLOADED lands under <session>.recordings/<id>.mp4 as served; RECORDING and ERRORED are
    `unavailable` naming their status (exit code untouched) and looked at again: once
    uploaded, a later run exports it, and skips the first with no download."""
    async with standin(
        recording_statuses=("UPLOADED", "RECORDING", "ERRORED"), recording_bytes=SIZE
    ) as server:
        settings = settings_for(server, tmp_path)
        result = await export(settings)
        media = server.state.media
        done, busy, broken = media.recordings_of("app1", "s1")
        lines = {x["recording_id"]: x for x in recording_lines(tmp_path / "out")}
        assert lines[done.id]["status"] == "exported"
        assert lines[done.id]["path"] == f"app1/s1.recordings/{done.id}.mp4"
        stored = tmp_path / "out" / str(lines[done.id]["path"])
        assert stored.read_bytes() == media.body(done.id)
        assert lines[done.id]["sha256"] == media.digest(done.id)[1]
        for rec in (busy, broken):
            assert lines[rec.id]["status"] == "unavailable" and lines[rec.id]["path"] is None
            assert rec.status in lines[rec.id]["error"]["message"]  # type: ignore[index]
        assert result.stats.counts == {"exported": 1, "unavailable": 2}
        # Every recording request went through the API client: paced and counted.
        assert len(server.state.records("api")) == result.stats.api_requests
        files = len(server.state.records("recording"))
        busy.status = "UPLOADED"
        again = await export(settings)
        assert again.stats.counts == {"skipped": 1, "exported": 1, "unavailable": 1}
        assert len(server.state.records("recording")) == files + 1  # the new one only
        assert (stored.parent / f"{busy.id}.mp4").read_bytes() == media.body(busy.id)
    assert partials(tmp_path / "out") == [] and leftovers(tmp_path / "out") == []


async def test_a_session_without_recordings_is_one_unavailable_line(
    standin, tmp_path: Path
) -> None:
    """No recording at all: one `unavailable` line with recording_id null."""
    async with standin() as server:
        result = await export(settings_for(server, tmp_path))
    (line,) = recording_lines(tmp_path / "out")
    assert line["status"] == "unavailable" and line["recording_id"] is None
    assert line["path"] is None and result.stats.counts == {"unavailable": 1}


async def test_a_list_that_ignores_the_filter_or_omits_session_ids(standin, tmp_path: Path) -> None:
    """When the list ignores meeting_id (every recording of the app) and leaves session_id
    out, each session still gets exactly its own recordings."""
    pairs = (("app1", "s1"), ("app1", "s2"), ("app1", "s3"))
    async with standin(
        recording_statuses=("UPLOADED",),
        recording_bytes=5000,
        recordings_ignore_filter=True,
        recordings_omit_session_id=True,
    ) as server:
        await export(settings_for(server, tmp_path, pairs))
        owner = {r.id: r.session_id for r in server.state.media.recordings.values()}
    lines = recording_lines(tmp_path / "out")
    assert len(lines) == 3
    for line in lines:
        assert owner[str(line["recording_id"])] == line["session_id"]
        assert line["status"] == "exported"


async def test_an_odd_recording_id_never_names_a_file(standin, tmp_path: Path) -> None:
    """A recording id outside [A-Za-z0-9_-]{1,200} is `failed` with error.kind invalid."""
    listing = {
        "success": True,
        "data": [{"id": "../../x", "status": "UPLOADED", "session_id": "s1"}],
        "paging": {"total_count": 1, "start_offset": 0, "end_offset": 1},
    }
    async with standin() as server:
        server.script("/app1/recordings", CannedResponse(body=listing))
        await export(settings_for(server, tmp_path))
    (line,) = recording_lines(tmp_path / "out")
    assert line["status"] == "failed" and line["error"]["kind"] == "invalid"  # type: ignore[index]
    assert line["recording_id"] == "../../x" and line["path"] is None
    assert not (tmp_path / "x").exists()


async def test_a_listing_that_repeats_its_page_is_the_clients_error_not_a_silent_end(
    standin, tmp_path: Path
) -> None:
    """A recordings list whose page 2 repeats page 1 (total_count says more) is the API
    client's repeated-page error, as for sessions: one `failed` line saying the server
    ignores page_no, after two listing requests, and nothing taken from the page."""
    listing = {
        "success": True,
        "data": [{"id": "r1", "status": "UPLOADED", "session_id": "s1"}],
        "paging": {"total_count": 50, "start_offset": 0, "end_offset": 1},
    }
    async with standin() as server:
        server.script("/app1/recordings", *[CannedResponse(body=listing)] * 3)
        result = await export(settings_for(server, tmp_path))
        listed = [r for r in server.state.records("api") if r.path.endswith("/recordings")]
    (line,) = recording_lines(tmp_path / "out")
    assert line["status"] == "failed" and line["recording_id"] is None
    assert line["error"]["kind"] == "permanent"  # type: ignore[index]
    assert "ignore page_no" in line["error"]["message"]  # type: ignore[index]
    assert len(listed) == 2 and result.stats.counts == {"failed": 1}
    assert server.state.records("recording") == []


async def test_a_dropped_connection_resumes_with_range_on_a_fresh_url(
    standin, tmp_path: Path
) -> None:
    """Cut off mid-body, the next attempt asks a fresh URL and continues with Range and
    If-Range from the byte it held; nothing is served twice and the SHA-256 covers it all."""
    async with standin(recording_statuses=("UPLOADED",), recording_bytes=SIZE) as server:
        media = server.state.media
        media.cut_next.append(250_000)
        result = await export(settings_for(server, tmp_path))
        (rec,) = media.recordings_of("app1", "s1")
        asks = server.state.records("recording")
        assert len(asks) == 2 and asks[0].query != asks[1].query  # a fresh URL each time
        held = int(asks[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
        assert 0 < held <= 250_000 and asks[1].headers["If-Range"] == rec.etag
        assert media.recording_bytes_served <= SIZE + 64 * 1024
        assert asks[1].status == 206
    (line,) = recording_lines(tmp_path / "out")
    assert line["status"] == "exported" and line["sha256"] == media.digest(rec.id)[1]
    assert result.stats.retries == 1 and partials(tmp_path / "out") == []


async def test_a_server_that_ignores_range_starts_again_from_zero(standin, tmp_path: Path) -> None:
    """A 200 to a Range request is the whole object: the partial is dropped, the file is
    whole and right."""
    async with standin(
        recording_statuses=("UPLOADED",), recording_bytes=SIZE, ignore_range=True
    ) as server:
        media = server.state.media
        media.cut_next.append(200_000)
        await export(settings_for(server, tmp_path))
        (rec,) = media.recordings_of("app1", "s1")
        asks = server.state.records("recording")
        assert "Range" in asks[1].headers and asks[1].status == 200
    (line,) = recording_lines(tmp_path / "out")
    assert line["status"] == "exported" and line["sha256"] == media.digest(rec.id)[1]
    assert line["bytes"] == SIZE


async def test_a_later_run_resumes_and_a_changed_recording_starts_again(
    standin, tmp_path: Path
) -> None:
    """A run that gives up keeps its partial (never under the final name) and its record; a
    later run resumes it, unless the object changed meanwhile (If-Range fails): then the
    whole new object is downloaded and stored."""
    out = tmp_path / "out"
    async with standin(recording_statuses=("UPLOADED",), recording_bytes=SIZE) as server:
        media = server.state.media
        (rec,) = media.recordings_of("app1", "s1")
        once = settings_for(server, tmp_path, retry=RetryPolicy.immediate(max_attempts=1))
        media.cut_next.append(300_000)
        first = await export(once)
        assert first.stats.counts == {"failed": 1}
        final = out / f"app1/s1.recordings/{rec.id}.mp4"
        assert not final.exists()
        assert partials(out) == [
            f".rtk-export-{rec.id}.mp4.partial",
            f".rtk-export-{rec.id}.mp4.resume.json",
        ]
        old = media.digest(rec.id)[1]
        rec.change()
        second = await export(once)
        ask = server.state.records("recording")[-1]
        assert ask.headers["If-Range"] != rec.etag and ask.status == 200
    assert second.stats.counts == {"exported": 1}
    assert final.read_bytes() == media.body(rec.id)
    (line,) = [x for x in recording_lines(out) if x["status"] == "exported"]
    assert line["sha256"] == media.digest(rec.id)[1] != old
    assert partials(out) == []


async def test_partials_are_kept_a_week_then_removed(standin, tmp_path: Path) -> None:
    """Start-up removes temporary files of a killed run, and recording partials not resumed
    for 7 days; a fresh partial is left to be resumed."""
    out = tmp_path / "out"
    folder = out / "app9" / "s9.recordings"
    folder.mkdir(parents=True)
    old_partial, old_record = (
        folder / ".rtk-export-r1.mp4.partial",
        folder / ".rtk-export-r1.mp4.resume.json",
    )
    fresh = folder / ".rtk-export-r2.mp4.partial"
    temp = folder / ".rtk-export-r3.mp4.abc.part"
    for path in (old_partial, old_record, fresh, temp):
        path.write_bytes(b"x")
    eight_days = time.time() - 8 * 86400
    for path in (old_partial, old_record):
        os.utime(path, (eight_days, eight_days))
    six_days = time.time() - 6 * 86400
    os.utime(fresh, (six_days, six_days))
    async with standin() as server:
        sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1")])
        await export(make_settings(server, out, sessions))
    assert sorted(p.name for p in folder.iterdir()) == [fresh.name]


async def test_a_dry_run_plans_recordings_without_asking(standin, tmp_path: Path) -> None:
    """--dry-run counts each session's recordings as a unit to export and asks nothing."""
    async with standin(recording_statuses=("UPLOADED",)) as server:
        settings = settings_for(server, tmp_path, (("app1", "s1"), ("app1", "s2")), dry_run=True)
        result = await export(settings)
        assert server.state.records() == []
    assert result.plan["export:recording"] == 2
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


async def test_a_206_that_does_not_continue_the_partial_starts_again(
    standin, tmp_path: Path
) -> None:
    """A 206 whose Content-Range does not start at the bytes held is not appended: the partial
    is dropped and the next attempt downloads the whole object."""
    async with standin(recording_statuses=("UPLOADED",), recording_bytes=SIZE) as server:
        media = server.state.media
        (rec,) = media.recordings_of("app1", "s1")
        media.cut_next.append(250_000)
        once = settings_for(server, tmp_path, retry=RetryPolicy.immediate(max_attempts=1))
        assert (await export(once)).stats.counts == {"failed": 1}
        wrong = CannedResponse(
            status=206,
            body=b"x" * 1000,
            headers={"Content-Range": f"bytes 7-1006/{SIZE}", "ETag": rec.etag},
        )
        server.script(f"/recording-files/app1/{rec.id}.mp4", wrong)
        result = await export(settings_for(server, tmp_path))
        asks = server.state.records("recording")
    assert [a.status for a in asks] == [200, 206, 200]
    assert "Range" in asks[1].headers and "Range" not in asks[2].headers  # then from zero
    (line,) = [x for x in recording_lines(tmp_path / "out") if x["status"] == "exported"]
    assert line["sha256"] == media.digest(rec.id)[1]
    assert result.stats.retries == 1


async def test_each_recording_id_is_recorded_exactly(standin, tmp_path: Path) -> None:
    """A 201-character invalid recording_id is recorded whole, apart from a valid
    200-character one; 1,000 characters are kept, longer ids become head, `...` and SHA-256;
    a rerun skips the valid one with no download."""
    valid, longer = "r" * 200, "r" * 201
    kept, over, over2 = "s" * 1000, "s" * 1001, "s" * 1000 + "t"
    ids = (valid, longer, kept, over, over2)
    digest = {v: v[:100] + "..." + hashlib.sha256(v.encode()).hexdigest() for v in (over, over2)}
    want = {valid, longer, kept, *digest.values()}
    async with standin(
        recording_statuses=("UPLOADED",) * len(ids), recording_ids=ids, recording_bytes=5000
    ) as server:
        settings = settings_for(server, tmp_path)
        result = await export(settings)
        lines = {x["recording_id"]: x for x in recording_lines(tmp_path / "out")}
        assert set(lines) == want and result.stats.counts == {"exported": 1, "failed": 4}
        assert lines[valid]["status"] == "exported"
        stored = tmp_path / "out" / str(lines[valid]["path"])
        assert stored.read_bytes() == server.state.media.body(valid)
        for rid in want - {valid}:
            assert lines[rid]["status"] == "failed" and lines[rid]["path"] is None
            assert lines[rid]["error"]["kind"] == "invalid"  # type: ignore[index]
        files = len(server.state.records("recording"))
        again = await export(settings)
        assert len(server.state.records("recording")) == files
    assert again.stats.counts == {"skipped": 1, "failed": 4}
    later = recording_lines(tmp_path / "out")[len(ids) :]
    assert {x["recording_id"] for x in later} == want
