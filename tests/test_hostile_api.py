"""Hostile or broken answers from the API and the download host: each one a clear per-pair
error (or handled correctly), never a crash, never a stop of the other pairs."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from exporter.config import RetryPolicy
from exporter.standin import CannedResponse, StandinServer
from exporter.writer import IN_MEMORY
from tests.helpers import TOKEN, export, leftovers, make_settings, manifest_lines, write_sessions

HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
    "Gateway</h1></center><hr><center>nginx</center></body></html>"
)


async def run_pair(
    server: StandinServer, tmp_path: Path, max_attempts: int = 3
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Export a1/s1 (the scripted one) and a1/s2 (untouched): their manifest lines, and DIR."""
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1"), ("a1", "s2")])
    out = tmp_path / "out"
    await export(make_settings(server, out, sessions, retry=RetryPolicy.immediate(max_attempts)))
    lines = {x["session_id"]: x for x in manifest_lines(out / "manifest.jsonl")}
    assert lines["s2"]["status"] == "exported"  # the other pair is never held up
    assert (out / "a1/s2.csv").read_bytes() == server.expected_body("a1", "s2")
    assert leftovers(out) == []
    return lines["s1"], lines["s2"], out


def answer(server: StandinServer, *responses: CannedResponse) -> None:
    server.script(server.api_path("a1", "s1", "chat"), *responses)


def link_answer(url: str, expiry: object = "2099-01-01T00:00:00.000Z") -> CannedResponse:
    return CannedResponse(
        body={
            "success": True,
            "data": {"chat_download_url": url, "chat_download_url_expiry": expiry},
        }
    )


def presigned(server: StandinServer, app: str = "a1", sid: str = "s1") -> str:
    return server.state.presign(server.origin, app, sid, "chat.csv")[0]


PERMANENT = [
    ("not JSON", CannedResponse(200, body=b"\x89PNG\r\n\x1a\n garbage"), "not JSON"),
    (
        "HTML with 200",
        CannedResponse(
            200, body=HTML_502.replace("502", "200"), headers={"Content-Type": "text/html"}
        ),
        "not JSON",
    ),
    ("JSON array", CannedResponse(200, body=b"[1, 2]"), "not a JSON object"),
    ("no data", CannedResponse(body={"success": True}), "no 'data' object"),
    (
        "no URL",
        CannedResponse(
            body={"success": True, "data": {"chat_download_url_expiry": "2099-01-01T00:00:00Z"}}
        ),
        "no chat_download_url",
    ),
    (
        "URL not a string",
        CannedResponse(body={"success": True, "data": {"chat_download_url": 42}}),
        "no chat_download_url",
    ),
    (
        "success false with 200",
        CannedResponse(
            body={
                "success": False,
                "errors": [{"code": 7000, "message": "Internal processing error"}],
            }
        ),
        "success:false: Internal processing error",
    ),
    (
        "redirect",
        CannedResponse(302, headers={"Location": "https://elsewhere.example/x"}),
        "redirect, not followed",
    ),
    (
        "plain http to another host",
        link_answer("http://198.51.100.7/chat.csv?X-Amz-Signature=s3cr3t"),
        "scheme 'http' refused",
    ),
    ("file URL", link_answer("file:///etc/passwd"), "download URL"),
    ("ftp URL", link_answer("ftp://198.51.100.7/chat.csv"), "scheme 'ftp' refused"),
    ("URL without host", link_answer("https:///chat.csv"), "no host"),
    ("URL with a bad port", link_answer("https://example.com:99999/chat.csv"), "malformed"),
    ("URL with a space in the host", link_answer("https://exa mple.com/chat.csv"), "download URL"),
    (
        "URL with CR LF",
        link_answer("http://127.0.0.1:1/x\r\nAuthorization: Bearer x"),
        "download URL",
    ),
    ("JSON nested 100,000 deep", CannedResponse(200, body=b"[" * 100_000), "not JSON"),
    (
        "404 HTML",
        CannedResponse(404, body="<html>Not Found</html>", headers={"Content-Type": "text/html"}),
        "HTTP 404",
    ),
]


