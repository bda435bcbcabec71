"""Deterministic download bodies: chat CSVs of any size (streamed), transcripts, summaries."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import random
import time
from collections.abc import Iterable, Iterator, Mapping

from exporter.standin.media import Media
from exporter.standin.model import CHAT_CSV_HEADER, Kind, SessionSpec, StandinConfig, meeting_id

# Display names and payloads chosen to break naive CSV handling: commas, doubled quotes,
# embedded newlines, leading spaces, formula-looking text, accents, CJK and emoji.
_NAMES = (
    "Ana Pérez",
    "O'Brien, Pat",
    'Dr. "Doc" Brown',
    "Zoë Ångström",
    "李小龍",
    "José 🎉",
    "Łukasz Żółć",
    "plain user",
)
_TEXTS = (
    "Hello, world",
    'She said "hi" and left',
    "line one\nline two",
    "Ça va? 😀",
    "ok",
    "=1+2 is not a formula",
    " leading space",
    "trailing comma,",
    "",
    'multi\r\nline, "quoted"\nend',
    "Grüße aus Köln",
    "👍🏽👍🏽👍🏽",
)
_ROW_PERIOD = 64  # rows repeat their content every 64, so big bodies have a computable size
# A chat row is `<36-char id>,<middle columns>,<24-char createdAt>\r\n`: only the middle varies.
_ROW_FIXED = 36 + 1 + 1 + 24 + 2


def _quoted(field: str) -> str:
    if "," in field or '"' in field or "\n" in field or "\r" in field:
        return '"' + field.replace('"', '""') + '"'
    return field


def catalogue_of(sessions: Iterable[SessionSpec]) -> dict[tuple[str, str], SessionSpec]:
    """(app_id, session_id) -> session, breakout rooms included."""
    return {(top.app_id, s.session_id): s for top in sessions for s in (top, *top.breakout_rooms)}


def expected_body(
    config: StandinConfig,
    app_id: str,
    session_id: str,
    kind: Kind = "chat",
    fmt: str = "csv",
    origin: str | None = None,
) -> bytes:
    """What a stand-in run with `config` serves for this download (e.g. in another process);
    a chat names attachment links at the stand-in's `origin` (http://HOST:PORT)."""
    content = Content(config, catalogue_of(config.sessions))
    if origin is not None:
        content.origin = origin
    return content.body(app_id, session_id, kind, fmt)


