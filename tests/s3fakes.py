"""A real S3 on loopback for the object-storage tests: moto's server (one per session, a fresh
bucket per test), and a checking proxy of our own in front of it that refuses what R2 refuses
(aws-chunked bodies, checksum trailers), checks Content-MD5 (moto does not), refuses unknown
access keys, and on request answers 503 SlowDown, drops connections or strips headers."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

ACCESS_KEY = "AKIATESTSTORAGEKEY01"
SECRET_KEY = "storage-secret-9d1e7c3b5a2f4e6d8c0b"
REGION = "us-east-1"
_BUCKETS = itertools.count()


def store_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The storage credentials and endpoint, as the environment holds them."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": endpoint,
        # Never the machine's own config or profiles.
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(extra)
    return env


def new_bucket_name() -> str:
    return f"bucket-{next(_BUCKETS):04d}"


@dataclass
class ProxyRules:
    """What the proxy does; tests change it while it runs."""

    slow_down: int = 0  # answer the next N requests with 503 SlowDown
    drop: int = 0  # drop the connection of the next N requests (no answer)
    fail_all: bool = False  # 503 for everything (a store that stays down)
    # Headers dropped before forwarding (a store that accepts and ignores conditions:
    # {"If-None-Match", "If-Match"}); moto checks no signature, so the request still goes.
    strip: frozenset[str] = frozenset()
    unimplemented: frozenset[str] = frozenset()  # 501 NotImplemented to requests with these
    seen: list[dict[str, Any]] = field(default_factory=list)  # method, path, headers
    refused: list[str] = field(default_factory=list)  # why requests were refused


class CheckingProxy:
    """aiohttp on 127.0.0.1:0 forwarding to `upstream` after R2's and S3's own checks."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules = ProxyRules()
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()}
        self.rules.seen.append(
            {"method": request.method, "path": request.path_qs, "headers": headers}
        )
        lower = {k.lower(): v for k, v in headers.items()}
        if self.rules.drop > 0:
            self.rules.drop -= 1
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPServiceUnavailable()
        if self.rules.fail_all or self.rules.slow_down > 0:
            self.rules.slow_down = max(0, self.rules.slow_down - 1)
            return _error(503, "SlowDown", "Please reduce your request rate.")
        auth = lower.get("authorization", "")
        if f"Credential={ACCESS_KEY}/" not in auth:
            self.rules.refused.append("credentials")
            return _error(
                403, "InvalidAccessKeyId", "The access key ID you provided does not exist."
            )
        if any(h.lower() in lower for h in self.rules.unimplemented):
            self.rules.refused.append("unimplemented header")
            return _error(501, "NotImplemented", "A header you provided is not implemented.")
        # R2: "NotImplemented: STREAMING-UNSIGNED-PAYLOAD-TRAILER not implemented".
        if (
            "aws-chunked" in lower.get("content-encoding", "")
            or "x-amz-trailer" in lower
            or lower.get("x-amz-content-sha256", "").startswith("STREAMING")
            or any(k.startswith("x-amz-checksum-") for k in lower)
            or "x-amz-sdk-checksum-algorithm" in lower
        ):
            self.rules.refused.append("checksum trailer")
            return _error(501, "NotImplemented", "Header x-amz-trailer is not implemented.")
        if request.method == "PUT" and body and "x-amz-copy-source" not in lower:
            md5 = lower.get("content-md5")
            if md5 is None:
                self.rules.refused.append("no content-md5")
                return _error(400, "MissingContentMD5", "Missing required header: Content-MD5.")
            if base64.b64encode(hashlib.md5(body).digest()).decode() != md5:
                self.rules.refused.append("bad content-md5")
                return _error(400, "BadDigest", "The Content-MD5 you specified did not match.")
        assert self._session is not None
        dropped = {"host", "content-length"} | {h.lower() for h in self.rules.strip}
        fwd = {k: v for k, v in headers.items() if k.lower() not in dropped}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=fwd, data=io.BytesIO(body)
        ) as resp:
            data = await resp.read()
            out = {
                k: v
                for k, v in resp.headers.items()
                if k.lower()
                not in ("content-length", "transfer-encoding", "connection", "content-encoding")
            }
            return web.Response(status=resp.status, body=data, headers=out)


def _error(status: int, code: str, message: str) -> web.Response:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=xml, content_type="application/xml")


@asynccontextmanager
async def checking_proxy(upstream: str) -> AsyncIterator[CheckingProxy]:
    proxy = CheckingProxy(upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        proxy._session = session
        try:
            yield proxy
        finally:
            await runner.cleanup()