@pytest.mark.parametrize(
    ("canned", "words"), [p[1:] for p in PERMANENT], ids=[p[0] for p in PERMANENT]
)
async def test_a_broken_api_answer_fails_only_its_pair(
    server: StandinServer, tmp_path: Path, canned: CannedResponse, words: str
) -> None:
    """The pair is `failed` at once (not retried) with a message saying what was wrong; the
    message never quotes a URL's query; the other pair is exported."""
    answer(server, canned)
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "failed" and line["path"] is None
    assert words in line["error"]["message"], line["error"]
    assert line["error"]["kind"] == "permanent"
    assert "s3cr3t" not in line["error"]["message"] and TOKEN not in str(line)
    assert not (out / "a1/s1.csv").exists()
    assert [r.path for r in server.state.records("download")] == ["/downloads/a1/s2/chat.csv"]


async def test_an_html_error_page_from_a_proxy_is_retried(
    server: StandinServer, tmp_path: Path
) -> None:
    """A 502 or 503 HTML page from a proxy in front of the API is transient: retried; so is a
    500 whose body is JSON nested too deep to parse."""
    answer(
        server,
        CannedResponse(502, body=HTML_502, headers={"Content-Type": "text/html"}),
        CannedResponse(
            503, body="<html>Service Unavailable</html>", headers={"Content-Type": "text/html"}
        ),
        CannedResponse(500, body=b'{"errors": ' + b"[" * 100_000),
    )
    line, _, out = await run_pair(server, tmp_path, max_attempts=4)
    assert line["status"] == "exported" and line["attempts"] == 5
    assert (out / "a1/s1.csv").read_bytes() == server.expected_body("a1", "s1")


@pytest.mark.parametrize(
    "expiry",
    [
        "soon",
        "",
        None,
        "2026-13-45T99:00:00Z",
        [1],
        "NaN",
        float("nan"),
        float("inf"),
        10**400,
        -(10**400),
    ],
    ids=lambda v: repr(v)[:16],
)
async def test_an_unreadable_expiry_still_downloads(
    server: StandinServer, tmp_path: Path, expiry: object
) -> None:
    """A URL whose expiry cannot be read is used at once, as any freshly issued URL is."""
    answer(server, link_answer(presigned(server), expiry))
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "exported"
    assert (out / "a1/s1.csv").read_bytes() == server.expected_body("a1", "s1")


async def test_a_url_to_another_host_gets_no_credentials(
    server: StandinServer, tmp_path: Path
) -> None:
    """A download URL on another host than the API's is fetched, without any credential."""
    other = presigned(server).replace("127.0.0.1", "localhost", 1)
    answer(server, link_answer(other))
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "exported"
    assert (out / "a1/s1.csv").read_bytes() == server.expected_body("a1", "s1")
    download = server.state.records("download")
    assert download and all("Authorization" not in r.headers for r in download)
    assert all(r.headers.get("Host", "").startswith(("localhost", "127.0.0.1")) for r in download)


async def test_a_gzip_encoded_download_is_stored_decoded(
    server: StandinServer, tmp_path: Path
) -> None:
    """Content-Encoding: gzip: the CSV is stored decoded, its size and SHA-256 are those of the
    decoded bytes (Content-Length counts the encoded ones, and is not held against it)."""
    body = server.expected_body("a1", "s1")
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(
            body=gzip.compress(body),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/csv"},
        ),
    )
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "exported" and line["attempts"] == 2
    assert (out / "a1/s1.csv").read_bytes() == body
    assert line["bytes"] == len(body) and line["sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_gzip_body_that_inflates_past_the_in_memory_limit_lands_whole(
    server: StandinServer, tmp_path: Path
) -> None:
    """A small gzip body that decodes to more than IN_MEMORY spills to disk as it is decoded,
    and lands whole."""
    body = b"id,message\r\n" + b"1,the same line again and again\r\n" * 100_000
    assert len(body) > IN_MEMORY
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(body=gzip.compress(body), headers={"Content-Encoding": "gzip"}),
    )
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "exported"
    assert (out / "a1/s1.csv").read_bytes() == body
    assert line["sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_cut_or_corrupt_gzip_download_never_lands(
    server: StandinServer, tmp_path: Path
) -> None:
    """A gzip body cut short, or not gzip at all, is retried; nothing lands until a good one."""
    body = server.expected_body("a1", "s1")
    packed = gzip.compress(body)
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(body=packed[: len(packed) // 2], headers={"Content-Encoding": "gzip"}),
        CannedResponse(body=b"this is not gzip" * 40, headers={"Content-Encoding": "gzip"}),
    )
    line, _, out = await run_pair(server, tmp_path, max_attempts=5)
    assert line["status"] == "exported"
    assert (out / "a1/s1.csv").read_bytes() == body


async def test_a_body_longer_than_announced_is_cut_at_the_announced_length(
    server: StandinServer, tmp_path: Path
) -> None:
    """Bytes after Content-Length are not part of the body (HTTP framing): the file holds what
    was announced, and the garbage after it reaches neither the file nor the next request."""
    body = server.expected_body("a1", "s1")
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
        + b"EXTRA,BYTES\r\n" * 50
    )
    server.script("/downloads/a1/s1/chat.csv", CannedResponse(body=raw, action="raw"))
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "exported"
    assert (out / "a1/s1.csv").read_bytes() == body and line["bytes"] == len(body)


