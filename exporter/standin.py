"""A local RealtimeKit stand-in on 127.0.0.1: the sessions API and presigned downloads, with
seeded fault injection, scripted answers and a record of every request it received.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import hmac
import io
import json
import math
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlencode

from aiohttp import web
from aiohttp.typedefs import Handler

API_PREFIX = "/client/v4"
DOWNLOAD_PREFIX = "/downloads"
CHAT_CSV_HEADER = ("id", "participantId", "sessionId", "meetingId", "displayName", "pinned",
                   "isEdited", "payloadType", "payload", "createdAt")
TRANSCRIPT_FORMATS = ("CSV", "JSON", "SRT", "VTT")
API_FAULTS = ("api_5xx", "api_429", "api_drop", "api_success_false", "api_non_json")
DOWNLOAD_FAULTS = ("download_drop", "download_drop_mid_body", "download_truncate",
                   "download_expired", "download_stall")

Kind = Literal["chat", "transcript", "summary"]
Envelope = Literal["auto", "v4", "rtk"]
Route = Literal["api", "download", "other"]
Action = Literal["respond", "drop", "stall", "trickle"]


# ---------------------------------------------------------------------------------- config


@dataclass
class SessionSpec:
    """A catalogue entry; mutable so that a test can end a LIVE session between two runs."""

    app_id: str
    session_id: str
    started_at: datetime
    status: Literal["LIVE", "ENDED"] = "ENDED"
    minutes: float = 30.0
    title: str = "Stand-in meeting"
    has_chat: bool = True
    has_transcript: bool = True
    has_summary: bool = True
    breakout_rooms: tuple[SessionSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            self.started_at = self.started_at.replace(tzinfo=UTC)

    def to_json(self, organization_id: str, *, with_breakouts: bool = True) -> dict[str, Any]:
        start = self.started_at
        end = start + timedelta(minutes=self.minutes)
        live = self.status == "LIVE"
        body: dict[str, Any] = {
            "id": self.session_id,
            "associated_id": meeting_id(self.app_id, self.session_id),
            "created_at": rfc3339(start - timedelta(minutes=2)),
            "started_at": rfc3339(start),
            "updated_at": rfc3339(datetime.now(UTC) if live else end),
            "status": self.status,
            "type": "meeting",
            "live_participants": 3 if live else 0,
            "max_concurrent_participants": 4,
            "meeting_display_name": self.title,
            "minutes_consumed": self.minutes,
            "organization_id": organization_id,
        }
        if not live:
            body["ended_at"] = rfc3339(end)
        if with_breakouts and self.breakout_rooms:
            body["breakout_rooms"] = [b.to_json(organization_id) for b in self.breakout_rooms]
        return body

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], app_id: str | None = None) -> SessionSpec:
        """A catalogue entry from JSON (`--catalogue`): app_id, session_id, started_at, ..."""
        app = str(obj.get("app_id", app_id))
        return cls(
            app_id=app,
            session_id=str(obj["session_id"]),
            started_at=parse_time(str(obj["started_at"])),
            status="LIVE" if obj.get("status") == "LIVE" else "ENDED",
            minutes=float(obj.get("minutes", 30.0)),
            title=str(obj.get("title", "Stand-in meeting")),
            has_chat=bool(obj.get("has_chat", True)),
            has_transcript=bool(obj.get("has_transcript", True)),
            has_summary=bool(obj.get("has_summary", True)),
            breakout_rooms=tuple(cls.from_json(b, app) for b in obj.get("breakout_rooms", ())),
        )


@dataclass(frozen=True)
class FaultRates:
    """Per-request probabilities. At most one of the API (or download) faults hits a request;
    `*_slow` is drawn separately and only delays the answer."""

    api_5xx: float = 0.0
    api_429: float = 0.0
    api_drop: float = 0.0  # connection closed before any header
    api_success_false: float = 0.0  # 200 with {"success": false}
    api_non_json: float = 0.0  # 200 with an HTML page, as a misbehaving proxy sends
    api_slow: float = 0.0
    download_drop: float = 0.0
    download_drop_mid_body: float = 0.0  # connection reset after half the body
    download_truncate: float = 0.0  # Content-Length announced, fewer bytes, clean close
    download_expired: float = 0.0  # a valid URL refused as expired
    download_stall: float = 0.0  # headers and half the body, then silence
    download_slow: float = 0.0


@dataclass(frozen=True)
class StandinConfig:
    token: str = "standin-token"  # noqa: S105 (the stand-in's own, public)
    account_id: str = "standin-account"
    url_lifetime: float = 300.0  # 0 or less: every URL is already expired when issued
    accept_any: bool = True  # any app/session id exists (ENDED, with chat); else catalogue only
    sessions: tuple[SessionSpec, ...] = ()
    default_has_transcript: bool = True  # for sessions accepted by accept_any
    default_has_summary: bool = True
    seed: int = 0
    chat_rows: int | None = None  # None: 6-24 rows (about 1-6 KB), seeded per session
    chat_bytes: int | None = None  # exact chat CSV size, streamed (1 GB is fine)
    faults: FaultRates = field(default_factory=FaultRates)
    retry_after: int = 1  # Retry-After of injected 429s
    slow_seconds: float = 0.05
    stall_seconds: float = 10.0
    rate_limit: tuple[int, float] | None = None  # N requests per W seconds, counted at arrival
    rate_limit_block: float | None = None  # Cloudflare-style block of all calls after a violation
    error_envelope: Envelope = "auto"  # auto: v4 for auth/limits/5xx, RealtimeKit's for 404s
    omit_paging: bool = False
    default_per_page: int = 20
    max_per_page: int | None = None  # silently caps per_page, as some APIs do
    token_lacks_permission: bool = False  # 403 on every API call, token otherwise accepted

    def __post_init__(self) -> None:
        if self.chat_bytes is not None and self.chat_bytes < 1024:
            raise ValueError("chat_bytes must be at least 1024")
        if self.rate_limit is not None and (self.rate_limit[0] < 1 or self.rate_limit[1] <= 0):
            raise ValueError("rate_limit needs N >= 1 and W > 0")


@dataclass(frozen=True)
class CannedResponse:
    """A scripted answer. body None: an error envelope for status >= 400, else empty.

    action: respond; drop (close before headers); stall (headers, then silence for `seconds`,
    then close); trickle (the body a byte at a time, `seconds` apart).
    """

    status: int = 200
    body: bytes | str | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    action: Action = "respond"
    seconds: float = 0.0


# ---------------------------------------------------------------------------------- records


class Headers(dict[str, str]):
    """Names lower-cased, lookups case-blind: `"Authorization" in h` means what it says."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    arrived: float  # time.monotonic()
    route: Route
    status: int | None = None  # the status sent (None until answered, or if dropped)
    dropped: bool = False  # the connection was closed before any header
    fault: str | None = None  # the injected fault, "scripted", or "rate_limited"


