"""Stalled servers cost a retry after a bounded timeout, never a hung run (timeouts of 0.2 s;
`anyio.fail_after` only turns a hang into a clear failure)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from exporter.config import Rate, RetryPolicy, Settings, Timeouts
from exporter.standin import CannedResponse, StandinServer
from tests.helpers import (
    ACCOUNT,
    TOKEN,
    export,
    leftovers,
    make_settings,
    manifest_lines,
    pairs,
    write_sessions,
)

TINY = Timeouts(connect=0.2, api=0.2, read=0.2)
HANG = 30.0  # far longer than any timeout: the stand-in is cut off when the test ends


async def run(
    server: StandinServer, tmp_path: Path, todo: list[tuple[str, str]], max_attempts: int = 5
) -> tuple[dict[str, int], Path]:
    sessions = write_sessions(tmp_path / "s.txt", todo)
    out = tmp_path / "out"
    with anyio.fail_after(20):
        result = await export(
            make_settings(
                server, out, sessions, timeouts=TINY, retry=RetryPolicy.immediate(max_attempts)
            )
        )
    return dict(result.stats.counts), out


async def test_download_headers_then_nothing_is_retried(
    server: StandinServer, tmp_path: Path
) -> None:
    """A download that sends its headers and then falls silent is abandoned after
    --read-timeout and fetched again; the other pairs are not held up."""
    server.script(
        "/downloads/app0/sess-00000/chat.csv",
        CannedResponse(body=b"x" * 5000, action="stall", seconds=HANG),
    )
    counts, out = await run(server, tmp_path, pairs(6))
    assert counts == {"exported": 6}
    assert (out / "app0/sess-00000.csv").read_bytes() == server.expected_body("app0", "sess-00000")
    line = next(
        x for x in manifest_lines(out / "manifest.jsonl") if x["session_id"] == "sess-00000"
    )
    assert line["attempts"] == 3  # one API request, the stalled download, the good one
    assert leftovers(out) == []


async def test_download_trickling_a_byte_a_minute_is_retried(
    server: StandinServer, tmp_path: Path
) -> None:
    """One byte a minute: the silence between bytes exceeds --read-timeout, so the download is
    retried instead of taking hours."""
    body = server.expected_body("a1", "s1")
    server.script(
        "/downloads/a1/s1/chat.csv", CannedResponse(body=body, action="trickle", seconds=60)
    )
    counts, out = await run(server, tmp_path, [("a1", "s1")])
    assert counts == {"exported": 1}
    assert (out / "a1/s1.csv").read_bytes() == body
    assert leftovers(out) == []


async def test_download_never_answered_is_retried(server: StandinServer, tmp_path: Path) -> None:
    """A download request that gets no answer at all (not even headers) times out too."""
    server.script("/downloads/a1/s1/chat.csv", CannedResponse(action="hang", seconds=HANG))
    counts, out = await run(server, tmp_path, [("a1", "s1")])
    assert counts == {"exported": 1}
    assert (out / "a1/s1.csv").read_bytes() == server.expected_body("a1", "s1")


async def test_api_request_never_answered_is_retried(server: StandinServer, tmp_path: Path) -> None:
    """An API request with no answer is given up after --request-timeout and sent again."""
    path = server.api_path("a1", "s1", "chat")
    server.script(
        path,
        CannedResponse(action="hang", seconds=HANG),
        CannedResponse(body=b'{"success": true, "data": {}}', action="stall", seconds=HANG),
    )
    counts, out = await run(server, tmp_path, [("a1", "s1"), ("a1", "s2")])
    assert counts == {"exported": 2}
    line = next(x for x in manifest_lines(out / "manifest.jsonl") if x["session_id"] == "s1")
    assert line["attempts"] == 4  # two timed-out API requests, a good one, the download


async def test_a_server_that_always_stalls_fails_the_pair_within_its_attempts(
    server: StandinServer, tmp_path: Path
) -> None:
    """When every attempt stalls, the pair is `failed` ("timed out") after --max-attempts and
    the run ends: the bound is attempts x timeout, not forever."""
    server.script(
        server.api_path("a1", "s1", "chat"), *[CannedResponse(action="hang", seconds=HANG)] * 3
    )
    counts, out = await run(server, tmp_path, [("a1", "s1"), ("a1", "s2")], max_attempts=3)
    assert counts == {"exported": 1, "failed": 1}
    failed = next(x for x in manifest_lines(out / "manifest.jsonl") if x["status"] == "failed")
    assert failed["attempts"] == 3 and "timed out" in failed["error"]["message"]
    assert failed["error"]["kind"] == "transient"


@pytest.fixture
def never_accepts() -> Iterator[str]:
    """http://127.0.0.1:PORT of a listener whose backlog is full: connecting never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # more than the kernel queues for a backlog of 0
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for s in (*fillers, listener):
            s.close()


async def test_a_download_host_that_never_accepts_costs_the_connect_timeout(
    server: StandinServer, tmp_path: Path, never_accepts: str
) -> None:
    """A download host that never completes the TCP handshake: each attempt ends after
    --connect-timeout; the pair is `failed` after its attempts, the other pair exported."""
    server.script(
        server.api_path("a1", "s1", "chat"),
        CannedResponse(
            body={
                "success": True,
                "data": {
                    "chat_download_url": f"{never_accepts}/c.csv?X-Amz-Sig=1",
                    "chat_download_url_expiry": "2099-01-01T00:00:00Z",
                },
            }
        ),
    )
    counts, out = await run(server, tmp_path, [("a1", "s1"), ("a1", "s2")], max_attempts=3)
    assert counts == {"exported": 1, "failed": 1}
    failed = next(x for x in manifest_lines(out / "manifest.jsonl") if x["status"] == "failed")
    assert "timed out" in failed["error"]["message"] and failed["attempts"] == 4


async def test_an_api_host_that_never_accepts_ends_the_run(
    tmp_path: Path, never_accepts: str
) -> None:
    """An API base URL that never accepts: every pair `failed` ("timed out") after its
    attempts; the run ends instead of waiting forever."""
    todo = [("a1", "s1"), ("a1", "s2")]
    sessions = write_sessions(tmp_path / "s.txt", todo)
    out = tmp_path / "out"
    settings = Settings(
        token=TOKEN,
        account_id=ACCOUNT,
        out_dir=out,
        manifest_path=out / "manifest.jsonl",
        sessions=str(sessions),
        base_url=f"{never_accepts}/client/v4",
        timeouts=TINY,
        retry=RetryPolicy.immediate(2),
        rate=Rate(1000, 1.0),
    )
    with anyio.fail_after(20):
        result = await export(settings)
    assert result.stats.counts == {"failed": 2}
    assert all("timed out" in x["error"]["message"] for x in manifest_lines(out / "manifest.jsonl"))
