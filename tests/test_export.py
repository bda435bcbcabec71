"""The export end to end against the stand-in over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from exporter.config import Rate, RetryPolicy
from exporter.ratelimit import Pacer
from exporter.standin import CannedResponse, FaultRates, StandinServer
from exporter.writer import IN_MEMORY
from tests.fakes import FakeClock
from tests.helpers import (
    TOKEN,
    export,
    leftovers,
    make_settings,
    manifest_lines,
    pairs,
    write_sessions,
)

KEYS = {
    "app_id",
    "session_id",
    "kind",
    "status",
    "path",
    "bytes",
    "sha256",
    "attempts",
    "error",
    "finished_at",
    "run_id",
}


async def test_every_pair_lands_byte_for_byte(server: StandinServer, tmp_path: Path) -> None:
    """Each CSV is stored under DIR/<app>/<session>.csv exactly as served, and recorded."""
    todo = pairs(25)
    sessions = write_sessions(tmp_path / "s.txt", todo, header=True)
    out = tmp_path / "out"
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"exported": 25}
    lines = manifest_lines(out / "manifest.jsonl")
    assert len(lines) == 25
    for line in lines:
        assert set(line) >= KEYS
        body = server.expected_body(line["app_id"], line["session_id"])
        stored = (out / line["path"]).read_bytes()
        assert stored == body
        assert line["path"] == f"{line['app_id']}/{line['session_id']}.csv"
        assert line["bytes"] == len(body)
        assert line["sha256"] == hashlib.sha256(body).hexdigest()
        assert line["kind"] == "chat" and line["error"] is None and line["attempts"] == 2
        assert line["finished_at"].endswith("Z") and line["run_id"] == result.run_id
    assert {(line["app_id"], line["session_id"]) for line in lines} == set(todo)
    assert leftovers(out) == []


@pytest.mark.parametrize("size", [IN_MEMORY - 1, IN_MEMORY + 1, 3 * IN_MEMORY + 12345])
async def test_bodies_either_side_of_the_in_memory_limit_land_whole(
    standin, tmp_path: Path, size: int
) -> None:
    """A body up to IN_MEMORY is written by the writer threads in one go; a larger one
    spills to its temporary file as it comes. Both land byte for byte, with their hash."""
    async with standin(chat_bytes=size) as server:
        todo = pairs(3)
        out = tmp_path / "out"
        result = await export(make_settings(server, out, write_sessions(tmp_path / "s", todo)))
        assert result.stats.counts == {"exported": 3}
        for line in manifest_lines(out / "manifest.jsonl"):
            body = server.expected_body(line["app_id"], line["session_id"])
            assert len(body) == size
            assert (out / line["path"]).read_bytes() == body
            assert line["sha256"] == hashlib.sha256(body).hexdigest()
    assert leftovers(out) == []


async def test_token_goes_to_the_api_only(server: StandinServer, tmp_path: Path) -> None:
    """Every API request carries the bearer token; no download request carries any credential."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(6))
    await export(make_settings(server, tmp_path / "out", sessions))
    api = server.state.records("api")
    downloads = server.state.records("download")
    assert len(api) == 6 and len(downloads) == 6
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in api)
    assert all("Authorization" not in r.headers and "Cookie" not in r.headers for r in downloads)
    assert all(TOKEN not in str(r.headers) for r in downloads)


