"""The webhook public key (a PEM file, or fetched from a key URL, cached, fetched again when a
signature fails, at most once a minute) and `verify`: base64 RSASSA-PKCS1-v1_5 over SHA-256
of the raw body bytes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from exporter.config import Timeouts
from exporter.errors import ExportError, TransientError, transient_status
from exporter.http import download_session, read_capped, transport_errors
from exporter.urls import private_transport, redact

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("exporter.webhooks")

MAX_KEY_ANSWER = 64 * 1024  # a PEM key in a small JSON envelope: anything larger is not one
# A 16384-bit key's signature is 2,732 base64 characters; a longer header is not a signature.
MAX_SIGNATURE_CHARS = 4096


class WebhookKeyError(ExportError):
    """The public key could not be loaded (fetched or read); the message is safe to log."""

    kind = "webhook_key"


def load_public_key(pem: bytes) -> RSAPublicKey:
    """An RSA public key from PEM (SubjectPublicKeyInfo or PKCS#1); ValueError saying why not."""
    if b"\\n" in pem and b"\n" not in pem.strip():
        pem = pem.replace(b"\\n", b"\n")  # a PEM whose newlines were escaped once too often
    try:
        key = serialization.load_pem_public_key(pem.strip() + b"\n")
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key (RealtimeKit signs with RSA)")
    return key


def verify(key: RSAPublicKey, raw: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is `key`'s RSASSA-PKCS1-v1_5 SHA-256 signature of `raw`;
    False for anything that is not one, bad base64 included."""
    if not signature or len(signature) > MAX_SIGNATURE_CHARS:
        return False
    try:
        sig = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return False
    try:
        key.verify(sig, raw, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def key_url_problem(url: str) -> str | None:
    """Why the key URL must not be used, or None: https, or plain http to loopback."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "the webhook key URL is malformed"
    if not parts.hostname:
        return "the webhook key URL has no host"
    if private_transport(parts.scheme, parts.hostname):
        return None
    # A key fetched in clear text could be swapped, and forged deliveries would then verify.
    return f"the webhook key URL must be https (plain http only to loopback), got {redact(url)}"


class WebhookKey:
    """The key `serve` verifies with: from `pem_file`, or fetched from `key_url` (no token)."""

    def __init__(
        self,
        *,
        key_url: str | None = None,
        pem_file: Path | None = None,
        timeouts: Timeouts,
        refetch_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (key_url is None) == (pem_file is None):
            raise ValueError("give the webhook key as a URL or as a PEM file, not both")
        if key_url is not None and (problem := key_url_problem(key_url)):
            raise ValueError(problem)
        self._url = key_url
        self._file = pem_file
        self._timeouts = timeouts
        self._interval = refetch_interval
        self._clock = clock
        self._key: RSAPublicKey | None = None
        self._fetched_at: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # key URL requests made (for tests and metrics)

    @property
    def ready(self) -> bool:
        return self._key is not None

    async def __aenter__(self) -> WebhookKey:
        if self._url is not None:
            # The credential-free download session: the token never goes to the key host.
            self._session = download_session(self._timeouts, 1)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def load(self) -> None:
        """Read the PEM file, or fetch the key; a WebhookKeyError saying what went wrong."""
        if self._file is not None:
            self._key = _read_pem_file(self._file)
            return
        async with self._lock:
            await self._fetch()

    async def check(self, raw: bytes, signature: str) -> bool:
        """Whether the signature holds; on a failure, the key is fetched again (at most once
        per `refetch_interval`) and the signature checked once more. A WebhookKeyError when
        there is no key and none can be fetched: the caller answers 503, not 401."""
        key = self._key
        if key is not None and verify(key, raw, signature):
            return True
        if self._url is None:
            if key is None:
                raise WebhookKeyError("no webhook public key loaded")
            return False
        async with self._lock:
            if self._key is not key and self._key is not None:
                # Another delivery fetched a new key while this one waited: check against it.
                return verify(self._key, raw, signature)
            last = self._fetched_at
            if last is not None and self._clock() - last < self._interval:
                if self._key is None:
                    raise WebhookKeyError("no webhook public key yet (fetch failed recently)")
                return False
            await self._fetch()
            assert self._key is not None
            return verify(self._key, raw, signature)

    async def _fetch(self) -> None:
        assert self._url is not None
        if self._session is None:
            raise RuntimeError("use WebhookKey as an async context manager")
        self._fetched_at = self._clock()
        self.fetches += 1
        where = redact(self._url)
        with transport_errors(f"webhook key {where}"):
            async with self._session.get(
                self._url, allow_redirects=False, headers={"Accept-Encoding": "identity"}
            ) as resp:
                status = resp.status
                body = await read_capped(resp.content, MAX_KEY_ANSWER)
        if not 200 <= status < 300:
            kind = TransientError if transient_status(status) else WebhookKeyError
            raise kind(f"webhook key {where}: HTTP {status}", http_status=status)
        if body is None:
            raise WebhookKeyError(f"webhook key {where}: answer over {MAX_KEY_ANSWER} bytes")
        key = _key_from_answer(body, where)
        if key.public_numbers() != (self._key.public_numbers() if self._key else None):
            log.info("webhook public key loaded from %s", where, extra={"event": "webhook_key"})
        self._key = key


def _key_from_answer(body: bytes, where: str) -> RSAPublicKey:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookKeyError(f"webhook key {where}: the answer is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    pem = data.get("publicKey") if isinstance(data, dict) else None
    if not isinstance(pem, str) or (isinstance(doc, dict) and doc.get("success") is False):
        raise WebhookKeyError(f"webhook key {where}: no data.publicKey in the answer")
    try:
        return load_public_key(pem.encode("utf-8", "replace"))
    except ValueError as exc:
        raise WebhookKeyError(f"webhook key {where}: {exc}") from None


def _read_pem_file(path: Path) -> RSAPublicKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise WebhookKeyError(
            f"webhook public key {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        return load_public_key(pem)
    except ValueError as exc:
        raise WebhookKeyError(f"webhook public key {path}: {exc}") from None