@dataclass
class Counters:
    api_requests: int = 0
    downloads: int = 0  # download requests, whatever their outcome
    downloads_completed: int = 0  # bodies sent in full
    rate_violations: int = 0
    early_after_retry_after: int = 0  # API requests arriving before a 429's Retry-After ran out
    scripted: int = 0
    faults: Counter[str] = field(default_factory=Counter)


# ---------------------------------------------------------------------------------- helpers


def rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def meeting_id(app_id: str, session_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rtk-standin/{app_id}/{session_id}"))


def _s3_error(status: int, code: str, message: str, **extra: str) -> web.Response:
    parts = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message>{parts}<RequestId>STANDIN</RequestId>"
            f"<HostId>c3RhbmRpbg==</HostId></Error>")
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _canned_body(canned: CannedResponse) -> tuple[bytes, str]:
    body = canned.body
    if body is None:
        if canned.status < 400:
            return b"", "application/octet-stream"
        body = {"success": False, "errors": [{"code": 10000 + canned.status, "message":
                f"Scripted error {canned.status}"}], "messages": [], "result": None}
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json"


# ---------------------------------------------------------------------------------- content

# Display names and payloads chosen to break naive CSV handling: commas, doubled quotes,
# embedded newlines, leading spaces, formula-looking text, accents, CJK and emoji.
_NAMES = ("Ana Pérez", "O'Brien, Pat", 'Dr. "Doc" Brown', "Zoë Ångström", "李小龍",
          "José 🎉", "Łukasz Żółć", "plain user")
_TEXTS = ("Hello, world", 'She said "hi" and left', "line one\nline two", "Ça va? 😀",
          "ok", "=1+2 is not a formula", " leading space", "trailing comma,", "",
          "multi\r\nline, \"quoted\"\nend", "Grüße aus Köln", "👍🏽👍🏽👍🏽")
_ROW_PERIOD = 64  # rows repeat their content every 64, so big bodies have a computable size


