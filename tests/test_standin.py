"""The RealtimeKit stand-in, driven over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from exporter.standin import (
    CHAT_CSV_HEADER,
    CannedResponse,
    FaultRates,
    SessionSpec,
    StandinConfig,
    StandinServer,
    StandinState,
    config_from_args,
    expected_body,
    run_standin,
    standin_in_thread,
)

TOKEN = "tok-123"
ACCOUNT = "acct-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 11, 20, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def config(**overrides: Any) -> StandinConfig:
    return StandinConfig(**{"token": TOKEN, "account_id": ACCOUNT, **overrides})


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def get_json(client: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with client.get(url, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def chat_url(server: StandinServer, client: aiohttp.ClientSession, app: str, sid: str) -> str:
    status, body = await get_json(client, server.api_url(app, sid, "chat"), headers=AUTH)
    assert status == 200, body
    url: str = body["data"]["chat_download_url"]
    return url


CATALOGUE = (
    SessionSpec("app1", "s-early", T0 - timedelta(hours=1)),
    SessionSpec("app1", "s-a", T0 + timedelta(hours=1)),
    SessionSpec("app1", "s-live", T0 + timedelta(hours=2), status="LIVE"),
    SessionSpec(
        "app1",
        "s-b",
        T0 + timedelta(hours=3),
        breakout_rooms=(SessionSpec("app1", "s-b-room1", T0 + timedelta(hours=3, minutes=5)),),
    ),
    SessionSpec("app1", "s-c", T0 + timedelta(hours=4), has_transcript=False, has_summary=False),
    SessionSpec("app1", "s-next-day", T0 + timedelta(days=1)),
    SessionSpec("app2", "s-other-app", T0 + timedelta(hours=1)),
)


# ------------------------------------------------------------------------------ chat + download


@pytest.mark.asyncio
async def test_chat_url_downloads_the_expected_bytes_without_credentials(
    client: aiohttp.ClientSession,
) -> None:
    """A chat answer carries a fresh URL whose body is expected_body, with Content-Length."""
    async with run_standin(config()) as server:
        status, body = await get_json(
            client,
            server.base_url + f"/accounts/{ACCOUNT}/realtime/kit/app1/sessions/sess-1/chat",
            headers=AUTH,
        )
        assert status == 200 and body["success"] is True
        stamp = body["data"]["chat_download_url_expiry"]
        assert stamp.endswith("Z")
        expiry = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert expiry > datetime.now(UTC) + timedelta(seconds=250)
        async with client.get(body["data"]["chat_download_url"]) as resp:
            data = await resp.read()
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == len(data)
        expected = server.expected_body("app1", "sess-1")
        assert data == expected
        assert hashlib.sha256(data).hexdigest() == server.state.content.digest("app1", "sess-1")[1]
        assert 1000 <= len(data) <= 6000
        downloads = server.state.records("download")
        assert len(downloads) == 1 and "Authorization" not in downloads[0].headers
        api_headers = server.state.records("api")[0].headers
        assert "Authorization" in api_headers  # header lookups ignore case
        assert api_headers["authorization"] == f"Bearer {TOKEN}"
        assert server.state.counters.api_requests == 1
        assert server.state.counters.downloads_completed == 1


def test_chat_csv_has_the_documented_header_and_hard_quoting() -> None:
    """The CSV parses with the csv module, round-trips byte for byte, and holds the nasty cases."""
    body = StandinState(config(chat_rows=64)).expected_body("app1", "s1")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert tuple(rows[0]) == CHAT_CSV_HEADER
    assert len(rows) == 65 and all(len(r) == 10 for r in rows)
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    assert out.getvalue().encode("utf-8") == body
    fields = [f for r in rows[1:] for f in r]
    assert any("," in f for f in fields) and any('"' in f for f in fields)
    assert any("\n" in f for f in fields)
    assert any(not f.isascii() for f in fields)
    assert {r[7] for r in rows[1:]} <= {"TEXT_MESSAGE", "IMAGE_MESSAGE", "FILE_MESSAGE"}
    assert len({r[0] for r in rows[1:]}) == 64  # message ids are unique


def test_content_is_deterministic_per_seed_and_session() -> None:
    """Same config, same bytes; another session or seed, other bytes."""
    one = StandinState(config(seed=7)).expected_body("app1", "s1")
    assert StandinState(config(seed=7)).expected_body("app1", "s1") == one
    assert StandinState(config(seed=8)).expected_body("app1", "s1") != one
    assert StandinState(config(seed=7)).expected_body("app1", "s2") != one


@pytest.mark.parametrize("size", [1024, 4097, 250_000])
def test_chat_bytes_gives_exactly_that_size(size: int) -> None:
    """chat_bytes sets the body size to the byte, still a valid 10-column CSV."""
    state = StandinState(config(chat_bytes=size))
    body = state.expected_body("app1", "big")
    assert len(body) == size == state.content.size("app1", "big")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert all(len(r) == 10 for r in rows)


@pytest.mark.asyncio
async def test_large_body_is_served_whole(client: aiohttp.ClientSession) -> None:
    """A sized body streams in chunks and arrives complete."""
    async with run_standin(config(chat_bytes=300_000)) as server:
        async with client.get(await chat_url(server, client, "app1", "big")) as resp:
            sha = hashlib.sha256()
            async for chunk in resp.content.iter_chunked(65536):
                sha.update(chunk)
        assert resp.content_length == 300_000
        assert (300_000, sha.hexdigest()) == server.state.content.digest("app1", "big")


@pytest.mark.asyncio
async def test_expired_url_gets_s3_xml_403(client: aiohttp.ClientSession) -> None:
    """A URL issued with lifetime 0 is refused as S3 refuses an expired presigned URL."""
    async with run_standin(config(url_lifetime=0)) as server:
        async with client.get(await chat_url(server, client, "app1", "s1")) as resp:
            text = await resp.text()
            assert resp.status == 403
            assert resp.content_type == "application/xml"
        assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
        assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in text
        assert server.state.counters.downloads_completed == 0


@pytest.mark.asyncio
async def test_tampered_url_and_auth_header_are_refused(client: aiohttp.ClientSession) -> None:
    """A changed signature is SignatureDoesNotMatch; a presigned URL with Authorization is a 400."""
    async with run_standin(config()) as server:
        url = await chat_url(server, client, "app1", "s1")
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query["X-Amz-Expires"] = "999999"
        async with client.get(parts._replace(query=urlencode(query)).geturl()) as resp:
            assert resp.status == 403
            assert "<Code>SignatureDoesNotMatch</Code>" in await resp.text()
        async with client.get(url, headers=AUTH) as resp:
            assert resp.status == 400
            assert "<Code>InvalidArgument</Code>" in await resp.text()
        async with client.get(url) as resp:
            assert resp.status == 200


# ------------------------------------------------------------------------------ auth + envelopes


@pytest.mark.asyncio
async def test_bad_missing_token_401_wrong_account_and_permission_403(
    client: aiohttp.ClientSession,
) -> None:
    """Token and account are checked on every API route, in the v4 envelope."""
    async with run_standin(config()) as server:
        url = server.api_url("app1", "s1", "chat")
        for headers in ({"Authorization": "Bearer nope"}, {}):
            status, body = await get_json(client, url, headers=headers)
            assert status == 401
            assert body == {
                "success": False,
                "errors": [{"code": 10000, "message": "Authentication error"}],
                "messages": [],
                "result": None,
            }
        status, body = await get_json(client, url.replace(ACCOUNT, "someone-else"), headers=AUTH)
        assert status == 403 and body["errors"][0]["code"] == 9109
    async with run_standin(config(token_lacks_permission=True)) as server:
        status, body = await get_json(client, server.api_url("app1"), headers=AUTH)
        assert status == 403 and body["errors"][0]["message"] == "Authentication error"


@pytest.mark.asyncio
async def test_error_envelopes_auto_v4_and_rtk(client: aiohttp.ClientSession) -> None:
    """auto: 404s in RealtimeKit's shape, auth in v4's; v4 and rtk force one shape for all."""
    strict = {"accept_any": False, "sessions": CATALOGUE}
    async with run_standin(config(**strict)) as server:
        status, body = await get_json(client, server.api_url("app1", "nope", "chat"), headers=AUTH)
        assert (status, body) == (
            404,
            {"success": False, "error": {"code": 404, "message": "Session not found"}},
        )
    async with run_standin(config(error_envelope="v4", **strict)) as server:
        status, body = await get_json(client, server.api_url("app1", "nope", "chat"), headers=AUTH)
        assert status == 404 and body["errors"][0]["message"] == "Session not found"
        assert "error" not in body
    async with run_standin(config(error_envelope="rtk")) as server:
        status, body = await get_json(client, server.api_url("app1", "s1", "chat"))
        assert (status, body) == (
            401,
            {"success": False, "error": {"code": 401, "message": "Authentication error"}},
        )


# ------------------------------------------------------------------------------ scripts + limits


@pytest.mark.asyncio
async def test_scripted_answers_are_served_in_order_then_normal(
    client: aiohttp.ClientSession,
) -> None:
    """Scripted answers for a path come first, in order, then the normal behaviour resumes."""
    async with run_standin(config()) as server:
        server.script(
            "/sessions/s1/chat",
            CannedResponse(503),
            CannedResponse(429, headers={"Retry-After": "0"}),
        )
        url = server.api_url("app1", "s1", "chat")
        other = server.api_url("app1", "s2", "chat")
        assert (await get_json(client, other, headers=AUTH))[0] == 200  # another path: untouched
        first = await get_json(client, url, headers=AUTH)
        async with client.get(url, headers=AUTH) as resp:
            second = resp.status, resp.headers.get("Retry-After")
        third = await get_json(client, url, headers=AUTH)
        assert first[0] == 503 and first[1]["success"] is False
        assert second == (429, "0")
        assert third[0] == 200 and "chat_download_url" in third[1]["data"]
        assert server.state.pending_scripts() == 0 and server.state.counters.scripted == 2
        assert [r.status for r in server.state.records("api")] == [200, 503, 429, 200]
        assert server.state.counters.early_after_retry_after == 0  # Retry-After 0 was honoured


@pytest.mark.asyncio
async def test_scripted_drop_stall_and_trickle(client: aiohttp.ClientSession) -> None:
    """drop closes before headers; stall sends headers then nothing; trickle still delivers."""
    async with run_standin(config()) as server:
        # aiohttp silently resends a GET once when the connection drops: script two drops.
        server.script(server.api_path("app1", "s0", "chat"), *[CannedResponse(action="drop")] * 2)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get_json(client, server.api_url("app1", "s0", "chat"), headers=AUTH)
        path = server.api_path("app1", "s1", "chat")
        server.script(
            path,
            CannedResponse(body=b"0123456789", action="stall", seconds=0.2),
            CannedResponse(body={"success": True}, action="trickle", seconds=0.001),
        )
        timeout = aiohttp.ClientTimeout(sock_read=0.05)
        async with client.get(server.origin + path, headers=AUTH, timeout=timeout) as resp:
            assert resp.status == 200 and resp.content_length == 10
            with pytest.raises(asyncio.TimeoutError):
                await resp.read()
        answer = await get_json(client, server.origin + path, headers=AUTH)
        assert answer == (200, {"success": True})
        dropped = [r for r in server.state.records() if r.dropped]
        assert len(dropped) == 2 and all(r.status is None for r in dropped)
        assert server.state.pending_scripts() == 0


@pytest.mark.asyncio
async def test_rate_limit_violation_is_counted_and_answered_429(
    client: aiohttp.ClientSession,
) -> None:
    """Past N requests in W seconds: a 429 with Retry-After and code 10100, counted; a request
    sent before that Retry-After ran out is counted as early."""
    async with run_standin(config(rate_limit=(3, 60.0))) as server:
        url = server.api_url("app1", "s1", "chat")
        for _ in range(2):
            assert (await get_json(client, url, headers=AUTH))[0] == 200
        download = await chat_url(server, client, "app1", "s1")
        assert server.state.counters.rate_violations == 0
        async with client.get(url, headers=AUTH) as resp:
            body = await resp.json()
            assert resp.status == 429
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert (
            body["errors"][0]["code"] == 10100
            and "requests per 60 seconds" in body["errors"][0]["message"]
        )
        assert server.state.counters.rate_violations == 1
        assert server.state.counters.early_after_retry_after == 0
        async with client.get(url, headers=AUTH) as resp:
            assert resp.status == 429
        assert server.state.counters.rate_violations == 2
        assert server.state.counters.early_after_retry_after == 1
        assert server.state.records("api")[-1].fault == "rate_limited"
        async with client.get(download) as resp:  # downloads are not API requests
            assert resp.status == 200


@pytest.mark.asyncio
async def test_rate_limit_block_refuses_everything_for_its_length(
    client: aiohttp.ClientSession,
) -> None:
    """With a Cloudflare-style block, the Retry-After is the block, whatever the window says."""
    async with run_standin(config(rate_limit=(1, 0.01), rate_limit_block=120)) as server:
        url = server.api_url("app1", "s1", "chat")
        statuses = []
        for _ in range(3):
            async with client.get(url, headers=AUTH) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
        assert statuses[0] == (200, None)
        assert statuses[1] == (429, "120") and statuses[2][0] == 429
        assert server.state.counters.rate_violations == 2


# ------------------------------------------------------------------------------ listing + details


@pytest.mark.asyncio
async def test_listing_filters_by_start_window_and_status_and_pages(
    client: aiohttp.ClientSession,
) -> None:
    """Sessions started in [start_time, end_time), by status, sorted, paged with total_count."""
    async with run_standin(config(sessions=CATALOGUE)) as server:
        url = server.api_url("app1")
        window = {"start_time": T0.isoformat(), "end_time": (T0 + timedelta(days=1)).isoformat()}
        seen, page = [], 1
        while True:
            status, body = await get_json(
                client, url, headers=AUTH, params={**window, "page_no": page, "per_page": 2}
            )
            assert status == 200 and body["success"] is True
            seen += [s["id"] for s in body["data"]["sessions"]]
            assert body["paging"]["total_count"] == 4
            assert body["paging"]["start_offset"] == (page - 1) * 2
            if len(body["data"]["sessions"]) < 2:
                break
            page += 1
        assert seen == ["s-a", "s-live", "s-b", "s-c"]  # s-early, s-next-day outside; sorted
        assert page == 3
        status, body = await get_json(
            client, url, headers=AUTH, params={**window, "status": "ENDED"}
        )
        ended = body["data"]["sessions"]
        assert [s["id"] for s in ended] == ["s-a", "s-b", "s-c"]
        assert [b["id"] for b in ended[1]["breakout_rooms"]] == ["s-b-room1"]
        required = {
            "id",
            "associated_id",
            "created_at",
            "started_at",
            "updated_at",
            "ended_at",
            "status",
            "type",
            "live_participants",
            "max_concurrent_participants",
            "meeting_display_name",
            "minutes_consumed",
            "organization_id",
        }
        assert all(required <= s.keys() for s in ended)
        status, body = await get_json(client, url, headers=AUTH, params={"status": "LIVE"})
        assert [s["id"] for s in body["data"]["sessions"]] == ["s-live"]
        assert "ended_at" not in body["data"]["sessions"][0]
    async with run_standin(config(sessions=CATALOGUE, omit_paging=True)) as server:
        status, body = await get_json(client, server.api_url("app2"), headers=AUTH)
        assert "paging" not in body and [s["id"] for s in body["data"]["sessions"]] == [
            "s-other-app"
        ]


@pytest.mark.asyncio
async def test_session_details_follow_catalogue_changes(client: aiohttp.ClientSession) -> None:
    """Details reflect the catalogue, which a test may change between runs; unknown ids 404."""
    async with run_standin(config(sessions=CATALOGUE, accept_any=False)) as server:
        url = server.api_url("app1", "s-live")
        status, body = await get_json(client, url, headers=AUTH)
        assert status == 200 and body["data"]["status"] == "LIVE"
        server.state.catalogue[("app1", "s-live")].status = "ENDED"
        status, body = await get_json(client, url, headers=AUTH)
        assert body["data"]["status"] == "ENDED" and "ended_at" in body["data"]
        status, body = await get_json(client, server.api_url("app1", "ghost"), headers=AUTH)
        assert status == 404 and body["error"]["message"] == "Session not found"
        status, _ = await get_json(
            client, server.api_url("app1", "s-b-room1", "chat"), headers=AUTH
        )
        assert status == 200  # breakout rooms are sessions of their own


@pytest.mark.asyncio
async def test_transcript_and_summary_404_when_not_configured(
    client: aiohttp.ClientSession,
) -> None:
    """A session without transcript or summary answers 404; others give their own URL keys."""
    async with run_standin(config(sessions=CATALOGUE)) as server:
        for kind in ("transcript", "summary"):
            status, body = await get_json(client, server.api_url("app1", "s-c", kind), headers=AUTH)
            assert (
                status == 404
                and body["success"] is False
                and "not found" in body["error"]["message"]
            )
        status, body = await get_json(
            client,
            server.api_url("app1", "s-a", "transcript"),
            headers=AUTH,
            params={"format": "JSON"},
        )
        assert status == 200 and body["data"]["sessionId"] == "s-a"
        async with client.get(body["data"]["transcript_download_url"]) as resp:
            cues = json.loads(await resp.read())
        assert cues and {"start", "end", "name", "text"} <= cues[0].keys()
        status, body = await get_json(
            client, server.api_url("app1", "s-a", "summary"), headers=AUTH
        )
        assert set(body["data"]) == {"sessionId", "summaryDownloadUrl", "summaryDownloadUrlExpiry"}
        async with client.get(body["data"]["summaryDownloadUrl"]) as resp:
            assert await resp.read() == server.expected_body("app1", "s-a", "summary", "txt")


# ------------------------------------------------------------------------------ faults


@pytest.mark.asyncio
async def test_api_faults_are_injected_and_counted(client: aiohttp.ClientSession) -> None:
    """Each API fault kind at rate 1 gives its symptom and is counted."""
    url_path = ("app1", "s1", "chat")
    async with run_standin(config(faults=FaultRates(api_5xx=1.0))) as server:
        status, body = await get_json(client, server.api_url(*url_path), headers=AUTH)
        assert status in (500, 502, 503, 504) and body["success"] is False
        assert server.state.counters.faults == {"api_5xx": 1}
    async with run_standin(config(faults=FaultRates(api_429=1.0), retry_after=7)) as server:
        async with client.get(server.api_url(*url_path), headers=AUTH) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "7"
        await get_json(client, server.api_url(*url_path), headers=AUTH)
        assert server.state.counters.early_after_retry_after == 1
    async with run_standin(config(faults=FaultRates(api_success_false=1.0))) as server:
        status, body = await get_json(client, server.api_url(*url_path), headers=AUTH)
        assert status == 200 and body["success"] is False
    async with (
        run_standin(config(faults=FaultRates(api_non_json=1.0))) as server,
        client.get(server.api_url(*url_path), headers=AUTH) as resp,
    ):
        assert resp.status == 200 and resp.content_type == "text/html"
    async with run_standin(config(faults=FaultRates(api_drop=1.0))) as server:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get_json(client, server.api_url(*url_path), headers=AUTH)
        # aiohttp resent the GET once by itself; each arrival drew (and got) the fault.
        drops = server.state.counters.faults["api_drop"]
        assert drops >= 1 and drops == server.state.counters.api_requests


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", ["download_truncate", "download_drop_mid_body"])
async def test_download_body_faults_break_content_length(
    client: aiohttp.ClientSession, fault: str
) -> None:
    """Truncated or reset bodies announce the full length and deliver less."""
    async with run_standin(config(faults=FaultRates(**{fault: 1.0}))) as server:
        url = await chat_url(server, client, "app1", "s1")
        with pytest.raises(aiohttp.ClientPayloadError):
            async with client.get(url) as resp:
                assert resp.content_length == len(server.expected_body("app1", "s1"))
                await resp.read()
        assert server.state.counters.faults[fault] == 1
        assert server.state.counters.downloads_completed == 0


@pytest.mark.asyncio
async def test_download_drop_and_expired_faults(client: aiohttp.ClientSession) -> None:
    """A dropped download has no answer; an injected expiry looks like a real one."""
    async with run_standin(config(faults=FaultRates(download_drop=1.0))) as server:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with client.get(await chat_url(server, client, "app1", "s1")) as resp:
                await resp.read()
    async with run_standin(config(faults=FaultRates(download_expired=1.0))) as server:
        async with client.get(await chat_url(server, client, "app1", "s1")) as resp:
            assert resp.status == 403 and "Request has expired" in await resp.text()
        assert server.state.counters.faults["download_expired"] == 1


@pytest.mark.asyncio
async def test_fault_draws_are_reproducible_from_the_seed(client: aiohttp.ClientSession) -> None:
    """Two servers with the same seed answer the same request sequence the same way."""
    runs = []
    for _ in range(2):
        async with run_standin(config(seed=42, faults=FaultRates(api_5xx=0.5))) as server:
            url = server.api_url("app1", "s1", "chat")
            runs.append([(await get_json(client, url, headers=AUTH))[0] for _ in range(12)])
    assert runs[0] == runs[1]
    assert 200 in runs[0] and any(s >= 500 for s in runs[0])


# ------------------------------------------------------------------------------ running


def test_thread_runner_serves_synchronous_callers() -> None:
    """standin_in_thread serves blocking clients (subprocess tests) and stops on exit."""
    with standin_in_thread(config()) as server:
        request = urllib.request.Request(server.api_url("a", "s", "chat"), headers=AUTH)
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.loads(resp.read())["success"] is True
        assert server.state.counters.api_requests == 1


@pytest.mark.asyncio
async def test_module_main_prints_its_url_and_stops_on_sigterm(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """`python -m exporter.standin` announces its URL on one line, serves the same bytes as an
    in-process stand-in with the same config, and exits 0 on SIGTERM."""
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(
        json.dumps([{"app_id": "a", "session_id": "s", "started_at": T0.isoformat()}])
    )
    argv = ["--port", "0", "--token", TOKEN, "--account-id", ACCOUNT, "--seed", "5",
            "--catalogue", str(catalogue), "--catalogue-only"]  # fmt: skip
    same, _, _ = config_from_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter.standin", *argv, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("RTK_STANDIN_URL=http://127.0.0.1:")
        base = line.strip().split("=", 1)[1]
        assert base.endswith("/client/v4")
        kit = f"{base}/accounts/{ACCOUNT}/realtime/kit"
        status, body = await get_json(client, f"{kit}/a/sessions/s/chat", headers=AUTH)
        assert status == 200
        async with client.get(body["data"]["chat_download_url"]) as resp:
            assert await resp.read() == expected_body(same, "a", "s")
        assert (await get_json(client, f"{kit}/a/sessions/other/chat", headers=AUTH))[0] == 404
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


def test_command_line_options_build_the_config(tmp_path: Path) -> None:
    """Rates, faults and limits given on the command line land in StandinConfig; bad ones exit."""
    config, host, port = config_from_args(
        ["--port", "8123", "--rate-limit", "4/1s", "--fault-api-5xx", "0.25",
         "--fault-download-truncate", "1", "--url-lifetime", "0", "--error-envelope", "rtk"]
    )  # fmt: skip
    assert (host, port) == ("127.0.0.1", 8123)
    assert config.rate_limit == (4, 1.0) and config.url_lifetime == 0
    assert config.faults == FaultRates(api_5xx=0.25, download_truncate=1.0)
    assert config.error_envelope == "rtk" and config.accept_any
    with pytest.raises(SystemExit):
        config_from_args(["--fault-api-5xx", "0.8", "--fault-api-429", "0.8"])  # sum > 1
    with pytest.raises(SystemExit):
        config_from_args(["--rate-limit", "lots"])
