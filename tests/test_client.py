"""Error classification, both error envelopes, Retry-After, and reading link answers."""

from __future__ import annotations

import json

import pytest

from exporter.answers import error_from_answer, link_from_answer, recordings_page_of, webhooks_of
from exporter.errors import (
    AuthError,
    PermanentError,
    RateLimited,
    TransientError,
)
from exporter.http import parse_expiry, parse_retry_after
from exporter.urls import download_url_problem, redact

V4 = json.dumps(
    {
        "success": False,
        "errors": [{"code": 7003, "message": "No route"}],
        "messages": [],
        "result": None,
    }
).encode()
RTK = json.dumps(
    {"success": False, "error": {"code": 404, "message": "Session not found"}}
).encode()


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    """408, 409 and every 5xx are transient, whatever the body."""
    err = error_from_answer(status, b"<html>bad gateway</html>", {})
    assert type(err) is TransientError
    assert err.http_status == status


@pytest.mark.parametrize("status", [400, 404, 405, 410, 422])
def test_other_client_errors_are_permanent(status: int) -> None:
    """Other 4xx are permanent: the pair fails without a retry."""
    assert type(error_from_answer(status, V4, {})) is PermanentError


def test_v4_envelope_message_is_read() -> None:
    """Cloudflare's {errors: [{code, message}]} envelope gives the message."""
    assert "No route" in error_from_answer(400, V4, {}).message


def test_realtimekit_envelope_message_is_read() -> None:
    """RealtimeKit's {error: {code, message}} envelope gives the message."""
    assert "Session not found" in error_from_answer(404, RTK, {}).message


def test_401_is_an_auth_error() -> None:
    """A 401 stops the run, whatever its body says."""
    assert isinstance(error_from_answer(401, b"", {}), AuthError)


def test_403_saying_authentication_is_an_auth_error() -> None:
    """A 403 whose error is about authentication stops the run."""
    body = json.dumps(
        {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}
    )
    assert isinstance(error_from_answer(403, body.encode(), {}), AuthError)


def test_403_about_something_else_is_permanent_for_the_pair() -> None:
    """A 403 that is not about the token fails only its pair."""
    body = json.dumps({"success": False, "error": {"code": 403, "message": "Meeting is locked"}})
    err = error_from_answer(403, body.encode(), {})
    assert type(err) is PermanentError


def test_429_carries_its_retry_after() -> None:
    """A 429 is RateLimited with the Retry-After in seconds."""
    err = error_from_answer(429, b"{}", {"retry-after": "300"})
    assert isinstance(err, RateLimited)
    assert err.retry_after == 300.0


def test_a_redirect_from_the_api_is_not_followed() -> None:
    """A 3xx from the API is a permanent error (the token must not follow it elsewhere)."""
    err = error_from_answer(302, b"", {"location": "https://elsewhere.example/"})
    assert type(err) is PermanentError and "redirect" in err.message