class Content:
    """Deterministic bodies per (app_id, session_id, kind, format), seeded by the config."""

    def __init__(self, config: StandinConfig, catalogue: Mapping[tuple[str, str], SessionSpec]):
        self.config = config
        self.catalogue = catalogue

    def size(self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv") -> int:
        if kind == "chat":
            return self._chat_plan(app_id, session_id)[0]
        return len(self._small(app_id, session_id, kind, fmt))

    def chunks(self, app_id: str, session_id: str, kind: Kind = "chat",
               fmt: str = "csv") -> Iterator[bytes]:
        if kind == "chat":
            yield from self._chat_chunks(app_id, session_id)
        else:
            yield self._small(app_id, session_id, kind, fmt)

    def body(self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv") -> bytes:
        """The whole body: mind `chat_bytes` (use `digest` for big bodies)."""
        return b"".join(self.chunks(app_id, session_id, kind, fmt))

    def digest(self, app_id: str, session_id: str, kind: Kind = "chat",
               fmt: str = "csv") -> tuple[int, str]:
        """(size, SHA-256 hex) computed by streaming."""
        sha, size = hashlib.sha256(), 0
        for chunk in self.chunks(app_id, session_id, kind, fmt):
            sha.update(chunk)
            size += len(chunk)
        return size, sha.hexdigest()

    def _rng(self, app_id: str, session_id: str, kind: str) -> random.Random:
        # Seeded on purpose (here and for faults): the same config gives the same run.
        return random.Random(f"{self.config.seed}:{app_id}:{session_id}:{kind}")  # noqa: S311

    def _start(self, app_id: str, session_id: str) -> float:
        spec = self.catalogue.get((app_id, session_id))
        if spec is not None:
            return spec.started_at.timestamp()
        return 1_767_225_600 + self._rng(app_id, session_id, "start").randrange(86_400 * 300)

    @staticmethod
    def _csv_line(values: Iterable[str]) -> str:
        out = io.StringIO()
        # The writer quotes fields holding its line terminator's characters, so it needs the
        # real one ("\r\n", the csv default) even though each line is cut off here.
        csv.writer(out).writerow(values)
        return out.getvalue()[:-2]

    def _chat_templates(self, app_id: str, session_id: str) -> tuple[str, list[str], str]:
        """(id prefix, the middle columns of each template row, the filler row's middle)."""
        rng = self._rng(app_id, session_id, "chat")
        prefix = hashlib.sha256(f"{self.config.seed}:{app_id}:{session_id}".encode()).hexdigest()
        prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        meeting = meeting_id(app_id, session_id)
        middles = []
        for _ in range(_ROW_PERIOD):
            person = rng.randrange(len(_NAMES))
            kind = rng.choices(("TEXT_MESSAGE", "IMAGE_MESSAGE", "FILE_MESSAGE"), (8, 1, 1))[0]
            if kind == "IMAGE_MESSAGE":
                payload = f"https://assets.example.invalid/chat/{rng.randrange(10**6)}.png"
            elif kind == "FILE_MESSAGE":
                payload = json.dumps({"name": 'report, final "v2".pdf',
                                      "size": rng.randrange(10**6)})
            else:
                payload = rng.choice(_TEXTS)
            middles.append(self._csv_line((
                f"participant-{person:04d}", session_id, meeting, _NAMES[person],
                rng.choice(("true", "false")), rng.choice(("true", "false")), kind, payload)))
        filler = self._csv_line(("participant-0000", session_id, meeting, "filler", "false",
                                 "false", "TEXT_MESSAGE", ""))
        return prefix, middles, filler

    def _chat_plan(self, app_id: str, session_id: str) -> tuple[int, int, int]:
        """(total bytes, full rows, filler payload length or -1 for no filler row)."""
        _, middles, filler = self._chat_templates(app_id, session_id)
        header = len(self._csv_line(CHAT_CSV_HEADER)) + 2
        # A row is `<36-char id>,<middle>,<24-char createdAt>\r\n`; only the middle varies.
        lengths = [len(m.encode()) + 64 for m in middles]
        prefix_sums = [0]
        for n in lengths:
            prefix_sums.append(prefix_sums[-1] + n)
        block = prefix_sums[-1]
        target = self.config.chat_bytes
        if target is None:
            rows = self.config.chat_rows
            if rows is None:
                rows = self._rng(app_id, session_id, "rows").randint(6, 24)
            q, r = divmod(rows, _ROW_PERIOD)
            return header + q * block + prefix_sums[r], rows, -1
        room = target - header - (len(filler.encode()) + 64)
        if room < 0:
            raise ValueError(f"chat_bytes={target} is too small for session {session_id!r}")
        q, rest = divmod(room, block)
        r = max(i for i in range(_ROW_PERIOD) if prefix_sums[i] <= rest)
        return target, q * _ROW_PERIOD + r, rest - prefix_sums[r]

    def _chat_chunks(self, app_id: str, session_id: str) -> Iterator[bytes]:
        prefix, middles, filler = self._chat_templates(app_id, session_id)
        _, rows, pad = self._chat_plan(app_id, session_id)
        start = int(self._start(app_id, session_id))
        buf = [self._csv_line(CHAT_CSV_HEADER) + "\r\n"]

        def row(i: int, middle: str) -> str:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 7 * i))
            return f"{prefix}{i:012x},{middle},{stamp}.{(i * 37) % 1000:03d}Z\r\n"

        for i in range(rows):
            buf.append(row(i, middles[i % _ROW_PERIOD]))
            if len(buf) >= 512:
                yield "".join(buf).encode()
                buf = []
        if pad >= 0:
            buf.append(row(rows, filler + "x" * pad))
        yield "".join(buf).encode()

    def _small(self, app_id: str, session_id: str, kind: Kind, fmt: str) -> bytes:
        rng = self._rng(app_id, session_id, f"{kind}.{fmt.lower()}")
        count = rng.randint(4, 9)
        lines = [(i * 4.5, rng.choice(_NAMES), rng.choice(_TEXTS)) for i in range(count)]
        if kind == "summary":
            said = "\n".join(f"- {name}: {text!r}" for _, name, text in lines)
            return f"Summary of session {session_id} (stand-in)\n\n{said}\n".encode()
        fmt = fmt.upper()
        if fmt == "JSON":
            cues = [{"start": t, "end": t + 4, "name": n, "text": x} for t, n, x in lines]
            return json.dumps(cues, ensure_ascii=False).encode()
        if fmt == "CSV":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(("startTime", "endTime", "displayName", "transcript"))
            writer.writerows((t, t + 4, n, x) for t, n, x in lines)
            return out.getvalue().encode()

        def stamp(s: float, sep: str) -> str:
            return f"00:{int(s) // 60:02d}:{int(s) % 60:02d}{sep}{int(s * 1000) % 1000:03d}"

        if fmt == "SRT":
            return "".join(f"{i + 1}\n{stamp(t, ',')} --> {stamp(t + 4, ',')}\n{n}: {x}\n\n"
                           for i, (t, n, x) in enumerate(lines)).encode()
        return ("WEBVTT\n\n" + "".join(f"{stamp(t, '.')} --> {stamp(t + 4, '.')}\n<v {n}>{x}\n\n"
                                       for t, n, x in lines)).encode()