async def test_rerun_skips_intact_files_without_any_request(
    server: StandinServer, tmp_path: Path
) -> None:
    """A second run finds every file intact and makes no request at all."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(10))
    out = tmp_path / "out"
    await export(make_settings(server, out, sessions))
    before = len(server.state.records())
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"skipped": 10}
    assert len(server.state.records()) == before
    last = manifest_lines(out / "manifest.jsonl")[-10:]
    assert all(line["status"] == "skipped" and line["attempts"] == 0 for line in last)
    assert all(line["sha256"] and line["bytes"] for line in last)


async def test_rerun_redoes_deleted_and_corrupted_files(
    server: StandinServer, tmp_path: Path
) -> None:
    """A missing file and a file with one flipped byte are exported again; the rest skipped."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(5))
    out = tmp_path / "out"
    await export(make_settings(server, out, sessions))
    (out / "app0/sess-00000.csv").unlink()
    victim = out / "app1/sess-00001.csv"
    data = bytearray(victim.read_bytes())
    data[10] ^= 0x01
    victim.write_bytes(bytes(data))
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"skipped": 3, "exported": 2}
    assert victim.read_bytes() == server.expected_body("app1", "sess-00001")


async def test_duplicates_are_exported_once(server: StandinServer, tmp_path: Path) -> None:
    """A pair repeated in the input (also with another separator) is exported once."""
    sessions = tmp_path / "s.txt"
    sessions.write_text("a1 s1\na1,s1\n  a1\ts1  \na1 s2\n", encoding="utf-8")
    result = await export(make_settings(server, tmp_path / "out", sessions))
    assert result.stats.counts == {"exported": 2}
    assert len(server.state.records("api")) == 2


async def test_invalid_lines_are_recorded_and_the_rest_exported(
    server: StandinServer, tmp_path: Path
) -> None:
    """Bad lines become `invalid` with their line number; good lines are still exported."""
    sessions = tmp_path / "s.txt"
    sessions.write_text(
        "# comment\napp_id,session_id\na1 s1\nonlyone\n../etc passwd\n"
        "a1 s2 extra\n" + "x" * 33 + " s3\na1 s4\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"exported": 2, "invalid": 4}
    assert result.invalid_lines == 4
    bad = [x for x in manifest_lines(out / "manifest.jsonl") if x["status"] == "invalid"]
    assert sorted(x["line"] for x in bad) == [4, 5, 6, 7]
    assert all(x["path"] is None and x["error"]["message"] for x in bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.txt"]
    assert not (tmp_path / "etc").exists()


async def test_transient_answers_are_retried(server: StandinServer, tmp_path: Path) -> None:
    """503, 500, 408, 409 and a dropped connection are retried until the pair is exported."""
    path = server.api_path("a1", "s1", "chat")
    server.script(
        path,
        CannedResponse(503),
        CannedResponse(500),
        CannedResponse(408),
        CannedResponse(409),
        CannedResponse(action="drop"),
    )
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1")])
    out = tmp_path / "out"
    result = await export(
        make_settings(server, out, sessions, retry=RetryPolicy.immediate(max_attempts=6))
    )
    assert result.stats.counts == {"exported": 1}
    line = manifest_lines(out / "manifest.jsonl")[0]
    assert line["attempts"] == 7  # five failed API requests, one good, one download
    assert result.stats.retries == 5


async def test_retries_are_bounded_and_the_last_error_recorded(
    server: StandinServer, tmp_path: Path
) -> None:
    """A pair that keeps failing is `failed` with the real last error, not RetryError."""
    path = server.api_path("a1", "s1", "chat")
    server.script(path, *[CannedResponse(502)] * 3)
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1"), ("a1", "s2")])
    out = tmp_path / "out"
    result = await export(
        make_settings(server, out, sessions, retry=RetryPolicy.immediate(max_attempts=3))
    )
    assert result.stats.counts == {"failed": 1, "exported": 1}
    failed = next(x for x in manifest_lines(out / "manifest.jsonl") if x["status"] == "failed")
    assert failed["attempts"] == 3
    assert failed["error"]["http_status"] == 502
    assert failed["error"]["kind"] == "transient"
    assert "RetryError" not in failed["error"]["message"]


async def test_a_404_fails_the_pair_without_retry(standin, tmp_path: Path) -> None:
    """An unknown session is `failed` after one request, and the other pairs go on."""
    async with standin(accept_any=False) as server:
        sessions = write_sessions(tmp_path / "s.txt", [("a1", "nope")])
        out = tmp_path / "out"
        result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"failed": 1}
    line = manifest_lines(out / "manifest.jsonl")[0]
    assert line["attempts"] == 1 and line["error"]["http_status"] == 404
    assert "not found" in line["error"]["message"].lower()


async def test_a_429_pauses_every_request_and_fails_no_pair(
    server: StandinServer, tmp_path: Path
) -> None:
    """A 429 with Retry-After: 300 holds all API requests 300 s (on a fake clock); none fail."""
    clock = FakeClock()
    pacer = Pacer(Rate(1_000_000, 1.0), clock=clock, sleep=clock.sleep)
    server.script(
        server.api_path("app0", "sess-00000", "chat"),
        CannedResponse(429, headers={"Retry-After": "300"}),
    )
    sessions = write_sessions(tmp_path / "s.txt", pairs(12))
    result = await export(
        make_settings(server, tmp_path / "out", sessions, concurrency=1), pacer=pacer
    )
    assert result.stats.counts == {"exported": 12}
    assert result.stats.rate_limited == 1
    assert pacer.paused_seconds == 300.0
    assert sum(clock.slept) >= 300.0


async def test_an_expired_link_is_refreshed(server: StandinServer, tmp_path: Path) -> None:
    """S3's 403 'Request has expired' gets a fresh URL, not a failure, and is counted."""
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(
            403,
            body='<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            "<Message>Request has expired</Message></Error>",
            headers={"Content-Type": "application/xml"},
        ),
    )
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1")])
    out = tmp_path / "out"
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"exported": 1}
    assert result.stats.url_refreshes == 1
    assert len(server.state.records("api")) == 2
    assert (out / "a1/s1.csv").read_bytes() == server.expected_body("a1", "s1")


