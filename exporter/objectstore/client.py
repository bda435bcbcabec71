"""The S3 client: aiobotocore (botocore on aiohttp, so it shares our event loop), set up for
every S3-compatible store, its errors mapped onto ours, every call retried by our policy.

Why aiobotocore: botocore's standard credential chain (env, profiles, container and instance
roles), `AWS_ENDPOINT_URL_S3`, and conditional writes (`IfNoneMatch`/`IfMatch`) come with it,
and it runs on the aiohttp we already use; obstore would bring a second HTTP stack (Rust). It
pins botocore to a narrow range, hence the bounds in pyproject.toml. Since botocore 1.36 the
SDK adds a CRC32 trailer (`aws-chunked`) to uploads, which R2 refuses (501 NotImplemented):
checksums are therefore `when_required`, and we send `Content-MD5` ourselves. botocore's own
retries are off (one attempt): ours count in the run's retries and honour its policy.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import get_session
from botocore import exceptions as bx
from botocore.config import Config

from exporter.archive import PROBE_NAME
from exporter.config import RetryPolicy, StoreTarget, Timeouts
from exporter.errors import (
    ExportError,
    FatalError,
    PermanentError,
    TransientError,
    transient_status,
)
from exporter.http import no_hidden_retries
from exporter.retry import Attempts, RetryHook, with_retries

log = logging.getLogger("exporter.objectstore")
# botocore says "Found credentials in environment variables." at INFO on every run: the
# program's log speaks for itself (and cron mails are read by people).
for _name in ("botocore", "aiobotocore"):
    logging.getLogger(_name).setLevel(logging.WARNING)
T = TypeVar("T")

_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "Unauthorized",
        "AllAccessDisabled",
    }
)
# BadDigest and friends: the body was damaged on the way (what Content-MD5 is for); sending
# it again is the cure.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "BadDigest",
        "IncompleteBody",
        "XAmzContentSHA256Mismatch",
    }
)


def content_md5(data: bytes | memoryview) -> str:
    """The Content-MD5 header's value: the store refuses a body damaged on the way."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")  # noqa: S324


class StoreError(FatalError):
    """The store cannot be used at all (no bucket, credentials refused, a request it refuses
    to implement): the run stops with exit 2."""

    kind = "store"


class StoreDown(StoreError):
    """The store kept failing after every retry the policy allows."""

    kind = "store_down"


class ConditionsIgnored(StoreError):
    """The store accepts `If-None-Match` or `If-Match` and does not honour it: the lock, the
    state and every claim would guard nothing, so the store is not used at all."""

    kind = "store_conditions"


class PreconditionFailed(PermanentError):
    """412: the object is not (or no longer) what a conditional request expected."""

    kind = "precondition_failed"


class NotFound(PermanentError):
    kind = "not_found"