async def test_a_short_body_is_retried_and_a_refused_download_recorded(
    server: StandinServer, tmp_path: Path
) -> None:
    """Fewer bytes than announced is an incomplete download (retried); S3's 404 NoSuchKey is
    a permanent per-pair error naming S3's code."""
    body = server.expected_body("a1", "s1")
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body) + 100).encode() + b"\r\n\r\n" + body
    )
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(body=raw, action="raw"),
        CannedResponse(404, body="<Error><Code>NoSuchKey</Code></Error>"),
    )
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "failed" and line["attempts"] == 3
    assert line["error"]["message"] == "download refused: HTTP 404 (NoSuchKey)"
    assert not (out / "a1/s1.csv").exists()


async def test_an_unknown_content_encoding_fails_the_pair(
    server: StandinServer, tmp_path: Path
) -> None:
    """An encoding we cannot undo (we never ask for it) is a clear per-pair error, not a file
    of compressed bytes under a .csv name."""
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(body=b"\x1b\x00\x00compressed?", headers={"Content-Encoding": "br"}),
    )
    line, _, out = await run_pair(server, tmp_path)
    assert line["status"] == "failed"
    assert line["error"]["message"] == "download has an unsupported Content-Encoding 'br'"
    assert not (out / "a1/s1.csv").exists()
    assert all(
        r.headers.get("Accept-Encoding") == "gzip, deflate"
        for r in server.state.records("download")
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "1e999"},
        {"Retry-After": "inf"},
        {"retry-after-ms": "Infinity"},
        {"Retry-After": "nan"},
    ],
)
async def test_a_429_with_an_endless_retry_after_does_not_hang(
    server: StandinServer, tmp_path: Path, headers: dict[str, str]
) -> None:
    """A Retry-After of infinity (or not a number) is unreadable, not a pause forever: the
    429's default pause applies (zero here) and the pair is exported."""
    answer(server, CannedResponse(429, headers=headers))
    with anyio.fail_after(10):
        line, _, _ = await run_pair(server, tmp_path)
    assert line["status"] == "exported"


async def test_a_chunked_body_cut_before_its_last_chunk_is_retried(
    server: StandinServer, tmp_path: Path
) -> None:
    """Without Content-Length (chunked), a body whose closing chunk never comes is incomplete:
    retried, never stored; a complete chunked body is stored as sent."""
    body = server.expected_body("a1", "s1")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n"
    server.script(
        "/downloads/a1/s1/chat.csv",
        CannedResponse(body=head + chunk[: len(chunk) // 2], action="raw"),
        CannedResponse(body=head + chunk, action="raw"),  # no final 0-size chunk
        CannedResponse(body=head + chunk + b"0\r\n\r\n", action="raw"),
    )
    line, _, out = await run_pair(server, tmp_path, max_attempts=4)
    assert line["status"] == "exported" and line["attempts"] == 4
    assert (out / "a1/s1.csv").read_bytes() == body
