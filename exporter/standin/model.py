"""The stand-in's vocabulary: its configuration, catalogue sessions, fault rates and
scripted answers, plus the time and id formats the API uses."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

API_PREFIX = "/client/v4"
DOWNLOAD_PREFIX = "/downloads"
CHAT_CSV_HEADER = (
    "id",
    "participantId",
    "sessionId",
    "meetingId",
    "displayName",
    "pinned",
    "isEdited",
    "payloadType",
    "payload",
    "createdAt",
)
TRANSCRIPT_FORMATS = ("CSV", "JSON", "SRT", "VTT")
API_FAULTS = ("api_5xx", "api_429", "api_drop", "api_success_false", "api_non_json")
DOWNLOAD_FAULTS = (
    "download_drop",
    "download_drop_mid_body",
    "download_truncate",
    "download_expired",
    "download_stall",
    "download_5xx",
)

Kind = Literal["chat", "transcript", "summary"]
Envelope = Literal["auto", "v4", "rtk"]
Route = Literal["api", "download", "attachment", "recording", "other"]
Action = Literal["respond", "drop", "stall", "trickle", "hang", "raw"]


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
    download_5xx: float = 0.0  # S3's 500 InternalError or 503 SlowDown

    def __post_init__(self) -> None:
        rates = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if any(not 0.0 <= p <= 1.0 for p in rates.values()):
            raise ValueError(f"fault rates are probabilities in [0, 1]: {rates}")
        for group in (API_FAULTS, DOWNLOAD_FAULTS):
            if sum(rates[f] for f in group) > 1.0:
                raise ValueError(f"the rates of {', '.join(group)} add up to more than 1")


@dataclass(frozen=True)
class StandinConfig:
    """How the stand-in behaves; the same config (seed included) gives the same bytes and faults."""

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
    # Retry-After of injected 429s, in seconds. A fraction is also sent as `retry-after-ms`
    # (Retry-After itself holds whole seconds only), so chaos runs can honour it quickly.
    retry_after: float = 1
    # How long after sending a 429 an arriving API request is still taken as one the client
    # had sent before it could read that 429 (in flight), and so not counted as early.
    retry_after_grace: float = 0.0
    slow_seconds: float = 0.05
    stall_seconds: float = 10.0
    rate_limit: tuple[int, float] | None = None  # N requests per W seconds, counted at arrival
    rate_limit_block: float | None = None  # Cloudflare-style block of all calls after a violation
    error_envelope: Envelope = "auto"  # auto: v4 for auth/limits/5xx, RealtimeKit's for 404s
    omit_paging: bool = False
    default_per_page: int = 20
    max_per_page: int | None = None  # silently caps per_page, as some APIs do
    token_lacks_permission: bool = False  # 403 on every API call, token otherwise accepted
    # Media (see standin/media.py). attachments: image/file rows added to each chat CSV,
    # cycling through the payload forms (one in six names no link); attachment_odd_ids adds
    # rows whose message ids must never name a file. With attachments on, chat CSVs name the
    # stand-in's own origin (host and port): another server serves other bytes.
    attachments: int = 0
    attachment_odd_ids: bool = False
    attachment_bytes: int | None = None  # each attachment's size (None: 500-6500 bytes)
    recording_statuses: tuple[str, ...] = ()  # each session's recordings, by status
    # Their ids, in the same order, instead of made-up UUIDs (odd ones too: an id is what the
    # API says). Ids name one recording of the stand-in: meant for a one-session test.
    recording_ids: tuple[str, ...] = ()
    recording_bytes: int = 256 * 1024
    recordings_ignore_filter: bool = False  # the list ignores meeting_id, as it may
    recordings_omit_session_id: bool = False  # the list leaves session_id out
    ignore_range: bool = False  # recording files always served whole (200)
    recording_chunk_delay: float = 0.0  # seconds between 64 KiB of a recording file
    # Recordings are a real one-second WebM (standin/data/recording.webm) instead of seeded
    # bytes, so that a rendered archive plays one; recording_bytes is then not used.
    recording_media: bool = False
    # Webhook delivery (see standin/webhooks.py): attempts per delivery (5xx and network
    # errors are retried, a 4xx never), the back-off before the second (doubling, capped),
    # and each attempt's time limit.
    webhook_attempts: int = 5
    webhook_backoff: float = 0.2
    webhook_backoff_max: float = 2.0
    webhook_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.chat_bytes is not None and self.chat_bytes < 1024:
            raise ValueError("chat_bytes must be at least 1024")
        if self.retry_after < 0 or self.retry_after_grace < 0:
            raise ValueError("retry_after and retry_after_grace must not be negative")
        if self.rate_limit is not None and (self.rate_limit[0] < 1 or self.rate_limit[1] <= 0):
            raise ValueError("rate_limit needs N >= 1 and W > 0")
        if self.attachments and self.chat_bytes is not None:
            raise ValueError("attachments and chat_bytes do not combine")
        if self.recording_ids and len(self.recording_ids) != len(self.recording_statuses):
            raise ValueError("recording_ids needs one id for each of recording_statuses")
        if self.webhook_attempts < 1 or self.webhook_backoff < 0 or self.webhook_timeout <= 0:
            raise ValueError("webhook_attempts >= 1, webhook_backoff >= 0, webhook_timeout > 0")


@dataclass(frozen=True)
class CannedResponse:
    """A scripted answer. body None: an error envelope for status >= 400, else empty.

    action: respond; drop (close before headers); stall (headers, then silence for `seconds`,
    then close); trickle (the body a byte at a time, `seconds` apart); hang (no answer at all
    for `seconds`, then close); raw (`body` written to the socket as it is, status line and
    headers included, then close: for answers aiohttp would refuse to send).
    """

    status: int = 200
    body: bytes | str | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    action: Action = "respond"
    seconds: float = 0.0


def rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def meeting_id(app_id: str, session_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rtk-standin/{app_id}/{session_id}"))
