"""Time as the program reads and writes it: spans (`50m`), WHEN (`--since`), RFC 3339 both ways."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

LAST_RUN = "last-run"

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_span(text: str) -> float:
    """Seconds in a span like `50m`; ValueError naming the text otherwise."""
    m = _SPAN.match(text)
    if not m:
        raise ValueError(f"expected a span like 90s, 50m, 2h or 7d, got {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_when(text: str, now: datetime) -> datetime | None:
    """WHEN as a UTC moment: RFC 3339, a date (midnight UTC), a span back from `now` (`36h`,
    `7d`); None for `last-run`, which only the state file can resolve. ValueError otherwise."""
    text = text.strip()
    if text == LAST_RUN:
        return None
    if _DATE.match(text):
        try:
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"{text!r} is not a date") from None
    try:
        return now - timedelta(seconds=parse_span(text))
    except ValueError:
        pass
    moment = parse_rfc3339(text)
    if moment is None:
        naive = "T" in text and parse_rfc3339(text + "Z") is not None
        raise ValueError(
            f"{text!r} has no time zone: write it as {text}Z (UTC) or with +hh:mm"
            if naive
            else f"expected an RFC 3339 time (2026-11-20T08:00:00Z), a date (2026-11-20), a "
            f"span back from now (36h, 7d) or last-run; got {text!r}"
        )
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: object) -> datetime | None:
    """An aware datetime from RFC 3339 text, or None if it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def now_rfc3339() -> str:
    """The current UTC time to the millisecond, as manifest lines carry it."""
    return rfc3339_utc(time.time())


def rfc3339_utc(when: float) -> str:
    """`when` (epoch seconds, >= 0) in UTC to the millisecond: `2026-11-28T09:15:02.123Z`."""
    whole = int(when)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{stamp}.{int((when - whole) * 1000):03d}Z"
