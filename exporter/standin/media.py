"""The stand-in's media: chat attachments (image and file rows in every payload form, linking
to its own attachment route) and recordings (the list and one-recording endpoints with every
status, a file route with ETag and Range, a switch that ignores Range)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import struct
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from exporter.standin.model import StandinConfig, meeting_id, rfc3339

if TYPE_CHECKING:
    from exporter.standin.state import StandinState

ATTACHMENT_PREFIX = "/attachments"
RECORDING_PREFIX = "/recording-files"
RECORDING_STATUSES = ("INVOKED", "RECORDING", "UPLOADING", "UPLOADED", "ERRORED", "PAUSED")
_PERIOD = 65521  # recording bytes repeat with a prime period: a misplaced resume shows
_FORMS = 6  # payload forms, cycled over a session's attachment rows
# Real files (standin/data/), so that a rendered archive shows pictures that decode and a PDF
# that opens: by the attachment link's extension (the PDF's link ends in .bin).
_REAL_ATTACHMENTS = {".jpg": "photo.jpg", ".gif": "picture.gif", ".bin": "report.pdf"}


def _real_attachment(name: str) -> str | None:
    """The packaged file behind an attachment link of this name, if its extension has one."""
    return _REAL_ATTACHMENTS.get(name[name.rfind(".") :] if "." in name else "")


@cache
def data_file(name: str) -> bytes:
    """One of the stand-in's own media files (package data)."""
    return (resources.files(__package__) / "data" / name).read_bytes()


@dataclass
class RecordingState:
    """One recording; a test may change its status, or `change()` its bytes and ETag."""

    id: str
    app_id: str
    session_id: str
    status: str
    size: int
    version: int = 0
    real: bool = False  # the packaged WebM, not seeded bytes (`change()` keeps its bytes)

    @property
    def file_name(self) -> str:
        return f"{self.id}.webm" if self.real else f"{self.id}.mp4"

    @property
    def meeting_id(self) -> str:
        return meeting_id(self.app_id, self.session_id)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(f"{self.id}:{self.version}".encode()).hexdigest()[:32] + '"'

    def change(self) -> None:
        """The object is replaced: other bytes, another ETag (the size stays)."""
        self.version += 1