def store_error(exc: BaseException, what: str) -> ExportError | None:
    """The ExportError a botocore or transport failure means, or None for anything else."""
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{what}: {code or 'HTTP ' + str(status)}"
        if err.get("Message"):
            message += f" ({str(err['Message'])[:120]})"
        if code == "NoSuchBucket":
            return StoreError(f"{what}: the bucket does not exist", http_status=status)
        if status == 412 or code == "PreconditionFailed":
            return PreconditionFailed(message, http_status=412)
        if code in _AUTH_CODES or status in (401, 403):
            return StoreError(f"{what}: the store refused the credentials ({code or status})")
        if code in _TRANSIENT_CODES or transient_status(status):
            if status == 501:  # NotImplemented: retrying the same request cannot help
                return StoreError(message, http_status=status)
            return TransientError(message, http_status=status)
        if status == 404 or code in ("NoSuchKey", "NoSuchUpload", "NotFound", "404"):
            return NotFound(message, http_status=404)
        return PermanentError(message, http_status=status)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StoreError("no storage credentials found (AWS_ACCESS_KEY_ID, a profile or a role)")
    if isinstance(exc, bx.CredentialRetrievalError | bx.ProfileNotFound | bx.NoRegionError):
        return StoreError(f"storage credentials: {type(exc).__name__}")
    if isinstance(exc, bx.HTTPClientError | bx.ConnectionError):
        return TransientError(f"{what}: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return TransientError(f"{what}: {type(exc).__name__}")
    return None


class Store:
    """One client for one target; `await store.call(what, fn)` runs `fn()` with retries."""

    def __init__(self, client: Any, target: StoreTarget, policy: RetryPolicy) -> None:
        self.client = client
        self.target = target
        self.bucket = target.bucket
        self.policy = policy
        self.on_retry: RetryHook | None = None

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()` retried on transient failures; a StoreDown when they never stop."""

        async def attempt() -> T:
            try:
                return await fn()
            except Exception as exc:
                mapped = store_error(exc, what)
                if mapped is None:
                    raise
                raise mapped from None

        try:
            return await with_retries(attempt, self.policy, Attempts(what=what), self.on_retry)
        except TransientError as exc:
            raise StoreDown(f"the object store keeps failing: {exc.message}") from None

    async def put(self, key: str, body: bytes, **kw: Any) -> str:
        """PUT `body` under `key` with its Content-MD5; the new ETag."""
        md5 = content_md5(body)
        resp = await self.call(
            f"PUT {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentMD5=md5, **kw
            ),
        )
        return str(resp.get("ETag", ""))

    async def get_bytes(self, key: str) -> tuple[bytes, str] | None:
        """The object's body and ETag, or None if there is none."""

        async def get() -> tuple[bytes, str]:
            resp = await self.client.get_object(Bucket=self.bucket, Key=key)
            async with resp["Body"] as body:
                data = await body.read()
            return data, str(resp.get("ETag", ""))

        try:
            return await self.call(f"GET {key}", get)
        except NotFound:
            return None

    async def delete(self, key: str) -> None:
        await self.call(
            f"DELETE {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key)
        )

    async def list_pages(self, prefix: str) -> AsyncIterator[list[dict[str, Any]]]:
        """ListObjectsV2 pages under `prefix`, in key order, each page retried on its own."""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            page = await self.call(f"LIST {prefix}", partial(self.client.list_objects_v2, **kw))
            yield list(page.get("Contents") or ())
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def check_bucket(self) -> None:
        """A StoreError naming the problem unless the bucket is there and ours to use."""
        try:
            await self.call(
                f"bucket {self.bucket}", lambda: self.client.head_bucket(Bucket=self.bucket)
            )
        except NotFound:
            raise StoreError(f"the bucket {self.bucket!r} does not exist") from None
        except PermanentError as exc:
            raise StoreError(f"the bucket {self.bucket!r} cannot be used: {exc.message}") from None

    @property
    def endpoint(self) -> str:
        """The URL requests go to (an endpoint carries no credentials: target.py refuses
        any user or query in it)."""
        return str(self.client.meta.endpoint_url)

    async def check_conditions(self) -> None:
        """ConditionsIgnored unless the store refuses the conditional PUTs it must refuse: a
        new key of our own is written, then written again with `If-None-Match: *` and with
        `If-Match` an ETag it cannot have (each must be a 412), then deleted: four requests."""
        key = self.target.key(f"{PROBE_PREFIX}{secrets.token_hex(8)}")
        await self.put(key, PROBE_BODY)
        ignored: list[str] = []
        try:
            for header, cond in (
                ("If-None-Match", {"IfNoneMatch": "*"}),
                ("If-Match", {"IfMatch": _NO_SUCH_ETAG}),
            ):
                try:
                    await self.put(key, PROBE_BODY, **cond)
                except PreconditionFailed:
                    continue
                ignored.append(header)
        except StoreError as exc:
            if exc.http_status != 501:
                raise
            raise ConditionsIgnored(
                f"the object store at {self.endpoint} does not implement conditional writes "
                f"(NotImplemented to If-None-Match or If-Match): the lock cannot work there"
            ) from None
        finally:
            await self._remove_probe(key)
        if ignored:
            raise ConditionsIgnored(
                f"the object store at {self.endpoint} ignores {' and '.join(ignored)} on PUT "
                f"(a conditional write that must be refused was accepted): the lock and the "
                f"state would guard nothing there"
            )

    async def _remove_probe(self, key: str) -> None:
        """Delete the probe; one left behind (the store down, a kill) is harmless."""
        try:
            await self.delete(key)
        except ExportError as exc:
            log.warning("the probe object %s could not be removed: %s", key, exc.message)


# A key of the program's own (".rtk-export*": verify never calls it untracked), new for every
# check, so that two runs checking at once never touch each other's.
PROBE_PREFIX = PROBE_NAME
PROBE_BODY = b"rtk-export: a check that this store honours conditional writes; safe to delete\n"
_NO_SUCH_ETAG = '"00000000000000000000000000000000"'


class _NoHiddenResends(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's aiohttp sessions, without aiohttp's silent re-send of a request whose
    kept-alive connection was closed: every attempt is one of ours, counted and paced."""

    async def _get_session(self, proxy_url: Any) -> Any:
        return no_hidden_retries(await super()._get_session(proxy_url))


def client_config(target: StoreTarget, timeouts: Timeouts, connections: int) -> Config:
    return AioConfig(
        http_session_cls=_NoHiddenResends,
        region_name=target.region,
        # R2 refuses aws-chunked bodies with a CRC32 trailer: checksums only when an
        # operation requires one (we send Content-MD5 on every PUT ourselves).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # A custom endpoint is addressed ENDPOINT/BUCKET/KEY: bucket names with dots, MinIO,
        # R2 and loopback endpoints all work so; AWS itself keeps its default.
        s3={"addressing_style": "path" if target.endpoint else "auto"},
        retries={"total_max_attempts": 1, "mode": "standard"},  # one attempt: ours retry
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        max_pool_connections=connections,
        user_agent_extra="rtk-export",
    )


@asynccontextmanager
async def open_store(
    target: StoreTarget, policy: RetryPolicy, timeouts: Timeouts, connections: int
) -> AsyncIterator[Store]:
    """A Store whose client lives for the block. Credentials come from botocore's chain and
    go to the endpoint alone: this client is the only one that signs with them."""
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=target.endpoint,
        config=client_config(target, timeouts, connections),
    ) as client:
        yield Store(client, target, policy)
