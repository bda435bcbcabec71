"""A transcript as archived (CSV, JSON, VTT, SRT) -> utterances: speaker, start (an offset from
the session's start, or a time where the file gives one) and text. Pure; Malformed on damage.
Shared by search (its index rows) and render (a transcript shown as a conversation)."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import srt

FORMATS = ("csv", "json", "vtt", "srt")
# Column and key names, first found wins: the stand-in's, then the usual spellings.
_START = ("startTime", "start", "start_time", "startOffset", "offset", "timestamp", "time")
_SPEAKER = ("displayName", "name", "speaker", "speakerName", "participantName", "user")
_TEXT = ("transcript", "text", "content", "utterance", "message")
_LISTS = ("transcript", "transcripts", "utterances", "segments", "cues", "results", "data")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,9}))?$")
_CUE_TIME = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)")
_VOICE = re.compile(r"^<v(?:\.[^\s>]*)?\s+([^>]*)>")
_TAG = re.compile(r"</?[A-Za-z][^>]*>|<\d[^>]*>")


class Malformed(Exception):
    """Not a transcript in the format its name says; str() says why."""


@dataclass(frozen=True, slots=True)
class Utterance:
    ident: str  # the cue's number or id, else its position (1-based)
    speaker: str
    text: str
    offset: float | None  # seconds after the session's start
    at: datetime | None  # the moment itself, when the file gives one


def parse(data: bytes, fmt: str) -> list[Utterance]:
    """The utterances of one transcript file, in file order."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Malformed("is not valid UTF-8") from None
    fmt = fmt.lower()
    if fmt == "csv":
        return list(_from_records(_csv_records(text)))
    if fmt == "json":
        return list(_from_records(_json_records(text)))
    if fmt == "vtt":
        return list(_cues(text, vtt=True))
    if fmt == "srt":
        return _srt(text)
    raise Malformed(f"has a format this program does not read ({fmt[:20]!r})")


def when(value: object) -> tuple[float | None, datetime | None]:
    """A start as (offset, moment): seconds (`4.5`), a clock (`00:01:04.500`), or an RFC 3339
    time; (None, None) when it is none of them."""
    if isinstance(value, bool):
        return None, None
    if isinstance(value, int | float):
        return _seconds(float(value))
    if not isinstance(value, str) or not value.strip():
        return None, None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _seconds(seconds)
    m = _CLOCK.match(text)
    if m:
        h, mi, s, frac = m.groups()
        fraction = float(f"0.{frac}") if frac else 0.0
        return int(h or 0) * 3600 + int(mi) * 60 + int(s) + fraction, None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return None, moment.astimezone(UTC)


def _seconds(value: float) -> tuple[float | None, None]:
    return (value, None) if math.isfinite(value) and 0 <= value < 1e9 else (None, None)


def _pick(record: Mapping[str, object], names: Iterable[str]) -> object:
    for name in names:
        if name in record:
            return record[name]
    return None


def _from_records(records: Iterable[Mapping[str, object]]) -> Iterator[Utterance]:
    for n, rec in enumerate(records, start=1):
        speaker, text = _pick(rec, _SPEAKER), _pick(rec, _TEXT)
        if isinstance(speaker, dict):  # {"speaker": {"name": ...}}
            speaker = _pick(speaker, _SPEAKER)
        offset, at = when(_pick(rec, _START))
        yield Utterance(
            str(n),
            speaker if isinstance(speaker, str) else "",
            text if isinstance(text, str) else "",
            offset,
            at,
        )


def _csv_records(text: str) -> Iterator[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise Malformed("is empty (no header row)")
        names = [h.strip() for h in header]
        if not any(h in names for h in _TEXT):
            raise Malformed(f"has no text column ({', '.join(_TEXT)})")
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(names):
                raise Malformed(f"row {number} has {len(row)} fields, the header {len(names)}")
            yield dict(zip(names, row, strict=True))
    except csv.Error as exc:
        raise Malformed(f"is not a readable CSV ({exc})") from None


def _json_records(text: str) -> list[Mapping[str, object]]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise Malformed("is not valid JSON") from None
    if isinstance(doc, dict):
        found = next((doc[k] for k in _LISTS if isinstance(doc.get(k), list)), None)
        if found is None:
            raise Malformed("is a JSON object with no list of utterances")
        doc = found
    if not isinstance(doc, list):
        raise Malformed("is JSON but not a list of utterances")
    return [item for item in doc if isinstance(item, dict)]


def _cues(text: str, vtt: bool) -> Iterator[Utterance]:
    blocks = re.split(r"\r?\n(?:[ \t]*\r?\n)+", text.replace("\r\n", "\n").strip())
    if vtt:
        if not blocks or not blocks[0].startswith("WEBVTT"):
            raise Malformed("does not start with WEBVTT")
        blocks = blocks[1:]
    n = 0
    for block in blocks:
        lines = block.split("\n")
        if vtt and lines[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        at = next((i for i, line in enumerate(lines[:2]) if "-->" in line), None)
        if at is None:
            if not block.strip():
                continue
            raise Malformed(f"has a cue with no time line: {lines[0][:40]!r}")
        m = _CUE_TIME.match(lines[at])
        offset = when(m.group(1).replace(",", "."))[0] if m else None
        if offset is None:
            raise Malformed(f"has a cue time that is not a time: {lines[at][:40]!r}")
        n += 1
        ident = lines[0].strip() if at == 1 else str(n)
        body = "\n".join(lines[at + 1 :])
        speaker, said = _vtt_voice(body) if vtt else _srt_speaker(body)
        yield Utterance(ident, speaker, said, offset, None)


def _srt(text: str) -> list[Utterance]:
    """SRT by the `srt` library, which also splits cues a missing blank line ran together;
    when it refuses, our own reading of the blocks says why in words."""
    try:
        cues = list(srt.parse(text))
    except srt.SRTParseError:
        list(_cues(text, vtt=False))  # raises Malformed naming the block at fault
        raise Malformed("is not a readable SRT file") from None
    out = []
    for n, cue in enumerate(cues, start=1):
        speaker, said = _srt_speaker(cue.content.strip("\n"))
        offset = _seconds(cue.start.total_seconds())[0]
        ident = str(cue.index if cue.index is not None else n)
        out.append(Utterance(ident, speaker, said, offset, None))
    return out


def _vtt_voice(body: str) -> tuple[str, str]:
    speaker = ""
    m = _VOICE.match(body)
    if m:
        speaker = html.unescape(m.group(1).strip())
    return speaker, html.unescape(_TAG.sub("", body))


def _srt_speaker(body: str) -> tuple[str, str]:
    """`Name: text`, the stand-in's and the usual way to name a speaker in SRT."""
    name, sep, rest = body.partition(": ")
    if sep and name and len(name) <= 80 and "\n" not in name:
        return name, rest
    return "", body
