"""The API's answers read: the one envelope check, the error mapping of an answer that is not
a success, and the shape of each endpoint's `data` (pure: bytes in, values or an error out)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from exporter.errors import (
    AuthError,
    ExportError,
    PermanentError,
    RateLimited,
    TransientError,
    transient_status,
)
from exporter.http import parse_expiry, parse_retry_after
from exporter.urls import Link

# Where each kind's answer names its URL and expiry (the API is not consistent about it).
LINK_KEYS = {
    "chat": ("chat_download_url", "chat_download_url_expiry"),
    "transcript": ("transcript_download_url", "transcript_download_url_expiry"),
    "summary": ("summaryDownloadUrl", "summaryDownloadUrlExpiry"),
}
_ALT_KEYS = {  # spellings seen in webhooks and other versions of the schema
    "summary": ("summary_download_url", "summary_download_url_expiry"),
    "transcript": ("transcriptDownloadUrl", "transcriptDownloadUrlExpiry"),
    "chat": ("chatDownloadUrl", "chatDownloadUrlExpiry"),
}

# Cloudflare codes and wording that mean the token itself is refused (not just one resource).
_AUTH_CODES = {9103, 9106, 9109, 10000, 10001}
_AUTH_WORDS = re.compile(
    r"authenticat|authoriz|permission|access token|invalid token|api token", re.IGNORECASE
)


def error_from_answer(status: int, body: bytes, headers: Mapping[str, str]) -> ExportError:
    """Map an API answer that is not a success to the error tree.

    Both envelopes are read: Cloudflare's v4 `{"errors": [{code, message}]}` and RealtimeKit's
    `{"error": {code, message}}`; anything else (an HTML page from a proxy) by status alone.
    """
    code, message = _envelope_error(body)
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    retry_after = parse_retry_after(headers)
    if status == 401 or (status == 403 and (code in _AUTH_CODES or _AUTH_WORDS.search(message))):
        return AuthError(f"the API token was refused ({text})", http_status=status)
    if status == 429:
        return RateLimited(text, http_status=status, retry_after=retry_after)
    if transient_status(status):  # 429 is taken above: it pauses every request
        return TransientError(text, http_status=status, retry_after=retry_after)
    if 300 <= status < 400:
        return PermanentError(
            f"HTTP {status}: the API answered with a redirect, not followed", http_status=status
        )
    return PermanentError(text, http_status=status)


def _envelope_error(body: bytes) -> tuple[int | None, str]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        return None, ""
    if not isinstance(doc, dict):
        return None, ""
    candidates: list[Any] = []
    if isinstance(doc.get("errors"), list):
        candidates.extend(doc["errors"])
    if isinstance(doc.get("error"), dict):
        candidates.append(doc["error"])
    elif isinstance(doc.get("error"), str):
        candidates.append({"message": doc["error"]})
    for err in candidates:
        if isinstance(err, dict):
            code = err.get("code")
            msg = str(err.get("message") or "")[:300]
            return (code if isinstance(code, int) else None), msg
    return None, ""


def envelope(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the answer, its `data` object) of a 2xx answer; a PermanentError saying what is wrong
    otherwise. The one check of every answer's envelope."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PermanentError("malformed API answer: not JSON", http_status=200) from None
    if not isinstance(doc, dict):
        raise PermanentError("malformed API answer: not a JSON object", http_status=200)
    if doc.get("success") is False:
        _, message = _envelope_error(body)
        raise PermanentError(
            f"API answered success:false: {message or 'no message'}", http_status=200
        )
    data = doc.get("data")
    if not isinstance(data, dict):
        raise PermanentError("malformed API answer: no 'data' object", http_status=200)
    return doc, data


def link_from_answer(kind: str, body: bytes) -> Link:
    """The URL and expiry in a 200 answer, or a PermanentError saying what is wrong with it."""
    _, data = envelope(body)
    if isinstance(data.get("data"), dict):
        data = data["data"]
    url_key, expiry_key = LINK_KEYS[kind]
    url, expiry = data.get(url_key), data.get(expiry_key)
    if not url:
        alt_url, alt_expiry = _ALT_KEYS[kind]
        url, expiry = data.get(alt_url), data.get(alt_expiry)
    if not isinstance(url, str) or not url:
        raise PermanentError(f"API answer has no {url_key}", http_status=200)
    return Link(url=url, expires_at=parse_expiry(expiry))


def page_of(body: bytes) -> tuple[list[Any], int | None]:
    """(sessions, paging.total_count or None) from a listing answer."""
    doc, data = envelope(body)
    sessions = data.get("sessions")
    if not isinstance(sessions, list):
        raise PermanentError("malformed listing: no data.sessions list", http_status=200)
    paging = doc.get("paging") if isinstance(doc.get("paging"), dict) else data.get("paging")
    return sessions, _total_of(paging)


def session_of(body: bytes) -> dict[str, Any]:
    """The session in a session-details answer: `data`, or `data.session` (older schema)."""
    _, data = envelope(body)
    inner = data.get("session")
    session = inner if isinstance(inner, dict) else data
    if not isinstance(session.get("id"), str):
        raise PermanentError("malformed session details: no session id", http_status=200)
    return session


def webhooks_of(body: bytes) -> list[dict[str, Any]]:
    """The webhooks in a listing answer (`data` a list; `data.webhooks` also read)."""
    _, data = _listing(body, "webhooks", "webhook listing")
    return [w for w in data if isinstance(w, dict) and isinstance(w.get("id"), str)]


def webhook_of(body: bytes) -> dict[str, Any]:
    """The webhook in a create, read or update answer."""
    _, data = envelope(body)
    if not isinstance(data.get("id"), str) or not data["id"]:
        raise PermanentError("malformed webhook answer: no id", http_status=200)
    return data


def recordings_page_of(body: bytes) -> tuple[list[Any], int | None]:
    """(recording objects, paging.total_count or None) of a recordings listing (`data` a
    plain list; `data.recordings` also read)."""
    doc, data = _listing(body, "recordings", "recordings listing")
    return [r for r in data if isinstance(r, dict)], _total_of(doc.get("paging"))


def _listing(body: bytes, key: str, what: str) -> tuple[dict[str, Any], list[Any]]:
    """(the answer, its `data` list) of a listing whose `data` is a plain list (`data.<key>`
    in some versions of the schema); a PermanentError naming `what` otherwise."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise PermanentError(f"malformed {what}: not JSON", http_status=200) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, dict):
        data = data.get(key)
    if not isinstance(data, list) or doc.get("success") is False:
        raise PermanentError(f"malformed {what}: no data list", http_status=200)
    return doc, data


def _total_of(paging: object) -> int | None:
    total = paging.get("total_count") if isinstance(paging, dict) else None
    ok = isinstance(total, int) and not isinstance(total, bool) and total >= 0
    return total if ok else None