class Media:
    """The media catalogue and its bookkeeping: what a test reads and steers."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.recordings: dict[str, RecordingState] = {}
        self._by_session: dict[tuple[str, str], list[RecordingState]] = {}
        self.recording_bytes_served = 0  # body bytes written for recording files
        self.cut_next: deque[int] = deque()  # recording answers to cut after N body bytes
        self.ignore_range = config.ignore_range
        self._issued = 0

    # -- attachments

    def attachment_messages(
        self, origin: str, app_id: str, session_id: str
    ) -> list[tuple[str, str, str]]:
        """(message id, payloadType, payload) of the session's attachment rows."""
        n = self.config.attachments
        tag = hashlib.sha256(f"{app_id}/{session_id}".encode()).hexdigest()[:8]
        base = self.link(origin, app_id, session_id, "").rstrip("/")
        rows = []
        for i in range(n):
            mid = f"msg-{tag}-{i:04d}"
            form = i % _FORMS
            if form == 0:
                rows.append((mid, "IMAGE_MESSAGE", json.dumps({"link": f"{base}/{i}.png"})))
            elif form == 1:
                doc = {"name": 'report, final "v2".pdf', "size": self.attachment_size(f"{i}.bin")}
                doc["link"] = f"{base}/{i}.bin"
                rows.append((mid, "FILE_MESSAGE", json.dumps(doc)))
            elif form == 2:
                rows.append((mid, "FILE_MESSAGE", json.dumps({"url": f"{base}/{i}", "name": "n"})))
            elif form == 3:
                rows.append((mid, "IMAGE_MESSAGE", json.dumps({"downloadUrl": f"{base}/{i}.jpg"})))
            elif form == 4:
                rows.append((mid, "IMAGE_MESSAGE", f"{base}/{i}.gif"))
            else:
                rows.append((mid, "FILE_MESSAGE", json.dumps({"name": "gone.zip", "size": 10})))
        if self.config.attachment_odd_ids and n:
            rows.append(("../../escape", "IMAGE_MESSAGE", json.dumps({"link": f"{base}/0.png"})))
            rows.append(("x" * 201, "FILE_MESSAGE", f"{base}/1.bin"))
        return rows

    @staticmethod
    def link(origin: str, app_id: str, session_id: str, name: str) -> str:
        segments = "/".join(quote(s, safe="") for s in (app_id, session_id, name))
        return f"{origin}{ATTACHMENT_PREFIX}/{segments}"

    def attachment_size(self, name: str) -> int:
        if self.config.attachment_bytes is not None:
            return self.config.attachment_bytes
        if (real := _real_attachment(name)) is not None:
            return len(data_file(real))
        return 500 + int(hashlib.sha256(name.encode()).hexdigest()[:6], 16) % 6000

    def attachment_body(self, app_id: str, session_id: str, name: str) -> bytes:
        """The file behind an attachment link (any name: the seeded chat rows make up their own)."""
        rng = random.Random(f"{self.config.seed}:{app_id}:{session_id}:att:{name}")  # noqa: S311
        if self.config.attachment_bytes is None:
            if name.endswith(".png"):
                return _png(rng)  # a real picture, seeded: each one differs
            if (real := _real_attachment(name)) is not None:
                return data_file(real)
        return rng.randbytes(self.attachment_size(name))

    # -- recordings

    def recordings_of(self, app_id: str, session_id: str) -> list[RecordingState]:
        """The session's recordings (made on first sight, one per configured status)."""
        key = (app_id, session_id)
        if key not in self._by_session:
            found = []
            for i, status in enumerate(self.config.recording_statuses):
                rid = self._recording_id(app_id, session_id, i)
                if rid in self.recordings:
                    raise ValueError(f"recording id {rid[:40]!r} given to a second session")
                real = self.config.recording_media
                size = len(data_file("recording.webm")) if real else self.config.recording_bytes
                rec = RecordingState(rid, app_id, session_id, status, size, real=real)
                self.recordings[rid] = rec
                found.append(rec)
            self._by_session[key] = found
        return self._by_session[key]

    def _recording_id(self, app_id: str, session_id: str, i: int) -> str:
        if self.config.recording_ids:
            return self.config.recording_ids[i]
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rtk-standin/rec/{app_id}/{session_id}/{i}"))

    def chunks(self, rec: RecordingState, start: int, size: int = 64 * 1024) -> Iterator[bytes]:
        if rec.real:
            data = data_file("recording.webm")
            yield from (data[p : p + size] for p in range(start, len(data), size))
            return
        rng = random.Random(f"{self.config.seed}:{rec.id}:{rec.version}")  # noqa: S311
        block = rng.randbytes(_PERIOD)
        double = block + block
        pos = start
        while pos < rec.size:
            n = min(size, rec.size - pos, _PERIOD)
            off = pos % _PERIOD
            yield double[off : off + n]
            pos += n

    def digest(self, rid: str) -> tuple[int, str]:
        """(size, SHA-256 hex) of the recording as it is now."""
        rec = self.recordings[rid]
        sha = hashlib.sha256()
        for chunk in self.chunks(rec, 0, 1 << 20):
            sha.update(chunk)
        return rec.size, sha.hexdigest()

    def body(self, rid: str) -> bytes:
        return b"".join(self.chunks(self.recordings[rid], 0))

    def to_json(self, rec: RecordingState, origin: str, secret: bytes) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": rec.id,
            "status": rec.status,
            "output_file_name": rec.file_name,
            "invoked_time": rfc3339(datetime.now(UTC)),
            "start_reason": {"reason": "API_CALL"},
            "stop_reason": {"reason": "API_CALL"},
        }
        if not self.config.recordings_omit_session_id:
            doc["session_id"] = rec.session_id
        if rec.status == "UPLOADED":
            url, expiry = self.presign(origin, rec, secret)
            doc.update(download_url=url, download_url_expiry=expiry, file_size=rec.size)
        return doc

    def presign(self, origin: str, rec: RecordingState, secret: bytes) -> tuple[str, str]:
        expires = int(time.time() + max(self.config.url_lifetime, 0))
        self._issued += 1  # every URL differs, as S3's do (their date is to the second)
        nonce = f"{self._issued}"
        sig = _sign(secret, rec.id, str(expires), nonce)
        path = f"{RECORDING_PREFIX}/{quote(rec.app_id, safe='')}/{rec.file_name}"
        expiry = rfc3339(datetime.fromtimestamp(expires, UTC))
        query = f"X-Amz-Expires={expires}&X-Amz-Nonce={nonce}&X-Amz-Signature={sig}"
        return f"{origin}{path}?{query}", expiry