# ---------------------------------------------------------------------------------- state


class StandinState:
    """Everything a test inspects or steers: records, counters, catalogue, scripted answers."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.requests: list[RecordedRequest] = []
        self.counters = Counters()
        self.catalogue: dict[tuple[str, str], SessionSpec] = {}
        self.top_level: dict[str, list[SessionSpec]] = {}
        for spec in config.sessions:
            self.add_session(spec)
        self.content = Content(config, self.catalogue)
        self.rng = random.Random(config.seed)  # noqa: S311
        # Per instance, so a URL from an earlier server (an earlier test) never verifies.
        self.secret = hashlib.sha256(f"{config.seed}:{time.time_ns()}".encode()).digest()
        self.organization_id = str(uuid.uuid5(uuid.NAMESPACE_URL,
                                              f"rtk-standin/{config.account_id}"))
        self._scripts: dict[str, deque[CannedResponse]] = {}
        self._window: deque[float] = deque()
        self._blocked_until = 0.0
        self._retry_not_before = 0.0

    def add_session(self, spec: SessionSpec) -> None:
        """Adds a top-level session (copied) and its breakout rooms to the catalogue."""
        spec = replace(spec)
        self.top_level.setdefault(spec.app_id, []).append(spec)
        for s in (spec, *spec.breakout_rooms):
            self.catalogue[(spec.app_id, s.session_id)] = s

    def session(self, app_id: str, session_id: str) -> SessionSpec | None:
        spec = self.catalogue.get((app_id, session_id))
        if spec is None and self.config.accept_any:
            start = datetime.fromtimestamp(self.content._start(app_id, session_id), UTC)
            spec = SessionSpec(app_id, session_id, start,
                               has_transcript=self.config.default_has_transcript,
                               has_summary=self.config.default_has_summary)
        return spec

    def script(self, path: str, *responses: CannedResponse) -> None:
        """Queues answers for requests whose path equals `path` or ends with it (e.g.
        "/sessions/s1/chat"); they are served, in order, before any other behaviour."""
        self._scripts.setdefault(path, deque()).extend(responses)

    def pending_scripts(self) -> int:
        return sum(len(q) for q in self._scripts.values())

    def expected_body(self, app_id: str, session_id: str, kind: Kind = "chat",
                      fmt: str = "csv") -> bytes:
        return self.content.body(app_id, session_id, kind, fmt)

    def records(self, route: Route | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if route is None or r.route == route]

    # -- used by the handlers

    def next_canned(self, path: str) -> CannedResponse | None:
        for key, queue in self._scripts.items():
            if queue and (path == key or (key.startswith("/") and path.endswith(key))):
                return queue.popleft()
        return None

    def draw_fault(self, names: tuple[str, ...]) -> str | None:
        u, acc = self.rng.random(), 0.0
        for name in names:
            acc += getattr(self.config.faults, name)
            if u < acc:
                return name
        return None

    def draw(self, name: str) -> bool:
        rate: float = getattr(self.config.faults, name)
        return rate > 0 and self.rng.random() < rate

    def api_arrival(self, now: float) -> float | None:
        """Counts an API request in the window; returns a Retry-After if it broke the limit."""
        if now < self._retry_not_before:
            self.counters.early_after_retry_after += 1
        if self.config.rate_limit is None:
            return None
        limit, window = self.config.rate_limit
        win = self._window
        while win and win[0] <= now - window:
            win.popleft()
        win.append(now)  # refused requests count too: the server counts arrivals
        if now < self._blocked_until:
            self.counters.rate_violations += 1
            return self._blocked_until - now
        if len(win) <= limit:
            return None
        self.counters.rate_violations += 1
        if self.config.rate_limit_block is not None:
            self._blocked_until = now + self.config.rate_limit_block
            return self.config.rate_limit_block
        return win[len(win) - limit] + window - now

    def note_429(self, retry_after: str | None, now: float) -> None:
        try:
            seconds = float(retry_after) if retry_after is not None else 0.0
        except ValueError:
            return
        self._retry_not_before = max(self._retry_not_before, now + seconds)

    def presign(self, origin: str, app_id: str, session_id: str, filename: str) -> tuple[str, str]:
        """(URL, expiry in RFC 3339). Expiry is whole seconds, at least `url_lifetime` away."""
        now = time.time()
        date = math.floor(now)
        lifetime = self.config.url_lifetime
        expires = math.ceil(now + lifetime) - date if lifetime > 0 else 0
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(date))
        segments = "/".join(quote(s, safe="") for s in (app_id, session_id, filename))
        query = urlencode({
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": "STANDIN/standin/s3/aws4_request",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._sign(app_id, session_id, filename, stamp, str(expires)),
        })
        expiry = datetime.fromtimestamp(date + expires, UTC)
        return f"{origin}{DOWNLOAD_PREFIX}/{segments}?{query}", rfc3339(expiry)

    def _sign(self, *parts: str) -> str:
        return hmac.new(self.secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()

    def check_signature(self, app_id: str, session_id: str, filename: str,
                        query: Mapping[str, str]) -> float | None:
        """The URL's expiry (epoch seconds) if its signature holds, else None."""
        stamp, expires = query.get("X-Amz-Date", ""), query.get("X-Amz-Expires", "")
        wanted = self._sign(app_id, session_id, filename, stamp, expires)
        if not hmac.compare_digest(wanted, query.get("X-Amz-Signature", "")):
            return None
        try:
            issued = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return issued.timestamp() + int(expires)
        except ValueError:
            return None


