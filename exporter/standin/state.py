"""What a test inspects and steers: recorded requests, counters, the catalogue, scripted
answers; and the server's bookkeeping (rate window, Retry-After, URL signing)."""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from exporter.standin.content import Content
from exporter.standin.media import Media
from exporter.standin.model import (
    DOWNLOAD_PREFIX,
    CannedResponse,
    Kind,
    Route,
    SessionSpec,
    StandinConfig,
    rfc3339,
)
from exporter.standin.webhooks import Webhooks


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
        self.media = Media(config)
        self.content = Content(config, self.catalogue, self.media)
        for app_id, sid in self.catalogue:
            self.media.recordings_of(app_id, sid)
        self.rng = random.Random(config.seed)  # noqa: S311
        # Per instance, so a URL from an earlier server (an earlier test) never verifies.
        self.secret = hashlib.sha256(f"{config.seed}:{time.time_ns()}".encode()).digest()
        self.organization_id = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"rtk-standin/{config.account_id}")
        )
        self.webhooks = Webhooks(self)  # registrations, the key pair, deliveries
        self._scripts: dict[str, deque[CannedResponse]] = {}
        self._window: deque[float] = deque()
        self._blocked_until = 0.0
        # (sent, not before) of each 429 whose Retry-After has not run out yet.
        self._retry_windows: deque[tuple[float, float]] = deque()

    def add_session(self, spec: SessionSpec) -> None:
        """Adds a top-level session (copied) and its breakout rooms to the catalogue."""
        spec = replace(spec)
        self.top_level.setdefault(spec.app_id, []).append(spec)
        for s in (spec, *spec.breakout_rooms):
            self.catalogue[(spec.app_id, s.session_id)] = s

    def session(self, app_id: str, session_id: str) -> SessionSpec | None:
        spec = self.catalogue.get((app_id, session_id))
        if spec is None and self.config.accept_any:
            start = datetime.fromtimestamp(self.content.start_time(app_id, session_id), UTC)
            spec = SessionSpec(
                app_id,
                session_id,
                start,
                has_transcript=self.config.default_has_transcript,
                has_summary=self.config.default_has_summary,
            )
        return spec

    def script(self, path: str, *responses: CannedResponse) -> None:
        """Queues answers for requests whose path equals `path` or ends with it (e.g.
        "/sessions/s1/chat"); they are served, in order, before any other behaviour."""
        self._scripts.setdefault(path, deque()).extend(responses)

    def pending_scripts(self) -> int:
        return sum(len(q) for q in self._scripts.values())

    def expected_body(
        self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv"
    ) -> bytes:
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
        windows, grace = self._retry_windows, self.config.retry_after_grace
        while windows and windows[0][1] <= now:
            windows.popleft()
        if any(sent + grace <= now < not_before for sent, not_before in windows):
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

    def note_429(self, headers: Mapping[str, str], now: float) -> None:
        """Remembers a 429 just sent, and how long its Retry-After asks the client to wait."""
        try:
            if "retry-after-ms" in headers:
                seconds = float(headers["retry-after-ms"]) / 1000
            else:
                seconds = float(headers.get("Retry-After", "0"))
        except ValueError:
            return
        if seconds > 0:
            # Kept in order of not-before, so that api_arrival can drop the spent ones first.
            windows = sorted([*self._retry_windows, (now, now + seconds)], key=lambda w: w[1])
            self._retry_windows = deque(windows)

    def presign(self, origin: str, app_id: str, session_id: str, filename: str) -> tuple[str, str]:
        """(URL, expiry in RFC 3339). Expiry is whole seconds, at least `url_lifetime` away."""
        now = time.time()
        date = math.floor(now)
        lifetime = self.config.url_lifetime
        expires = math.ceil(now + lifetime) - date if lifetime > 0 else 0
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(date))
        segments = "/".join(quote(s, safe="") for s in (app_id, session_id, filename))
        query = urlencode(
            {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Credential": "STANDIN/standin/s3/aws4_request",
                "X-Amz-Date": stamp,
                "X-Amz-Expires": str(expires),
                "X-Amz-SignedHeaders": "host",
                "X-Amz-Signature": self._sign(app_id, session_id, filename, stamp, str(expires)),
            }
        )
        expiry = datetime.fromtimestamp(date + expires, UTC)
        return f"{origin}{DOWNLOAD_PREFIX}/{segments}?{query}", rfc3339(expiry)

    def _sign(self, *parts: str) -> str:
        return hmac.new(self.secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()

    def check_signature(
        self, app_id: str, session_id: str, filename: str, query: Mapping[str, str]
    ) -> float | None:
        """The URL's expiry (epoch seconds) if its signature holds, else None."""
        stamp, expires = query.get("X-Amz-Date", ""), query.get("X-Amz-Expires", "")
        wanted = self._sign(app_id, session_id, filename, stamp, expires)
        if not hmac.compare_digest(wanted, query.get("X-Amz-Signature", "")):
            return None
        try:
            # By hand rather than strptime, whose cost showed in chaos runs of thousands.
            if len(stamp) != 16 or stamp[8] != "T" or stamp[15] != "Z":
                return None
            issued = datetime(
                int(stamp[0:4]),
                int(stamp[4:6]),
                int(stamp[6:8]),
                int(stamp[9:11]),
                int(stamp[11:13]),
                int(stamp[13:15]),
                tzinfo=UTC,
            )
            return issued.timestamp() + int(expires)
        except ValueError:
            return None