def _sign(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


class MediaRoutes:
    """The handlers; API answers pass the app's gate (auth, rate limit, faults) first."""

    def __init__(self, state: StandinState) -> None:
        self.state = state
        self.media = state.media

    def _origin(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def list_recordings(self, request: web.Request) -> web.StreamResponse:
        app_id, q = request.match_info["app_id"], request.query
        try:
            page_no = int(q.get("page_no", "1"))
            per_page = int(q.get("per_page", "20"))
        except ValueError:
            return _api_error(400, "Invalid page_no or per_page")
        if page_no < 1 or per_page < 1:
            return _api_error(400, "Invalid page_no or per_page")
        meeting = q.get("meeting_id")
        found = [
            r
            for r in self.media.recordings.values()
            if r.app_id == app_id
            and (
                meeting is None
                or self.media.config.recordings_ignore_filter
                or r.meeting_id == meeting
            )
        ]
        page = found[(page_no - 1) * per_page : page_no * per_page]
        origin, secret = self._origin(request), self.state.secret
        body = {
            "success": True,
            "data": [self.media.to_json(r, origin, secret) for r in page],
            "paging": {
                "start_offset": (page_no - 1) * per_page,
                "end_offset": (page_no - 1) * per_page + len(page),
                "total_count": len(found),
            },
        }
        return web.json_response(body)

    async def one_recording(self, request: web.Request) -> web.StreamResponse:
        rec = self.media.recordings.get(request.match_info["recording_id"])
        if rec is None or rec.app_id != request.match_info["app_id"]:
            return _api_error(404, "Recording not found")
        doc = self.media.to_json(rec, self._origin(request), self.state.secret)
        doc["session_id"] = rec.session_id  # the one-recording answer always names it
        return web.json_response({"success": True, "data": doc})

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        app_id, sid = request.match_info["app_id"], request.match_info["session_id"]
        body = self.media.attachment_body(app_id, sid, request.match_info["name"])
        return web.Response(body=body, content_type="application/octet-stream")

    async def recording_file(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["name"].removesuffix(".mp4").removesuffix(".webm")
        rec = self.media.recordings.get(rid)
        expires = request.query.get("X-Amz-Expires", "")
        sig = request.query.get("X-Amz-Signature", "")
        nonce = request.query.get("X-Amz-Nonce", "")
        wanted_sig = _sign(self.state.secret, rid, expires, nonce)
        if rec is None or not hmac.compare_digest(sig, wanted_sig):
            return web.Response(status=403, text="SignatureDoesNotMatch")
        if not expires.isdigit() or time.time() >= int(expires):
            return web.Response(
                status=403, text="<Error><Message>Request has expired</Message></Error>"
            )
        start, status = 0, 200
        asked = request.headers.get("Range", "")
        if_range = request.headers.get("If-Range")
        if asked.startswith("bytes=") and not self.media.ignore_range:
            first = asked[6:].partition("-")[0]
            if first.isdigit() and (if_range is None or if_range == rec.etag):
                start, status = int(first), 206
                if start >= rec.size:
                    return web.Response(
                        status=416, headers={"Content-Range": f"bytes */{rec.size}"}
                    )
        kind = "video/webm" if rec.real else "video/mp4"
        headers = {"ETag": rec.etag, "Accept-Ranges": "bytes", "Content-Type": kind}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{rec.size - 1}/{rec.size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = rec.size - start
        await resp.prepare(request)
        cut = self.media.cut_next.popleft() if self.media.cut_next else None
        # The client may go away (killed, or giving up): not an error of the stand-in's.
        with contextlib.suppress(ConnectionError):
            await self._send(request, resp, rec, start, cut)
        return resp

    async def _send(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        rec: RecordingState,
        start: int,
        cut: int | None,
    ) -> None:
        sent = 0
        for chunk in self.media.chunks(rec, start):
            if cut is not None and sent + len(chunk) >= cut:
                chunk = chunk[: cut - sent]
            await resp.write(chunk)
            sent += len(chunk)
            self.media.recording_bytes_served += len(chunk)
            if cut is not None and sent >= cut:
                # A moment for the bytes to reach the client, then a reset: the client holds
                # exactly `cut` bytes, as after a connection lost between two packets.
                await asyncio.sleep(0.05)
                if request.transport is not None:
                    request.transport.abort()
                return
            if self.media.config.recording_chunk_delay:
                await asyncio.sleep(self.media.config.recording_chunk_delay)
        await resp.write_eof()


def _api_error(status: int, message: str) -> web.Response:
    body = {"success": False, "error": {"code": status, "message": message}}
    return web.json_response(body, status=status)


def _png(rng: random.Random, width: int = 96, height: int = 64) -> bytes:
    """A small valid PNG: a seeded two-colour gradient."""
    a = [rng.randrange(256) for _ in range(3)]
    b = [rng.randrange(256) for _ in range(3)]
    rows = []
    for y in range(height):
        px = bytes(
            (a[c] * (width - x) + b[c] * x) // width if y < height // 2 else b[c]
            for x in range(width)
            for c in range(3)
        )
        rows.append(b"\x00" + px)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data)
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
