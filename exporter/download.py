"""Presigned URL -> checked redirects -> status -> decode + hash -> bytes handed to the archive.

The session here carries no credentials of any kind, so the API token cannot reach the
download host whatever happens to a URL. A file appears under its final name only complete:
its size checked against Content-Length, a compressed stream checked to its end.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from yarl import URL

from exporter.archive import write_error
from exporter.config import Settings
from exporter.errors import (
    IncompleteDownload,
    LinkExpired,
    PermanentError,
    TransientError,
    transient_status,
)
from exporter.http import check_length, download_session, parse_retry_after, transport_errors
from exporter.seam import Archive, BodySpool
from exporter.urls import Link, download_url_problem

CHUNK = 256 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Stored:
    size: int
    sha256: str


class Downloader:
    """Streams presigned URLs into the archive; one credential-free aiohttp session for all."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self._settings = settings
        self._archive = archive
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Downloader:
        self._session = download_session(self._settings.timeouts, self._settings.concurrency)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, link: Link, rel: str) -> Stored:
        """Download `link` into the archive as `rel`, atomically; an ExportError on failure."""
        problem = download_url_problem(link.url)
        if problem:
            raise PermanentError(problem)
        spool = self._archive.spool(rel)
        placed = False
        try:
            with transport_errors("download failed"):
                resp = await self._send_handling_redirects(URL(link.url, encoded=True))
                async with resp:
                    if resp.status != 200:
                        await self._refuse(resp, link)
                    stored = await self._receive(resp, spool)
                    await self._place(spool)
                    placed = True
                    return stored
        finally:
            if not placed:
                spool.discard()

    async def open(
        self, link: Link, headers: Mapping[str, str], ok: frozenset[int], read_bufsize: int
    ) -> aiohttp.ClientResponse:
        """The answer to a GET of `link` with `headers` (redirects checked), for a caller that
        reads the body itself (a resumable recording); a status not in `ok` is mapped to the
        error tree here. The caller releases the answer."""
        problem = download_url_problem(link.url)
        if problem:
            raise PermanentError(problem)
        with transport_errors("download failed"):
            resp = await self._send_handling_redirects(
                URL(link.url, encoded=True), headers, read_bufsize
            )
            if resp.status not in ok:
                async with resp:
                    await self._refuse(resp, link)
            return resp

    async def _send_handling_redirects(
        self, url: URL, headers: Mapping[str, str] | None = None, read_bufsize: int | None = None
    ) -> aiohttp.ClientResponse:
        """The first answer that is not a redirect (the caller releases it); each hop is
        checked (https, or http to loopback) before a request goes to it, which aiohttp's own
        following cannot do."""
        assert self._session is not None, "use Downloader as an async context manager"
        for _ in range(MAX_REDIRECTS + 1):
            resp = await self._session.get(
                url, allow_redirects=False, headers=headers, read_bufsize=read_bufsize
            )
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            resp.release()
            url = url.join(URL(location, encoded=True))
            problem = download_url_problem(str(url))
            if problem:
                raise PermanentError(f"download redirected: {problem}", http_status=resp.status)
        raise PermanentError(f"download redirected more than {MAX_REDIRECTS} times")

    async def _refuse(self, resp: aiohttp.ClientResponse, link: Link) -> None:
        status = resp.status
        try:
            body = (await resp.content.read(8192)).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError):
            body = ""
        past_expiry = link.expires_at is not None and not link.usable_for(0)
        if status == 403 and ("expired" in body.lower() or past_expiry):
            raise LinkExpired("download URL expired (HTTP 403)", http_status=403)
        if transient_status(status):
            # S3's 503 SlowDown may say how long to slow down for.
            raise TransientError(
                f"download refused: HTTP {status}",
                http_status=status,
                retry_after=parse_retry_after(resp.headers),
            )
        raise PermanentError(f"download refused: HTTP {status}{_s3_code(body)}", http_status=status)

    async def _receive(self, resp: aiohttp.ClientResponse, spool: BodySpool) -> Stored:
        """The body into the spool, decoded and hashed; its length checked as announced."""
        decoder = _Decoder.for_encoding(resp.headers.get("Content-Encoding", ""))
        announced = resp.content_length  # bytes on the wire, whatever the encoding
        digest = hashlib.sha256()
        size = received = 0
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                received += len(chunk)
                if announced is not None and received > announced:
                    break
                for piece in decoder.feed(chunk) if decoder else (chunk,):
                    digest.update(piece)
                    size += len(piece)
                    await spool.write(piece)
            check_length("download", received, announced)
            if decoder:
                piece = decoder.finish()
                digest.update(piece)
                size += len(piece)
                await spool.write(piece)
        except zlib.error:
            raise IncompleteDownload("compressed download is cut short or corrupt") from None
        except (TimeoutError, aiohttp.ClientError):
            # The network failed, not the disk: both are OSErrors (TimeoutError, ClientOSError)
            # and would otherwise be reported as a write failure and never retried.
            raise
        except OSError as exc:
            raise write_error(exc, spool.final) from None
        return Stored(size=size, sha256=digest.hexdigest())

    async def _place(self, spool: BodySpool) -> None:
        try:
            await spool.place()
        except OSError as exc:
            raise write_error(exc, spool.final) from None


class _Decoder:
    """Undoes Content-Encoding gzip or deflate in bounded pieces, and insists on the end of the
    stream (the gzip trailer holds a CRC-32 and the length): a body cut short never passes."""

    def __init__(self, wbits: int, gzip: bool) -> None:
        self._wbits, self._gzip = wbits, gzip
        self._z = zlib.decompressobj(wbits)

    @classmethod
    def for_encoding(cls, value: str) -> _Decoder | None:
        encoding = value.strip().lower()
        if encoding in ("", "identity"):
            return None
        if encoding in ("gzip", "x-gzip"):
            return cls(16 + zlib.MAX_WBITS, gzip=True)
        if encoding == "deflate":  # zlib-wrapped, as RFC 9110 says
            return cls(zlib.MAX_WBITS, gzip=False)
        raise PermanentError(f"download has an unsupported Content-Encoding {value[:40]!r}")

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._z.eof:
                if not self._gzip:
                    raise zlib.error("data after the end of the deflate stream")
                self._z = zlib.decompressobj(self._wbits)  # gzip allows several members
            # At most CHUNK out per call: a small body that inflates hugely stays streamed.
            out = self._z.decompress(data, CHUNK)
            if out:
                yield out
            data = self._z.unused_data if self._z.eof else self._z.unconsumed_tail

    def finish(self) -> bytes:
        tail = self._z.flush()
        if not self._z.eof:
            raise zlib.error("the compressed stream ends early")
        return tail


def _s3_code(body: str) -> str:
    start = body.find("<Code>")
    end = body.find("</Code>")
    if 0 <= start < end:
        return f" ({body[start + 6 : end][:60]})"
    return ""
