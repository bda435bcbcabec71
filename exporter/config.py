"""Value classes for a run's configuration: Settings, Rate, RetryPolicy, Timeouts, and the
bucket a run may keep its archive in (StoreTarget; objectstore/target parses it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
# Cloudflare allows 1200 requests per 300 s per token; a sixth is left to the token's other
# users and to clock skew between our window and the server's.
DEFAULT_RATE = "1000/300s"
# The budget, not the pool, is the limit in real runs (about 3.3 API requests/s); 16 slots keep
# downloads from S3 (a few hundred ms each) from ever starving it, and stay gentle on the host.
DEFAULT_CONCURRENCY = 16
SCHEME = "s3://"  # an --out so written is a bucket (StoreTarget), else a folder

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `requests` API requests start in any window of `seconds` seconds."""

    requests: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        m = _RATE_RE.match(text)
        if not m:
            raise ValueError(
                f"--rate must look like 1000/300s (N requests per W seconds), got {text!r}"
            )
        requests, seconds = int(m.group(1)), float(m.group(2))
        if requests < 1 or seconds <= 0:
            raise ValueError(f"--rate needs N >= 1 and W > 0, got {text!r}")
        return cls(requests, seconds)

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a unit of work is retried.

    `max_attempts` counts failed attempts of every transient kind except 429s (which pause the
    whole run instead, and never fail a pair) and expired links (which just need a fresh URL,
    bounded by `max_link_refreshes`).
    """

    max_attempts: int = 10
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    # A 429 without Retry-After: Cloudflare documents a five-minute block for the token.
    default_rate_limit_pause: float = 300.0
    max_link_refreshes: int = 10
    # Refuse to hold a pair back for longer than this on one Retry-After (other than 429).
    max_retry_after: float = 600.0

    @classmethod
    def immediate(cls, max_attempts: int = 5) -> RetryPolicy:
        """No waiting at all: for tests, whose server tells the truth about time."""
        return cls(
            max_attempts=max_attempts,
            initial_backoff=0.0,
            max_backoff=0.0,
            default_rate_limit_pause=0.0,
            max_retry_after=0.0,
        )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Bounded waits, so that a stalled server costs a retry, never a hung run."""

    connect: float = 10.0
    # The whole API request: its answers are small.
    api: float = 60.0
    # Longest silence while reading a download body; the download as a whole has no limit,
    # since a large CSV on a slow link may legitimately take long.
    read: float = 60.0


KINDS = ("chat", "transcript", "summary", "attachment", "recording")
# --include spellings: the plural is the spec's, the singular the manifest's `kind`.
_KIND_ALIASES = {"attachments": "attachment", "recordings": "recording"}
DEFAULT_ATTACHMENT_MAX_BYTES = 1 << 30
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(|B|KiB|MiB|GiB)\s*$")
_SIZE_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_include(text: str) -> tuple[str, ...]:
    """--include as manifest kinds, chat first when attachments need it (they are listed in
    the chat CSV); a ValueError naming what is wrong otherwise."""
    kinds = [_KIND_ALIASES.get(k.strip(), k.strip()) for k in text.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(
            "--include takes chat,transcript,summary,attachments,recordings; got " + repr(text)
        )
    if "attachment" in kinds and "chat" not in kinds:
        kinds.insert(0, "chat")
    return tuple(dict.fromkeys(kinds))


def parse_size(text: str) -> int:
    """A byte count, plain or with a KiB/MiB/GiB suffix; at least 1."""
    m = _SIZE_RE.match(text)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"expected a size such as 1048576, 512KiB, 100MiB or 1GiB, got {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


TRANSCRIPT_FORMATS = ("csv", "json", "srt", "vtt")


@dataclass(frozen=True, slots=True)
class StoreTarget:
    """A bucket and the prefix under which everything a run keeps lives."""

    bucket: str
    prefix: str  # "" or "a/b" (no slash at either end)
    endpoint: str | None  # None: AWS S3
    region: str

    def key(self, rel: str) -> str:
        """The object key of `rel` (a path relative to the archive's root)."""
        return f"{self.prefix}/{rel}" if self.prefix else rel

    @property
    def root(self) -> str:
        """What every key of the archive starts with ("" or "prefix/")."""
        return f"{self.prefix}/" if self.prefix else ""

    def rel(self, key: str) -> str:
        return key[len(self.root) :]

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one export run needs, resolved from arguments and environment."""

    token: str = field(repr=False)
    account_id: str
    out_dir: Path
    manifest_path: Path
    sessions: str | None = None
    # Discovery instead of SESSIONS: the apps to list and the window, parsed once against
    # `now` (since None: last-run, else 7 days; until None: now).
    apps: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    # The run's start as discovery sees it: last-run moves to it, spans count back from it.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    per_page: int = 100  # sessions asked for per listing page
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = DEFAULT_CONCURRENCY
    rate: Rate = field(default_factory=lambda: Rate.parse(DEFAULT_RATE))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    kinds: tuple[str, ...] = ("chat",)
    # Attachments: hosts exempt from the address rules (as written, lower-case), the size cap.
    attachment_allow_hosts: frozenset[str] = frozenset()
    attachment_max_bytes: int = DEFAULT_ATTACHMENT_MAX_BYTES
    transcript_format: str = "csv"
    dry_run: bool = False
    max_duration: float | None = None
    # `--out s3://BUCKET/PREFIX`: the bucket, and the lease of its lock in seconds.
    store: StoreTarget | None = None
    lock_lease: float = 120.0

    @property
    def pair_kinds(self) -> tuple[str, ...]:
        """The kinds exported per pair: attachments come from each stored chat instead."""
        return tuple(k for k in self.kinds if k != "attachment")
