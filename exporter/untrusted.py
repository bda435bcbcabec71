"""Fetching links a chat participant chose (attachments): every hop's URL checked, every
address a name resolves to checked by the connector's own resolver (so that the address
connected to is the one checked), no credential or cookie of any kind, a size cap while
streaming. Over the caps and rules of `addresses`."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp
import anyio
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from exporter.addresses import address_problem, http_address_problem, link_problem, parse_ip
from exporter.archive import write_error
from exporter.config import Settings
from exporter.errors import PermanentError, Refused, TooLarge, TransientError, transient_status
from exporter.http import check_length, no_hidden_retries, parse_retry_after, transport_errors

if TYPE_CHECKING:
    from exporter.seam import Archive, BodySpool

CHUNK = 256 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class RefusedAddress(OSError):
    """Raised by the resolver: aiohttp hands an OSError of its resolver back as the cause of
    a ClientConnectorError, before any connection is made."""


class CheckedResolver(AbstractResolver):
    """The system resolver, with every answer checked: a name with any address that is not
    public is refused whole; an allowed host passes (over http: loopback addresses only)."""

    def __init__(self, allow_hosts: frozenset[str], *, http: bool) -> None:
        self._allow = allow_hosts
        self._http = http
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        allowed = host.lower().rstrip(".") in self._allow or host.lower() in self._allow
        if self._http and not allowed:
            raise RefusedAddress(f"{host} is not an allowed host for http")
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            ip = parse_ip(entry["host"])
            if ip is None:
                raise RefusedAddress(f"{host} resolved to something that is not an address")
            if self._http:
                problem = http_address_problem(ip)
            else:
                problem = None if allowed else address_problem(ip)
            if problem:
                raise RefusedAddress(f"{host} resolves to {problem}")
        return found

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Fetched:
    size: int
    sha256: str


def _session(settings: Settings, *, http: bool) -> aiohttp.ClientSession:
    t = settings.timeouts
    connector = aiohttp.TCPConnector(
        limit=max(settings.concurrency, 4),
        resolver=CheckedResolver(settings.attachment_allow_hosts, http=http),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read),
        cookie_jar=aiohttp.DummyCookieJar(),  # a host's cookie must not reach the next one
        trust_env=False,  # no proxy or .netrc credentials from the environment
        auto_decompress=False,
        headers={"Accept-Encoding": "identity"},  # stored as served, counted as served
    )
    return no_hidden_retries(session)


class UntrustedFetcher:
    """Downloads attachment links into the archive; two credential-free sessions, one per
    scheme, so each has a resolver that knows which rule applies."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self._settings = settings
        self._archive = archive
        self._https: aiohttp.ClientSession | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> UntrustedFetcher:
        self._https = _session(self._settings, http=False)
        self._http = _session(self._settings, http=True)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Both closed even when the run is being cancelled: a session left open is a leak
        # (and a ResourceWarning) for whatever runs next in this process.
        with anyio.CancelScope(shield=True):
            for session in (self._https, self._http):
                if session is not None:
                    await session.close()

    def problem(self, url: str) -> str | None:
        """Why the link is refused before any request, or None."""
        return link_problem(url, self._settings.attachment_allow_hosts)

    async def fetch(self, url: str, rel: str) -> Fetched:
        """The link's body stored as `rel`; Refused, TooLarge or another ExportError."""
        limit = self._settings.attachment_max_bytes
        spool = self._archive.spool(rel)
        placed = False
        try:
            resp = await self._follow(url)
            async with resp:
                self._check_status(resp)
                if resp.content_length is not None and resp.content_length > limit:
                    raise TooLarge(
                        f"attachment is {resp.content_length} bytes, over the {limit} allowed"
                    )
                digest, size = hashlib.sha256(), 0
                with transport_errors("attachment download failed"):
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise TooLarge(f"attachment is over the {limit} bytes allowed")
                        digest.update(chunk)
                        await self._write(spool, chunk, rel)
                check_length("attachment", size, resp.content_length)
                try:
                    await spool.place()
                except OSError as exc:
                    raise write_error(exc, rel) from None
                placed = True
                return Fetched(size, digest.hexdigest())
        finally:
            if not placed:
                spool.discard()

    @staticmethod
    async def _write(spool: BodySpool, chunk: bytes, rel: str) -> None:
        try:
            await spool.write(chunk)
        except OSError as exc:
            raise write_error(exc, rel) from None

    async def _follow(self, url: str) -> aiohttp.ClientResponse:
        """The first answer that is not a redirect; each hop checked before it is asked."""
        target = URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            problem = self.problem(str(target))
            if problem:
                raise Refused(f"attachment link refused: {problem}")
            session = self._http if target.scheme == "http" else self._https
            assert session is not None, "use UntrustedFetcher as an async context manager"
            with transport_errors("attachment download failed"):
                try:
                    resp = await session.get(target, allow_redirects=False)
                except aiohttp.ClientConnectorError as exc:
                    if isinstance(exc.os_error, RefusedAddress):
                        raise Refused(f"attachment link refused: {exc.os_error}") from None
                    raise
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            resp.release()
            try:
                target = target.join(URL(location))
            except ValueError:
                raise PermanentError("attachment redirected to an unreadable Location") from None
        raise PermanentError(f"attachment redirected more than {MAX_REDIRECTS} times")

    @staticmethod
    def _check_status(resp: aiohttp.ClientResponse) -> None:
        status = resp.status
        if status == 200:
            return
        if transient_status(status):
            raise TransientError(
                f"attachment refused: HTTP {status}",
                http_status=status,
                retry_after=parse_retry_after(resp.headers),
            )
        raise PermanentError(f"attachment refused: HTTP {status}", http_status=status)
