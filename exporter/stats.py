"""Counters of one run, shared by the client, the downloader and the pipeline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    api_requests: int = 0
    rate_limited: int = 0  # 429s received from the API
    url_refreshes: int = 0  # fresh URLs asked for after one expired or was refused
    retries: int = 0  # attempts after the first, of every unit
    bytes: int = 0  # bytes stored this run
    counts: Counter[str] = field(default_factory=Counter)  # status -> manifest lines this run
    total: int | None = None  # units known so far, for progress
