"""Spans of time as users write them: 90s, 50m, 2h, 7d."""

from __future__ import annotations

import re

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_span(text: str) -> float:
    """Seconds in a span like `50m`; ValueError naming the text otherwise."""
    m = _SPAN.match(text)
    if not m:
        raise ValueError(f"expected a span like 90s, 50m, 2h or 7d, got {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]