# ---------------------------------------------------------------------------------- HTTP

STATE_KEY = web.AppKey("standin_state", StandinState)
RECORD_KEY = web.RequestKey("standin_record", RecordedRequest)
_KIT = API_PREFIX + "/accounts/{account_id}/realtime/kit/{app_id}/sessions"


class _Service:
    def __init__(self, state: StandinState) -> None:
        self.state = state
        self.config = state.config

    # -- shared pieces

    def error(self, status: int, code: int, message: str, shape: Literal["v4", "rtk"] = "v4",
              headers: Mapping[str, str] | None = None) -> web.Response:
        if self.config.error_envelope != "auto":
            shape = self.config.error_envelope
        body: dict[str, Any]
        if shape == "v4":
            body = {"success": False, "errors": [{"code": code, "message": message}],
                    "messages": [], "result": None}
        else:
            body = {"success": False, "error": {"code": status if status >= 400 else 500,
                                                "message": message}}
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def cut(request: web.Request, rec: RecordedRequest, *, abort: bool) -> None:
        if request.transport is not None:
            # abort() resets at once; close() first flushes what was written, then says FIN.
            request.transport.abort() if abort else request.transport.close()

    async def drop(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        rec.dropped = True
        self.cut(request, rec, abort=True)
        return web.Response()  # never sent: the transport is gone

    async def stream(self, request: web.Request, rec: RecordedRequest, status: int,
                     headers: Mapping[str, str], chunks: Iterable[bytes], length: int, *,
                     cut_at: int | None = None, abort: bool = False, stall: float = 0.0,
                     trickle: float = 0.0) -> web.StreamResponse:
        """Sends headers with Content-Length, then the body; `cut_at` ends the connection after
        that many bytes (after `stall` seconds of silence), `trickle` spaces out single bytes."""
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        await resp.prepare(request)
        sent = 0
        for chunk in chunks:
            if cut_at is not None:
                chunk = chunk[: max(0, cut_at - sent)]
            if trickle > 0:
                for i in range(len(chunk)):
                    await resp.write(chunk[i:i + 1])
                    await asyncio.sleep(trickle)
            else:
                await resp.write(chunk)
            sent += len(chunk)
            if cut_at is not None and sent >= cut_at:
                break
        if cut_at is not None:
            await asyncio.sleep(stall)
            self.cut(request, rec, abort=abort)
            return resp
        await resp.write_eof()
        return resp

    async def canned(self, request: web.Request, rec: RecordedRequest,
                     canned: CannedResponse) -> web.StreamResponse:
        if canned.action == "drop":
            return await self.drop(request, rec)
        body, ctype = _canned_body(canned)
        headers = {"Content-Type": ctype, **canned.headers}
        if canned.action == "stall":
            return await self.stream(request, rec, canned.status, headers, [body], len(body),
                                     cut_at=0, stall=canned.seconds)
        return await self.stream(request, rec, canned.status, headers, [body], len(body),
                                 trickle=canned.seconds if canned.action == "trickle" else 0.0)

    # -- the gate every request passes

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        state, now = self.state, time.monotonic()
        path = request.path
        route: Route = ("api" if path.startswith(API_PREFIX + "/") else
                        "download" if path.startswith(DOWNLOAD_PREFIX + "/") else "other")
        rec = RecordedRequest(request.method, path, dict(request.query),
                              Headers(request.headers.items()), now, route)
        state.requests.append(rec)
        request[RECORD_KEY] = rec
        retry_after: float | None = None
        if route == "api":
            state.counters.api_requests += 1
            retry_after = state.api_arrival(now)
        elif route == "download":
            state.counters.downloads += 1
        canned = state.next_canned(path)
        if canned is not None:
            state.counters.scripted += 1
            rec.fault = "scripted"
            resp = await self.canned(request, rec, canned)
        elif route == "api" and retry_after is not None:
            rec.fault = "rate_limited"
            resp = self.rate_limited(retry_after)
        else:
            resp = await self.guarded(request, rec, handler)
        if not rec.dropped:
            rec.status = resp.status
            if resp.status == 429 and route == "api":
                state.note_429(resp.headers.get("Retry-After"), time.monotonic())
        return resp

    def rate_limited(self, retry_after: float) -> web.Response:
        limit, window = self.config.rate_limit or (0, 0.0)
        return self.error(
            429, 10100, f"More than {limit} requests per {window:g} seconds reached. "
            "Please wait and consider throttling your request speed",
            headers={"Retry-After": str(max(1, math.ceil(retry_after))),
                     "Ratelimit-Policy": f'"default";q={limit};w={window:g}'})

    async def guarded(self, request: web.Request, rec: RecordedRequest,
                      handler: Handler) -> web.StreamResponse:
        if rec.route == "api":
            refused = self.authenticate(request)
            if refused is not None:
                return refused
            fault = self.state.draw_fault(API_FAULTS)
            if self.state.draw("api_slow"):
                self.state.counters.faults["api_slow"] += 1
                await asyncio.sleep(self.config.slow_seconds)
            if fault is not None:
                self.state.counters.faults[fault] += 1
                rec.fault = fault
                return await self.api_fault(request, rec, fault)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if rec.route == "api":
                return self.error(exc.status, 7003 if exc.status == 404 else 7001,
                                  "No route for the URI" if exc.status == 404 else exc.reason)
            raise

    def authenticate(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.config.token}":
            return self.error(401, 10000, "Authentication error")
        account = request.match_info.get("account_id")
        if account is not None and account != self.config.account_id:
            return self.error(403, 9109, "Unauthorized to access requested resource")
        if self.config.token_lacks_permission:
            return self.error(403, 10000, "Authentication error")
        return None

    async def api_fault(self, request: web.Request, rec: RecordedRequest,
                        fault: str) -> web.StreamResponse:
        if fault == "api_drop":
            return await self.drop(request, rec)
        if fault == "api_429":
            return self.error(429, 971, "Please wait and consider throttling your request speed",
                              headers={"Retry-After": str(self.config.retry_after)})
        if fault == "api_success_false":
            return self.error(200, 7000, "Internal processing error, please try again")
        if fault == "api_non_json":
            return web.Response(text="<!DOCTYPE html><html><head><title>Just a moment...</title>"
                                "</head><body>Checking your browser</body></html>",
                                content_type="text/html")
        status = self.state.rng.choice((500, 502, 503, 504))
        return self.error(status, 7010, f"Service unavailable ({status}, injected)")

    # -- API routes

    async def export_link(self, request: web.Request) -> web.StreamResponse:
        app_id, sid = request.match_info["app_id"], request.match_info["session_id"]
        kind = request.match_info["kind"]
        spec = self.state.session(app_id, sid)
        if spec is None:
            return self.error(404, 404, "Session not found", "rtk")
        origin = f"{request.scheme}://{request.host}"
        if kind == "chat":
            if not spec.has_chat:
                return self.error(404, 404, "Chat not found for this session", "rtk")
            url, expiry = self.state.presign(origin, app_id, sid, "chat.csv")
            data = {"chat_download_url": url, "chat_download_url_expiry": expiry}
        elif kind == "transcript":
            fmt = request.query.get("format", "CSV").upper()
            if fmt not in TRANSCRIPT_FORMATS:
                return self.error(400, 400, f"Invalid format {fmt!r}", "rtk")
            if not spec.has_transcript:
                return self.error(404, 404, "Transcript not found for this session", "rtk")
            url, expiry = self.state.presign(origin, app_id, sid, f"transcript.{fmt.lower()}")
            data = {"sessionId": sid, "transcript_download_url": url,
                    "transcript_download_url_expiry": expiry}
        else:
            if not spec.has_summary:
                return self.error(404, 404, "Summary not found for this session", "rtk")
            url, expiry = self.state.presign(origin, app_id, sid, "summary.txt")
            data = {"sessionId": sid, "summaryDownloadUrl": url, "summaryDownloadUrlExpiry": expiry}
        return web.json_response({"success": True, "data": data})

    async def session_details(self, request: web.Request) -> web.StreamResponse:
        spec = self.state.session(request.match_info["app_id"], request.match_info["session_id"])
        if spec is None:
            return self.error(404, 404, "Session not found", "rtk")
        breakouts = request.query.get("include_breakout_rooms", "false").lower() == "true"
        return web.json_response({"success": True, "data": spec.to_json(
            self.state.organization_id, with_breakouts=breakouts)})

    async def list_sessions(self, request: web.Request) -> web.StreamResponse:
        app_id, q = request.match_info["app_id"], request.query
        if not self.config.accept_any and app_id not in self.state.top_level:
            return self.error(404, 404, "App not found", "rtk")
        try:
            since = parse_time(q["start_time"]) if "start_time" in q else None
            until = parse_time(q["end_time"]) if "end_time" in q else None
            page_no = int(q.get("page_no", "1"))
            per_page = int(q.get("per_page", str(self.config.default_per_page)))
        except ValueError as exc:
            return self.error(400, 400, f"Invalid query: {exc}", "rtk")
        status = q.get("status")
        if page_no < 1 or per_page < 1 or status not in (None, "LIVE", "ENDED"):
            return self.error(400, 400, "Invalid page_no, per_page or status", "rtk")
        if self.config.max_per_page is not None:
            per_page = min(per_page, self.config.max_per_page)
        found = sorted((s for s in self.state.top_level.get(app_id, ())
                        if (since is None or s.started_at >= since)
                        and (until is None or s.started_at < until)
                        and (status is None or s.status == status)),
                       key=lambda s: s.started_at, reverse=q.get("sort_order") == "DESC")
        offset = (page_no - 1) * per_page
        page = found[offset:offset + per_page]
        body: dict[str, Any] = {"success": True, "data": {
            "sessions": [s.to_json(self.state.organization_id) for s in page]}}
        if not self.config.omit_paging:
            # start_offset: the first item's 0-based index; end_offset: one past the last.
            body["paging"] = {"start_offset": offset, "end_offset": offset + len(page),
                              "total_count": len(found)}
        return web.json_response(body)

    # -- downloads

    async def download(self, request: web.Request) -> web.StreamResponse:
        state, rec = self.state, request[RECORD_KEY]
        app_id, sid = request.match_info["app_id"], request.match_info["session_id"]
        filename = request.match_info["filename"]
        if "Authorization" in request.headers:
            # S3 refuses a presigned URL that also carries an Authorization header.
            return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed; only the "
                             "X-Amz-Algorithm query parameter, Signature query string parameter "
                             "or the Authorization header should be specified")
        expires_at = state.check_signature(app_id, sid, filename, request.query)
        if expires_at is None:
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated "
                             "does not match the signature you provided.")
        fault = state.draw_fault(DOWNLOAD_FAULTS)
        now = time.time()
        if now >= expires_at or fault == "download_expired":
            if fault == "download_expired":
                state.counters.faults[fault] += 1
                rec.fault = fault
            return _s3_error(403, "AccessDenied", "Request has expired",
                             **{"X-Amz-Expires": request.query.get("X-Amz-Expires", ""),
                                "Expires": rfc3339(datetime.fromtimestamp(expires_at, UTC)),
                                "ServerTime": rfc3339(datetime.fromtimestamp(now, UTC))})
        stem, _, ext = filename.partition(".")
        if stem not in ("chat", "transcript", "summary"):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        kind: Kind = ("chat" if stem == "chat" else
                      "transcript" if stem == "transcript" else "summary")
        if state.draw("download_slow"):
            state.counters.faults["download_slow"] += 1
            await asyncio.sleep(self.config.slow_seconds)
        if fault is not None:
            state.counters.faults[fault] += 1
            rec.fault = fault
        if fault == "download_drop":
            return await self.drop(request, rec)
        length = state.content.size(app_id, sid, kind, ext)
        ctype = {"csv": "text/csv", "json": "application/json", "vtt": "text/vtt",
                 "srt": "application/x-subrip"}.get(ext, "text/plain")
        headers = {"Content-Type": f"{ctype}; charset=utf-8", "x-amz-request-id": "STANDIN"}
        chunks = state.content.chunks(app_id, sid, kind, ext)
        if fault == "download_drop_mid_body":
            return await self.stream(request, rec, 200, headers, chunks, length,
                                     cut_at=length // 2, abort=True)
        if fault == "download_truncate":
            return await self.stream(request, rec, 200, headers, chunks, length,
                                     cut_at=length - max(1, length // 10))
        if fault == "download_stall":
            return await self.stream(request, rec, 200, headers, chunks, length,
                                     cut_at=length // 2, stall=self.config.stall_seconds)
        resp = await self.stream(request, rec, 200, headers, chunks, length)
        state.counters.downloads_completed += 1
        return resp


def build_app(state: StandinState) -> web.Application:
    service = _Service(state)
    app = web.Application(middlewares=[service.middleware])
    app[STATE_KEY] = state
    app.router.add_get(_KIT, service.list_sessions, allow_head=False)
    app.router.add_get(_KIT + "/{session_id}", service.session_details, allow_head=False)
    app.router.add_get(_KIT + "/{session_id}/{kind:chat|transcript|summary}",
                       service.export_link, allow_head=False)
    app.router.add_get(DOWNLOAD_PREFIX + "/{app_id}/{session_id}/{filename}", service.download,
                       allow_head=False)
    return app


# ---------------------------------------------------------------------------------- running


@dataclass
class StandinServer:
    base_url: str  # http://127.0.0.1:PORT/client/v4
    origin: str  # http://127.0.0.1:PORT
    state: StandinState

    @property
    def config(self) -> StandinConfig:
        return self.state.config

    def api_path(self, app_id: str, session_id: str | None = None, kind: str | None = None) -> str:
        """The URL path of a sessions route, as the stand-in records it."""
        path = f"{API_PREFIX}/accounts/{self.config.account_id}/realtime/kit/{app_id}/sessions"
        if session_id is not None:
            path += f"/{session_id}"
        return path + (f"/{kind}" if kind is not None else "")

    def script(self, path: str, *responses: CannedResponse) -> None:
        self.state.script(path, *responses)

    def expected_body(self, app_id: str, session_id: str, kind: Kind = "chat",
                      fmt: str = "csv") -> bytes:
        return self.state.expected_body(app_id, session_id, kind, fmt)


@asynccontextmanager
async def run_standin(config: StandinConfig | None = None, *, host: str = "127.0.0.1",
                      port: int = 0) -> AsyncIterator[StandinServer]:
    """Serves the stand-in for the duration of the block."""
    state = StandinState(config or StandinConfig())
    # A short shutdown_timeout: stalled handlers are cancelled instead of holding up the test.
    runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        origin = f"http://{bound_host}:{bound_port}"
        yield StandinServer(origin + API_PREFIX, origin, state)
    finally:
        await runner.cleanup()


@contextmanager
def standin_in_thread(config: StandinConfig | None = None, *, host: str = "127.0.0.1",
                      port: int = 0) -> Iterator[StandinServer]:
    """The stand-in on its own event loop in a thread, for synchronous (subprocess) tests."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        async with run_standin(config, host=host, port=port) as server:
            box.update(server=server, loop=asyncio.get_running_loop(), stop=stop)
            ready.set()
            await stop.wait()

    def target() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="rtk-standin", daemon=True)
    thread.start()
    ready.wait()
    if "server" not in box:
        thread.join()
        raise RuntimeError("the stand-in did not start") from box.get("error")
    try:
        yield box["server"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m exporter.standin",
                                description="A local RealtimeKit stand-in: API and downloads.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="standin-token", help="the Bearer token it accepts")
    p.add_argument("--account-id", default="standin-account")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url-lifetime", type=float, default=300.0)
    p.add_argument("--catalogue", help="JSON file: a list of sessions (app_id, session_id, "
                   "started_at, status, minutes, has_transcript, has_summary, breakout_rooms)")
    p.add_argument("--catalogue-only", action="store_true", help="unknown ids get 404")
    p.add_argument("--chat-rows", type=int)
    p.add_argument("--chat-bytes", type=int)
    p.add_argument("--rate-limit", help="N/Ws, e.g. 1200/300s")
    p.add_argument("--rate-limit-block", type=float)
    p.add_argument("--retry-after", type=int, default=1)
    p.add_argument("--slow-seconds", type=float, default=0.05)
    p.add_argument("--error-envelope", choices=("auto", "v4", "rtk"), default="auto")
    p.add_argument("--omit-paging", action="store_true")
    p.add_argument("--token-lacks-permission", action="store_true")
    for f in fields(FaultRates):
        p.add_argument(f"--fault-{f.name.replace('_', '-')}", type=float, default=0.0,
                       dest=f"fault_{f.name}", metavar="P")
    return p


def config_from_args(argv: list[str] | None = None) -> tuple[StandinConfig, str, int]:
    """(config, host, port) from command-line arguments."""
    args = _parser().parse_args(argv)
    sessions: tuple[SessionSpec, ...] = ()
    if args.catalogue:
        with open(args.catalogue, encoding="utf-8") as fh:
            sessions = tuple(SessionSpec.from_json(o) for o in json.load(fh))
    rate = None
    if args.rate_limit:
        n, _, w = args.rate_limit.rstrip("s").partition("/")
        rate = (int(n), float(w))
    faults = FaultRates(**{f.name: getattr(args, f"fault_{f.name}") for f in fields(FaultRates)})
    config = StandinConfig(
        token=args.token, account_id=args.account_id, url_lifetime=args.url_lifetime,
        accept_any=not args.catalogue_only, sessions=sessions, seed=args.seed,
        chat_rows=args.chat_rows, chat_bytes=args.chat_bytes, faults=faults,
        retry_after=args.retry_after, slow_seconds=args.slow_seconds, rate_limit=rate,
        rate_limit_block=args.rate_limit_block, error_envelope=args.error_envelope,
        omit_paging=args.omit_paging, token_lacks_permission=args.token_lacks_permission)
    return config, args.host, args.port


async def serve_until_signalled(config: StandinConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_standin(config, host=host, port=port) as server:
        # The parent process reads this line to learn the port.
        sys.stdout.write(f"RTK_STANDIN_URL={server.base_url}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    config, host, port = config_from_args(argv)
    asyncio.run(serve_until_signalled(config, host, port))


if __name__ == "__main__":
    main()
