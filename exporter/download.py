"""Presigned URL -> SHA-256 and size check -> temporary file beside the target -> os.replace
(a body of up to IN_MEMORY bytes is checked before it touches the disk; a larger one while it
spills to its temporary file).

The session here carries no credentials of any kind, so the API token cannot reach the
download host whatever happens to a URL. A file appears under its final name only complete.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import secrets
import zlib
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp
from yarl import URL

from exporter.client import Link, describe_exception, no_hidden_retries, parse_retry_after
from exporter.config import Settings
from exporter.errors import (
    DiskError,
    IncompleteDownload,
    LinkExpired,
    PermanentError,
    TransientError,
)
from exporter.urls import download_url_problem
from exporter.writer import FileWriter, create, write_all

CHUNK = 256 * 1024
IN_MEMORY = 1024 * 1024  # bytes of a body held before it spills to disk
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
TMP_PREFIX = ".rtk-export-"
TMP_SUFFIX = ".part"
# Errors that mean the disk, not the pair, is the problem: retrying other pairs cannot help.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.EIO}


@dataclass(frozen=True, slots=True)
class Stored:
    size: int
    sha256: str


# Unique per process and file without a getrandom() call per file: a random tag drawn once,
# then a counter.
_TAG = secrets.token_hex(4)
_SERIAL = itertools.count()


def temp_name(final: str) -> str:
    folder, name = os.path.split(final)
    return os.path.join(folder, f"{TMP_PREFIX}{name}.{_TAG}{next(_SERIAL):x}{TMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def remove_stale_temps(out_dir: Path) -> int:
    """Remove temporary files a killed run left in DIR and its app folders; how many."""
    removed = 0
    if not out_dir.is_dir():
        return 0
    for top in os.scandir(out_dir):
        entries = [top]
        if top.is_dir(follow_symlinks=False):
            entries = list(os.scandir(top.path))
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and is_temp_name(entry.name):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def disk_error(exc: OSError, path: str | Path) -> DiskError | None:
    if exc.errno in _DISK_ERRNOS:
        return DiskError(f"cannot write {path}: {os.strerror(exc.errno or 0)}")
    return None


class Downloader:
    """Streams presigned URLs to files; one credential-free aiohttp session for all."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._writer = FileWriter()

    async def __aenter__(self) -> Downloader:
        t = self._settings.timeouts
        self._session = aiohttp.ClientSession(
            # No total limit (a large CSV may take long); a silent socket is what we bound.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read),
            connector=aiohttp.TCPConnector(limit=max(self._settings.concurrency, 4)),
            # Presigned URLs are signed over the exact path and query: send them untouched.
            requote_redirect_url=False,
            # Encoded bodies are decoded by _Decoder: aiohttp's decoder lets a gzip stream that
            # stops early pass as complete, and hides the encoded length Content-Length counts.
            auto_decompress=False,
            # Only the encodings _Decoder knows (S3 serves an object's stored encoding anyway).
            headers={"Accept-Encoding": "gzip, deflate"},
        )
        no_hidden_retries(self._session)
        await self._writer.__aenter__()
        return self

    @property
    def folder_error(self) -> DiskError | None:
        """Set once closed, if a folder could not be synced at the end."""
        if self._writer.folder_error is None:
            return None
        folder, exc = self._writer.folder_error
        return DiskError(f"cannot sync the folder {folder}: {exc.strerror or exc}")

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._writer.__aexit__(et, e, tb)
        finally:
            if self._session is not None:
                await self._session.close()

    async def fetch(self, link: Link, final: Path) -> Stored:
        """Download `link` into `final` atomically; raise an ExportError on any failure."""
        assert self._session is not None, "use Downloader as an async context manager"
        problem = download_url_problem(link.url)
        if problem:
            raise PermanentError(problem)
        # Plain strings from here on: a Path per temporary name and folder cost a few per cent
        # of the CPU per pair.
        final_s = os.fspath(final)
        tmp = temp_name(final_s)
        url = URL(link.url, encoded=True)
        stored = False
        try:
            try:
                # Redirects are followed by hand, so that each hop is checked (https, or http
                # to loopback) before a request goes to it.
                for _ in range(MAX_REDIRECTS + 1):
                    async with self._session.get(url, allow_redirects=False) as resp:
                        location = resp.headers.get("Location")
                        if resp.status in _REDIRECTS and location:
                            url = url.join(URL(location, encoded=True))
                            problem = download_url_problem(str(url))
                            if problem:
                                raise PermanentError(f"download redirected: {problem}",
                                                     http_status=resp.status)
                            continue
                        if resp.status != 200:
                            await self._refuse(resp, link)
                        result = await self._store(resp, tmp, final_s)
                        stored = True
                        return result
                raise PermanentError(f"download redirected more than {MAX_REDIRECTS} times")
            except (TimeoutError, aiohttp.ClientError) as exc:
                msg = describe_exception(exc)
                if isinstance(exc, aiohttp.ClientPayloadError):
                    raise IncompleteDownload(f"download incomplete: {msg}") from None
                raise TransientError(f"download failed: {msg}") from None
        finally:
            if not stored:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)

    async def _refuse(self, resp: aiohttp.ClientResponse, link: Link) -> None:
        status = resp.status
        try:
            body = (await resp.content.read(8192)).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError):
            body = ""
        past_expiry = link.expires_at is not None and not link.usable_for(0)
        if status == 403 and ("expired" in body.lower() or past_expiry):
            raise LinkExpired("download URL expired (HTTP 403)", http_status=403)
        if status in (408, 409, 429) or status >= 500:
            # S3's 503 SlowDown may say how long to slow down for.
            raise TransientError(f"download refused: HTTP {status}", http_status=status,
                                 retry_after=parse_retry_after(resp.headers))
        raise PermanentError(f"download refused: HTTP {status}{_s3_code(body)}",
                             http_status=status)

    async def _store(self, resp: aiohttp.ClientResponse, tmp: str, final: str) -> Stored:
        decoder = _Decoder.for_encoding(resp.headers.get("Content-Encoding", ""))
        announced = resp.content_length  # bytes on the wire, whatever the encoding
        digest = hashlib.sha256()
        size = received = 0
        # A body is kept in memory up to IN_MEMORY and then written, synced and renamed in
        # one go by the writer thread; a larger one spills to its temporary file as it comes.
        held: list[bytes] = []
        fd: int | None = None
        try:
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    received += len(chunk)
                    if announced is not None and received > announced:
                        break
                    for piece in decoder.feed(chunk) if decoder else (chunk,):
                        digest.update(piece)
                        size += len(piece)
                        if fd is not None:
                            write_all(fd, piece)
                            continue
                        held.append(piece)
                        if size > IN_MEMORY:
                            # On the event loop: the create is a small part of a long transfer.
                            fd = create(tmp)
                            write_all(fd, b"".join(held))
                            held.clear()
                if announced is not None and received != announced:
                    raise IncompleteDownload(
                        f"download had {received} bytes, the server announced {announced}")
                if decoder:
                    piece = decoder.finish()
                    digest.update(piece)
                    size += len(piece)
                    held.append(piece)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise
            data = b"".join(held)
            held.clear()  # one copy in memory while it waits for the disk, not two
            await self._writer.place(tmp, final, data, fd)
        except zlib.error:
            raise IncompleteDownload("compressed download is cut short or corrupt") from None
        except (TimeoutError, aiohttp.ClientError):
            # The network failed, not the disk: both are OSErrors (TimeoutError, ClientOSError)
            # and would otherwise be reported as a write failure and never retried.
            raise
        except OSError as exc:
            raise disk_error(exc, final) or PermanentError(
                f"cannot write {os.path.basename(final)}: {exc.strerror}") from None
        return Stored(size=size, sha256=digest.hexdigest())


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
        return f" ({body[start + 6:end][:60]})"
    return ""
