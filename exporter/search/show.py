"""Hits as the user sees them: a line each (rich on a terminal, plain with [marks] otherwise)
or JSON Lines. Chat text is hostile: control characters, terminal escapes and direction
overrides are shown escaped (`\\x1b`, `\\u202e`) in every form, JSON included."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import IO

from exporter.search.index import Hit

# Characters that move the cursor, end a line, or reorder what follows them on a terminal.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_HOSTILE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character written out as an escape."""
    return _HOSTILE.sub(_escape, text)


def json_safe(line: str) -> str:
    """A JSON text whose strings hold the same characters, the hostile ones as \\u escapes
    (valid anywhere in JSON, and read back as the very character)."""
    return _HOSTILE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", line)


def new_marks() -> tuple[str, str]:
    """Match marks no text can forge: a fresh random tag per search."""
    tag = secrets.token_hex(8)
    return f"\x02{tag}\x03", f"\x04{tag}\x05"


def pieces(marked: str, marks: tuple[str, str]) -> list[tuple[str, bool]]:
    """(text, is a match) pieces of a text that highlight() or snippet() marked."""
    opening, closing = marks
    out: list[tuple[str, bool]] = []
    pos = 0
    while True:
        start = marked.find(opening, pos)
        if start < 0:
            break
        end = marked.find(closing, start + len(opening))
        if end < 0:
            break
        if start > pos:
            out.append((marked[pos:start], False))
        out.append((marked[start + len(opening) : end], True))
        pos = end + len(closing)
    if pos < len(marked):
        out.append((marked[pos:], False))
    return out


def when_text(ms: int | None) -> str:
    if ms is None:
        return "time unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms // 1000))


def rfc3339_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _who(hit: Hit) -> str:
    name = visible(hit.author) if hit.author else "(no name)"
    return f"{name} (transcript)" if hit.kind == "transcript" else name


def plain_line(hit: Hit, marks: tuple[str, str]) -> str:
    text = "".join(f"[{visible(t)}]" if hit_ else visible(t) for t, hit_ in pieces(hit.text, marks))
    where = visible(f"{hit.app}/{hit.session}")
    return f"{when_text(hit.ms)}  {where}  {_who(hit)}: {text}"


def json_line(hit: Hit) -> str:
    doc = {
        "app_id": hit.app,
        "session_id": hit.session,
        "time": rfc3339_ms(hit.ms),
        "author": hit.author,
        "message_id": hit.message_id,
        "kind": hit.kind,
        "text": hit.text,
    }
    return json_safe(json.dumps(doc, ensure_ascii=False))


def print_hits(hits: list[Hit], out: IO[str], mode: str, marks: tuple[str, str]) -> None:
    """`mode`: json, plain or rich (a terminal)."""
    if mode == "json":
        for hit in hits:
            out.write(json_line(hit) + "\n")
    elif mode == "plain":
        for hit in hits:
            out.write(plain_line(hit, marks) + "\n")
    else:
        _print_rich(hits, out, marks)
    out.flush()


def _print_rich(hits: list[Hit], out: IO[str], marks: tuple[str, str]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out, highlight=False, soft_wrap=True)
    for hit in hits:
        line = Text()
        # Text.append never reads markup: a name like "[bold]" is shown as typed.
        line.append(when_text(hit.ms), style="dim")
        line.append("  ")
        line.append(visible(f"{hit.app}/{hit.session}"), style="cyan")
        line.append("  ")
        line.append(_who(hit), style="bold")
        line.append(": ")
        for text, is_match in pieces(hit.text, marks):
            line.append(visible(text), style="bold reverse" if is_match else None)
        console.print(line)