async def test_a_url_born_expired_is_used_once_then_replaced(standin, tmp_path: Path) -> None:
    """Each freshly issued URL is tried at once; after the refresh budget the pair fails."""
    async with standin(url_lifetime=0) as server:
        sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1")])
        out = tmp_path / "out"
        result = await export(
            make_settings(
                server, out, sessions, retry=RetryPolicy(max_link_refreshes=3, initial_backoff=0)
            )
        )
        api, downloads = server.state.records("api"), server.state.records("download")
    assert result.stats.counts == {"failed": 1}
    assert len(api) == len(downloads) == 4  # every URL used exactly once
    line = manifest_lines(out / "manifest.jsonl")[0]
    assert line["error"]["kind"] == "link_expired" and line["error"]["http_status"] == 403
    assert line["attempts"] == 8 and not (out / "a1/s1.csv").exists()


@pytest.mark.parametrize("size", [None, 2 * IN_MEMORY], ids=["held", "spilled"])
async def test_truncated_downloads_are_retried_and_never_land(
    standin, tmp_path: Path, size: int | None
) -> None:
    """Bodies cut short of their Content-Length leave no file and are downloaded again, held
    in memory or already spilling to their temporary file when cut."""
    async with standin(faults=FaultRates(download_truncate=0.5), seed=7, chat_bytes=size) as server:
        sessions = write_sessions(tmp_path / "s.txt", pairs(20))
        out = tmp_path / "out"
        result = await export(
            make_settings(server, out, sessions, retry=RetryPolicy.immediate(max_attempts=20))
        )
        truncated = server.state.counters.faults["download_truncate"]
        for app, sid in pairs(20):
            assert (out / app / f"{sid}.csv").read_bytes() == server.expected_body(app, sid)
    assert truncated >= 5
    assert result.stats.counts == {"exported": 20}
    assert result.stats.retries == truncated
    assert leftovers(out) == []