class Content:
    """Deterministic bodies per (app_id, session_id, kind, format), seeded by the config."""

    def __init__(
        self,
        config: StandinConfig,
        catalogue: Mapping[tuple[str, str], SessionSpec],
        media: Media | None = None,
    ):
        self.config = config
        self.catalogue = catalogue
        self.media = media or Media(config)
        self.origin = "http://127.0.0.1"  # where attachment links point: set once bound
        # Every download asks for a body's plan and its rows several times (size, then chunks),
        # and a chaos run serves thousands: building the 64 template rows dominated the
        # stand-in's CPU. Bounded, so a million-session run stays small.
        self._chat_templates = functools.lru_cache(maxsize=1024)(self._build_chat_templates)
        self._chat_plan = functools.lru_cache(maxsize=1024)(self._plan_chat)

    def size(self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv") -> int:
        if kind == "chat":
            if self.config.attachments:  # rows of links, of the origin's length
                return sum(len(c) for c in self._chat_chunks(app_id, session_id))
            return self._chat_plan(app_id, session_id)[0]
        return len(self._small(app_id, session_id, kind, fmt))

    def chunks(
        self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv"
    ) -> Iterator[bytes]:
        if kind == "chat":
            yield from self._chat_chunks(app_id, session_id)
        else:
            yield self._small(app_id, session_id, kind, fmt)

    def body(self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv") -> bytes:
        """The whole body: mind `chat_bytes` (use `digest` for big bodies)."""
        return b"".join(self.chunks(app_id, session_id, kind, fmt))

    def digest(
        self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv"
    ) -> tuple[int, str]:
        """(size, SHA-256 hex) computed by streaming."""
        sha, size = hashlib.sha256(), 0
        for chunk in self.chunks(app_id, session_id, kind, fmt):
            sha.update(chunk)
            size += len(chunk)
        return size, sha.hexdigest()

    def _rng(self, app_id: str, session_id: str, kind: str) -> random.Random:
        # Seeded on purpose (here and for faults): the same config gives the same run.
        return random.Random(f"{self.config.seed}:{app_id}:{session_id}:{kind}")  # noqa: S311

    def start_time(self, app_id: str, session_id: str) -> float:
        """When the session started (epoch seconds): the catalogue's, else a seeded one."""
        spec = self.catalogue.get((app_id, session_id))
        if spec is not None:
            return spec.started_at.timestamp()
        return 1_767_225_600 + self._rng(app_id, session_id, "start").randrange(86_400 * 300)

    @staticmethod
    def _csv_line(values: Iterable[str]) -> str:
        # csv.writer's QUOTE_MINIMAL rule for rows of several fields, without its per-call
        # cost (it was a large share of a chaos run's CPU): a field holding a comma, a quote or
        # a line terminator character is quoted, its quotes doubled.
        return ",".join(_quoted(v) for v in values)

    def _build_chat_templates(self, app_id: str, session_id: str) -> tuple[str, list[str], str]:
        """(id prefix, the middle columns of each template row, the filler row's middle)."""
        rng = self._rng(app_id, session_id, "chat")
        prefix = hashlib.sha256(f"{self.config.seed}:{app_id}:{session_id}".encode()).hexdigest()
        prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        meeting = meeting_id(app_id, session_id)
        middles = []
        # Rows are drawn in order from one seeded generator, so building only the rows a short
        # body uses gives the very same rows, for a fraction of the cost.
        rows = self._row_count(app_id, session_id)
        needed = _ROW_PERIOD if rows is None or rows >= _ROW_PERIOD else rows
        for _ in range(needed):
            person = rng.randrange(len(_NAMES))
            kind = rng.choices(("TEXT_MESSAGE", "IMAGE_MESSAGE", "FILE_MESSAGE"), (8, 1, 1))[0]
            if kind == "IMAGE_MESSAGE":
                # A bare link: to the stand-in's own attachment route when attachments are on;
                # else to a port-free loopback address (refused, never fetched), so that the
                # same config serves the same bytes from any port.
                name = f"r{rng.randrange(10**6)}.png"
                origin = self.origin if self.config.attachments else "https://127.0.0.1"
                payload = self.media.link(origin, app_id, session_id, name)
            elif kind == "FILE_MESSAGE":
                payload = json.dumps(
                    {"name": 'report, final "v2".pdf', "size": rng.randrange(10**6)}
                )
            else:
                payload = rng.choice(_TEXTS)
            middles.append(
                self._csv_line(
                    (
                        f"participant-{person:04d}",
                        session_id,
                        meeting,
                        _NAMES[person],
                        rng.choice(("true", "false")),
                        rng.choice(("true", "false")),
                        kind,
                        payload,
                    )
                )
            )
        filler = self._csv_line(
            (
                "participant-0000",
                session_id,
                meeting,
                "filler",
                "false",
                "false",
                "TEXT_MESSAGE",
                "",
            )
        )
        return prefix, middles, filler

    def _row_count(self, app_id: str, session_id: str) -> int | None:
        """Rows of a chat body, or None when its size (`chat_bytes`) decides."""
        if self.config.chat_bytes is not None:
            return None
        if self.config.chat_rows is not None:
            return self.config.chat_rows
        return self._rng(app_id, session_id, "rows").randint(6, 24)

    def _plan_chat(self, app_id: str, session_id: str) -> tuple[int, int, int]:
        """(total bytes, full rows, filler payload length or -1 for no filler row)."""
        _, middles, filler = self._chat_templates(app_id, session_id)
        header = len(self._csv_line(CHAT_CSV_HEADER)) + 2
        lengths = [len(m.encode()) + _ROW_FIXED for m in middles]
        prefix_sums = [0]
        for n in lengths:
            prefix_sums.append(prefix_sums[-1] + n)
        block = prefix_sums[-1]
        target = self.config.chat_bytes
        rows = self._row_count(app_id, session_id)
        if rows is not None or target is None:
            assert rows is not None  # _row_count gives None only when chat_bytes is set
            q, r = divmod(rows, _ROW_PERIOD)
            return header + q * block + prefix_sums[r], rows, -1
        room = target - header - (len(filler.encode()) + _ROW_FIXED)
        if room < 0:
            raise ValueError(f"chat_bytes={target} is too small for session {session_id!r}")
        q, rest = divmod(room, block)
        r = max(i for i in range(_ROW_PERIOD) if prefix_sums[i] <= rest)
        return target, q * _ROW_PERIOD + r, rest - prefix_sums[r]

    def _chat_chunks(self, app_id: str, session_id: str) -> Iterator[bytes]:
        prefix, middles, filler = self._chat_templates(app_id, session_id)
        _, rows, pad = self._chat_plan(app_id, session_id)
        start = int(self.start_time(app_id, session_id))
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
        meeting = meeting_id(app_id, session_id)
        for n, (mid, ptype, payload) in enumerate(
            self.media.attachment_messages(self.origin, app_id, session_id)
        ):
            middle = self._csv_line(
                (
                    "participant-0001",
                    session_id,
                    meeting,
                    _NAMES[n % len(_NAMES)],
                    "false",
                    "false",
                    ptype,
                    payload,
                )
            )
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 7 * (rows + n)))
            buf.append(f"{self._csv_line((mid,))},{middle},{stamp}.000Z\r\n")
        yield "".join(buf).encode()

    def _small(self, app_id: str, session_id: str, kind: Kind, fmt: str) -> bytes:
        rng = self._rng(app_id, session_id, f"{kind}.{fmt.lower()}")
        count = rng.randint(4, 9)
        # An empty cue text would end an SRT/VTT cue early: keep a word there.
        lines = [(i * 4.5, rng.choice(_NAMES), rng.choice(_TEXTS) or "…") for i in range(count)]
        if kind == "summary":
            said = "\n".join(f"- {name}: {text}" for _, name, text in lines)
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
            return "".join(
                f"{i + 1}\n{stamp(t, ',')} --> {stamp(t + 4, ',')}\n{n}: {x}\n\n"
                for i, (t, n, x) in enumerate(lines)
            ).encode()
        return (
            "WEBVTT\n\n"
            + "".join(
                f"{stamp(t, '.')} --> {stamp(t + 4, '.')}\n<v {n}>{x}\n\n" for t, n, x in lines
            )
        ).encode()