def test_retry_after_forms() -> None:
    """retry-after-ms wins; then seconds; then an HTTP date relative to now."""
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    when = parse_retry_after({"retry-after": "Sun, 06 Nov 1994 08:49:37 GMT"}, now=784111777.0 - 20)
    assert when == 20.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_absurd_retry_after_is_bounded() -> None:
    """inf and NaN are ignored; a day is taken as an hour (a broken proxy, not Cloudflare)."""
    assert parse_retry_after({"retry-after": "inf"}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None
    assert parse_retry_after({"retry-after": "86400"}) == 3600.0
    assert parse_retry_after({"retry-after": "-5"}) == 0.0
    assert parse_retry_after({"retry-after": "300"}) == 300.0


def test_chat_link_is_read_with_its_expiry() -> None:
    """The chat answer's URL and RFC 3339 expiry become a Link."""
    body = json.dumps(
        {
            "success": True,
            "data": {
                "chat_download_url": "https://s3.example/x.csv?sig=1",
                "chat_download_url_expiry": "2026-11-28T06:00:00.000Z",
            },
        }
    ).encode()
    link = link_from_answer("chat", body)
    assert link.url.endswith("sig=1")
    assert link.expires_at == parse_expiry("2026-11-28T06:00:00Z")
    assert link.usable_for(10, now=link.expires_at - 11)
    assert not link.usable_for(10, now=link.expires_at - 9)


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (
            "transcript",
            {
                "sessionId": "s",
                "transcript_download_url": "https://h/t",
                "transcript_download_url_expiry": "2026-11-28T06:00:00Z",
            },
        ),
        (
            "summary",
            {
                "sessionId": "s",
                "summaryDownloadUrl": "https://h/t",
                "summaryDownloadUrlExpiry": "2026-11-28T06:00:00Z",
            },
        ),
    ],
)
def test_transcript_and_summary_keys(kind: str, data: dict[str, str]) -> None:
    """Transcript and summary answers name their URL with their own keys."""
    link = link_from_answer(kind, json.dumps({"success": True, "data": data}).encode())
    assert link.url == "https://h/t"
    assert link.expires_at is not None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"<html>502</html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"success": true}', "no 'data'"),
        (b'{"success": true, "data": {}}', "no chat_download_url"),
        (b'{"success": false, "errors": [{"code": 1, "message": "nope"}]}', "success:false"),
    ],
)
def test_malformed_answers_are_permanent_and_say_why(body: bytes, words: str) -> None:
    """A 200 that is not a usable answer is a permanent error naming what is wrong."""
    with pytest.raises(PermanentError, match=words):
        link_from_answer("chat", body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"success": true, "data": [{"id": "a"}, 7, {"id": "b"}], "paging": {"total_count": 9}}',
        b'{"success": true, "data": {"recordings": [{"id": "a"}, {"id": "b"}]}, '
        b'"paging": {"total_count": 9}}',
    ],
)
def test_a_recordings_listing_is_read_as_a_plain_list_or_under_data_recordings(
    body: bytes,
) -> None:
    """Either shape gives the recording objects (anything else in the list dropped) and the
    paging total."""
    items, total = recordings_page_of(body)
    assert [r["id"] for r in items] == ["a", "b"] and total == 9


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"<html>502</html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "no data list"),
        (b'{"success": true, "data": {}}', "no data list"),
        (b'{"success": false, "data": []}', "no data list"),
    ],
)
def test_malformed_lists_are_permanent_and_name_the_listing(body: bytes, words: str) -> None:
    """The recordings and the webhook listing share one reading: each names itself."""
    with pytest.raises(PermanentError, match=f"malformed recordings listing: {words}"):
        recordings_page_of(body)
    with pytest.raises(PermanentError, match=f"malformed webhook listing: {words}"):
        webhooks_of(body)


def test_unparseable_expiry_is_unknown_not_an_error() -> None:
    """An expiry that cannot be read makes the link single-use, not a failure."""
    body = (
        b'{"success": true, "data": {"chat_download_url": "https://h/x", '
        b'"chat_download_url_expiry": "tomorrow-ish"}}'
    )
    link = link_from_answer("chat", body)
    assert link.expires_at is None and not link.usable_for(0)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://bucket.s3.amazonaws.com/a.csv?X-Amz-Signature=1", True),
        ("http://127.0.0.1:8080/a.csv", True),
        ("http://[::1]:8080/a.csv", True),
        ("http://localhost/a.csv", True),
        ("http://bucket.s3.amazonaws.com/a.csv", False),
        ("ftp://127.0.0.1/a.csv", False),
        ("file:///etc/passwd", False),
        ("https:///nohost", False),
    ],
)
def test_download_urls_must_be_https_or_loopback(url: str, ok: bool) -> None:
    """Only https, or plain http to a loopback address, may be downloaded."""
    assert (download_url_problem(url) is None) is ok


def test_redact_drops_the_query() -> None:
    """A presigned URL is logged without its query string."""
    assert (
        redact("https://h.example:8443/p/a.csv?X-Amz-Signature=secret#f")
        == "https://h.example:8443/p/a.csv"
    )