async def test_temporary_files_of_a_killed_run_are_removed(
    server: StandinServer, tmp_path: Path
) -> None:
    """A `.part` file left by a killed run is removed by the next run; others are kept."""
    out = tmp_path / "out"
    (out / "a1").mkdir(parents=True)
    stale = out / "a1" / ".rtk-export-s1.csv.1a2b3c4d.part"
    stale.write_bytes(b"half a file")
    mine = out / "a1" / "notes.txt"
    mine.write_text("kept")
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s2")])
    await export(make_settings(server, out, sessions))
    assert not stale.exists() and mine.read_text() == "kept"
    assert leftovers(out) == []


async def test_a_lost_file_whose_reexport_fails_stays_visible(
    standin, tmp_path: Path, caplog
) -> None:
    """A deleted archived file is logged as damaged; if its re-export fails, the failed line
    still names the archived copy, so `verify` keeps reporting it missing."""
    from exporter.verify import verify

    out = tmp_path / "out"
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1"), ("a1", "s2")])
    async with standin() as server:
        await export(make_settings(server, out, sessions))
    (out / "a1/s1.csv").unlink()
    async with standin(accept_any=False) as gone:  # chat retention ran out: 404 now
        result = await export(make_settings(gone, out, sessions))
    assert result.stats.counts == {"failed": 1, "skipped": 1}
    assert "a1/s1.csv was exported by an earlier run but is missing" in caplog.text
    last = manifest_lines(out / "manifest.jsonl")[-2:]
    failed = next(x for x in last if x["session_id"] == "s1")
    assert failed["status"] == "failed" and failed["path"] == "a1/s1.csv"
    assert failed["sha256"] and failed["error"]["http_status"] == 404
    found = verify(out, out / "manifest.jsonl")
    assert found.missing == ["a1/s1.csv"] and found.intact == 1 and not found.ok


def test_an_interrupted_atomic_write_leaves_a_name_the_next_run_removes(tmp_path: Path) -> None:
    """write_atomic's temporary name is one remove_stale_temps knows (state file, metrics)."""
    from unittest import mock

    from exporter.archive import remove_stale_temps, write_atomic

    with (
        mock.patch("os.replace", side_effect=KeyboardInterrupt),
        mock.patch("os.unlink"),
        pytest.raises(KeyboardInterrupt),
    ):
        # as if killed between the write and the rename
        write_atomic(tmp_path / ".rtk-export-state.json", "{}")
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".rtk-export-")
    assert remove_stale_temps(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []


async def test_download_redirects_are_checked_hop_by_hop(
    server: StandinServer, tmp_path: Path
) -> None:
    """A relative redirect on loopback is followed; one to a refused scheme fails the pair
    without any request to it."""
    body = server.expected_body("a1", "s1")
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(302, headers={"Location": "chat.csv?moved=1"}),
        CannedResponse(200, body=body),
    )
    server.script(
        "/downloads/a1/s2/chat.csv",
        CannedResponse(302, headers={"Location": "ftp://127.0.0.1/s2.csv"}),
    )
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1"), ("a1", "s2")])
    out = tmp_path / "out"
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"exported": 1, "failed": 1}
    assert (out / "a1/s1.csv").read_bytes() == body
    moved = [r for r in server.state.records("download") if r.query.get("moved") == "1"]
    assert len(moved) == 1 and moved[0].path == "/downloads/a1/s1/chat.csv"
    failed = next(x for x in manifest_lines(out / "manifest.jsonl") if x["status"] == "failed")
    assert failed["session_id"] == "s2" and "download redirected" in failed["error"]["message"]
    assert failed["error"]["http_status"] == 302


async def test_a_download_409_or_503_is_retried_after_its_retry_after(
    server: StandinServer, tmp_path: Path
) -> None:
    """409 and 503 from the download host are transient, and their Retry-After is honoured."""
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(409),
        CannedResponse(503, headers={"Retry-After": "0"}),
    )
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1")])
    out = tmp_path / "out"
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"exported": 1}
    assert result.stats.retries == 2
