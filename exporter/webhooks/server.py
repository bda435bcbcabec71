"""serve's HTTP face (aiohttp.web): the webhook route and its status codes, health, readiness
and metrics. What a delivery means is the receiver's business (exporter.webhooks.receive)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("exporter.serve")

PATH = "/webhooks/realtimekit"
MAX_BODY = 1024 * 1024  # 1 MiB: refused (413) before it is read whole
RETRY_AFTER = "10"

# (raw body, headers) -> the HTTP status to answer (200, 400, 401 or 503)
Accept = Callable[[bytes, "web.Request"], Awaitable[int]]


class Server:
    """The routes; `closing` (shutdown) and `ready()` (a key, a writable inbox) are set by
    serve."""

    def __init__(
        self,
        accept: Accept,
        ready: Callable[[], Awaitable[bool]],
        metrics: Callable[[], Awaitable[bytes]],
    ) -> None:
        self._accept = accept
        self._ready = ready
        self._metrics = metrics
        self.closing = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._webhook)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        return app

    async def _webhook(self, request: web.Request) -> web.Response:
        if self.closing:
            return _unavailable("shutting down")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="body over 1 MiB\n")
        try:
            raw = await request.read()  # aiohttp stops at client_max_size: 413 for chunked too
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="body over 1 MiB\n")
        status = await self._accept(raw, request)
        if status == 503:
            return _unavailable("the delivery cannot be kept now")
        return web.Response(status=status, text=_TEXT.get(status, "") + "\n")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.closing:
            return _unavailable("shutting down")
        if not await self._ready():
            return _unavailable("not ready")
        return web.Response(text="ready\n")

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body = await self._metrics()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")


_TEXT = {200: "ok", 400: "missing signature", 401: "invalid signature"}


def _unavailable(why: str) -> web.Response:
    return web.Response(status=503, text=why + "\n", headers={"Retry-After": RETRY_AFTER})
