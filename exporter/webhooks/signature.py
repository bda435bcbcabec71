"""RealtimeKit's signature: `rtk-signature` is base64 RSASSA-PKCS1-v1_5 with SHA-256 over the
raw body bytes. The public key comes from a PEM file or from the key URL (fetched, kept, and
fetched again after a signature that fails, at most once a minute: the key may rotate)."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import anyio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from exporter.config import Timeouts
from exporter.errors import PermanentError

MAX_SIGNATURE = 2048  # characters: an RSA-8192 signature is 1,368 in base64


class KeyUnavailable(PermanentError):
    kind = "webhook_key"


def load_public_key(pem: bytes) -> RSAPublicKey:
    """The RSA public key of a PEM text; ValueError with a clear message otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the webhook key is not an RSA key")
    return key


def verify(key: RSAPublicKey, raw: bytes, signature: str) -> bool:
    """Does `signature` (base64) sign `raw` under `key`? Anything malformed is False."""
    if not signature or len(signature) > MAX_SIGNATURE:
        return False
    try:
        sig = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(sig, raw, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def key_from_document(body: bytes) -> RSAPublicKey:
    """`{"success": true, "data": {"publicKey": PEM}}`, as `.well-known/webhooks.json` answers."""
    try:
        doc = json.loads(body)
        pem = doc["data"]["publicKey"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise ValueError("the key document has no data.publicKey") from None
    if not isinstance(pem, str):
        raise ValueError("the key document's publicKey is not a string")
    return load_public_key(pem.encode())


class WebhookKey:
    """The key serve checks deliveries with; `ready` once loaded."""

    def __init__(
        self,
        *,
        key_url: str | None = None,
        pem_file: Path | None = None,
        timeouts: Timeouts,
        refetch_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert (key_url is None) != (pem_file is None), "a key URL or a PEM file"
        self._url = key_url
        self._file = pem_file
        self._timeouts = timeouts
        self._interval = refetch_interval
        self._clock = clock
        self._key: RSAPublicKey | None = None
        self._fetched_at: float | None = None
        self._session: object = None
        self._lock = anyio.Lock()

    @property
    def ready(self) -> bool:
        return self._key is not None

    async def __aenter__(self) -> WebhookKey:
        if self._url is not None:
            from exporter.http import download_session

            # Credential-free, like the download session: the token never goes to the key host.
            self._session = download_session(self._timeouts, 2)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()  # type: ignore[attr-defined]
            self._session = None

    async def load(self) -> None:
        """Read the file or fetch the URL; KeyUnavailable (safe to log) when it cannot be."""
        async with self._lock:
            self._fetched_at = self._clock()
            try:
                if self._file is not None:
                    pem = await anyio.Path(self._file).read_bytes()
                    self._key = load_public_key(pem)
                else:
                    self._key = key_from_document(await self._fetch())
            except (OSError, ValueError) as exc:
                raise KeyUnavailable(f"the webhook public key: {exc}") from None

    async def _fetch(self) -> bytes:
        from exporter.errors import ExportError
        from exporter.http import transport_errors

        assert self._session is not None and self._url is not None
        try:
            with transport_errors("the webhook key could not be fetched"):
                async with self._session.get(self._url, allow_redirects=False) as resp:  # type: ignore[attr-defined]
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status} from the key URL")
                    return bytes(await resp.content.read(64 * 1024))
        except ExportError as exc:
            raise ValueError(exc.message) from None

    async def check(self, raw: bytes, signature: str) -> bool:
        """Verify; on a failure, fetch the key again (at most once a minute) and verify once
        more: a rotated key is picked up without a restart."""
        key = self._key
        if key is not None and verify(key, raw, signature):
            return True
        if self._url is None:
            return False
        last = self._fetched_at
        if last is not None and self._clock() - last < self._interval:
            return False
        try:
            await self.load()
        except KeyUnavailable:
            self._key = key  # keep the key in hand
            return False
        return self._key is not None and verify(self._key, raw, signature)
