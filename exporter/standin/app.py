"""The aiohttp application: the gate every request passes (record, script, rate limit, auth,
faults), the sessions API routes and the presigned downloads."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from exporter.standin.media import ATTACHMENT_PREFIX, RECORDING_PREFIX, MediaRoutes
from exporter.standin.model import (
    API_FAULTS,
    API_PREFIX,
    DOWNLOAD_FAULTS,
    DOWNLOAD_PREFIX,
    TRANSCRIPT_FORMATS,
    CannedResponse,
    Kind,
    Route,
    parse_time,
    rfc3339,
)
from exporter.standin.state import Headers, RecordedRequest, StandinState
from exporter.standin.webhooks import add_routes as add_webhook_routes


def _s3_error(status: int, code: str, message: str, **extra: str) -> web.Response:
    parts = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message>{parts}<RequestId>STANDIN</RequestId>"
        f"<HostId>c3RhbmRpbg==</HostId></Error>"
    )
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _canned_body(canned: CannedResponse) -> tuple[bytes, str]:
    body = canned.body
    if body is None:
        if canned.status < 400:
            return b"", "application/octet-stream"
        body = {
            "success": False,
            "errors": [
                {"code": 10000 + canned.status, "message": f"Scripted error {canned.status}"}
            ],
            "messages": [],
            "result": None,
        }
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json"


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds; a fraction also as `retry-after-ms`, which clients that
    know it (rtk-export does) prefer."""
    if seconds == int(seconds):
        return {"Retry-After": str(int(seconds))}
    return {"Retry-After": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}


def _route(path: str) -> Route:
    if path.startswith(API_PREFIX + "/"):
        return "api"
    if path.startswith(ATTACHMENT_PREFIX + "/"):
        return "attachment"
    if path.startswith(RECORDING_PREFIX + "/"):
        return "recording"
    return "download" if path.startswith(DOWNLOAD_PREFIX + "/") else "other"


STATE_KEY = web.AppKey("standin_state", StandinState)
RECORD_KEY = web.RequestKey("standin_record", RecordedRequest)
_KIT = API_PREFIX + "/accounts/{account_id}/realtime/kit/{app_id}/sessions"


class _Service:
    def __init__(self, state: StandinState) -> None:
        self.state = state
        self.config = state.config

    # -- shared pieces

    def error(
        self,
        status: int,
        code: int,
        message: str,
        shape: Literal["v4", "rtk"] = "v4",
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        if self.config.error_envelope != "auto":
            shape = self.config.error_envelope
        body: dict[str, Any]
        if shape == "v4":
            body = {
                "success": False,
                "errors": [{"code": code, "message": message}],
                "messages": [],
                "result": None,
            }
        else:
            body = {
                "success": False,
                "error": {"code": status if status >= 400 else 500, "message": message},
            }
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def cut(request: web.Request, *, abort: bool) -> None:
        if request.transport is not None:
            # abort() resets at once; close() first flushes what was written, then says FIN.
            request.transport.abort() if abort else request.transport.close()

    async def drop(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        rec.dropped = True
        self.cut(request, abort=True)
        return web.Response()  # never sent: the transport is gone

    async def stream(
        self,
        request: web.Request,
        rec: RecordedRequest,
        status: int,
        headers: Mapping[str, str],
        chunks: Iterable[bytes],
        length: int,
        *,
        cut_at: int | None = None,
        abort: bool = False,
        stall: float = 0.0,
        trickle: float = 0.0,
    ) -> web.StreamResponse:
        """Sends headers with Content-Length, then the body; `cut_at` ends the connection after
        that many bytes (after `stall` seconds of silence), `trickle` spaces out single bytes."""
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        await resp.prepare(request)
        sent = 0
        for chunk in chunks:
            if cut_at is not None:
                chunk = chunk[: max(0, cut_at - sent)]
            if trickle > 0:
                for i in range(len(chunk)):
                    await resp.write(chunk[i : i + 1])
                    await asyncio.sleep(trickle)
            else:
                await resp.write(chunk)
            sent += len(chunk)
            if cut_at is not None and sent >= cut_at:
                break
        if cut_at is not None:
            await asyncio.sleep(stall)
            self.cut(request, abort=abort)
            return resp
        await resp.write_eof()
        return resp

    async def canned(
        self, request: web.Request, rec: RecordedRequest, canned: CannedResponse
    ) -> web.StreamResponse:
        if canned.action == "drop":
            return await self.drop(request, rec)
        if canned.action == "hang":
            await asyncio.sleep(canned.seconds)
            return await self.drop(request, rec)
        body, ctype = _canned_body(canned)
        if canned.action == "raw":
            if request.transport is not None:
                request.transport.write(body)
            rec.status = int(body.split(b" ", 2)[1]) if body.startswith(b"HTTP/") else None
            self.cut(request, abort=False)
            return web.Response()
        headers = {"Content-Type": ctype, **canned.headers}
        stall = canned.action == "stall"
        return await self.stream(
            request,
            rec,
            canned.status,
            headers,
            [body],
            len(body),
            cut_at=0 if stall else None,  # a stall sends the headers, then nothing
            stall=canned.seconds if stall else 0.0,
            trickle=canned.seconds if canned.action == "trickle" else 0.0,
        )

    # -- the gate every request passes

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        state, now = self.state, time.monotonic()
        path = request.path
        route = _route(path)
        rec = RecordedRequest(
            request.method, path, dict(request.query), Headers(request.headers.items()), now, route
        )
        state.requests.append(rec)
        request[RECORD_KEY] = rec
        retry_after: float | None = None
        if route == "api":
            state.counters.api_requests += 1
            retry_after = state.api_arrival(now)
        elif route == "download":
            state.counters.downloads += 1
        canned = state.next_canned(path)
        if canned is not None:
            state.counters.scripted += 1
            rec.fault = "scripted"
            resp = await self.canned(request, rec, canned)
        elif route == "api" and retry_after is not None:
            rec.fault = "rate_limited"
            resp = self.rate_limited(retry_after)
        else:
            resp = await self.guarded(request, rec, handler)
        raw = canned is not None and canned.action == "raw"  # its status is recorded already
        if not rec.dropped and not raw:
            rec.status = resp.status
            if resp.status == 429 and route == "api":
                state.note_429(resp.headers, time.monotonic())
        return resp

    def rate_limited(self, retry_after: float) -> web.Response:
        limit, window = self.config.rate_limit or (0, 0.0)
        return self.error(
            429,
            10100,
            f"More than {limit} requests per {window:g} seconds reached. "
            "Please wait and consider throttling your request speed",
            headers={
                "Retry-After": str(max(1, math.ceil(retry_after))),
                "Ratelimit-Policy": f'"default";q={limit};w={window:g}',
            },
        )

    async def guarded(
        self, request: web.Request, rec: RecordedRequest, handler: Handler
    ) -> web.StreamResponse:
        if rec.route == "api":
            refused = self.authenticate(request)
            if refused is not None:
                return refused
            fault = self.state.draw_fault(API_FAULTS)
            if self.state.draw("api_slow"):
                self.state.counters.faults["api_slow"] += 1
                await asyncio.sleep(self.config.slow_seconds)
            if fault is not None:
                self.state.counters.faults[fault] += 1
                rec.fault = fault
                return await self.api_fault(request, rec, fault)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if rec.route == "api":
                return self.error(
                    exc.status,
                    7003 if exc.status == 404 else 7001,
                    "No route for the URI" if exc.status == 404 else exc.reason,
                )
            raise

    def authenticate(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.config.token}":
            return self.error(401, 10000, "Authentication error")
        account = request.match_info.get("account_id")
        if account is not None and account != self.config.account_id:
            return self.error(403, 9109, "Unauthorized to access requested resource")
        if self.config.token_lacks_permission:
            return self.error(403, 10000, "Authentication error")
        return None

    async def api_fault(
        self, request: web.Request, rec: RecordedRequest, fault: str
    ) -> web.StreamResponse:
        if fault == "api_drop":
            return await self.drop(request, rec)
        if fault == "api_429":
            return self.error(
                429,
                971,
                "Please wait and consider throttling your request speed",
                headers=retry_after_headers(self.config.retry_after),
            )
        if fault == "api_success_false":
            return self.error(200, 7000, "Internal processing error, please try again")
        if fault == "api_non_json":
            return web.Response(
                text="<!DOCTYPE html><html><head><title>Just a moment...</title>"
                "</head><body>Checking your browser</body></html>",
                content_type="text/html",
            )
        status = self.state.rng.choice((500, 502, 503, 504))
        return self.error(status, 7010, f"Service unavailable ({status}, injected)")

    # -- API routes

    async def export_link(self, request: web.Request) -> web.StreamResponse:
        app_id, sid = request.match_info["app_id"], request.match_info["session_id"]
        kind = request.match_info["kind"]
        spec = self.state.session(app_id, sid)
        if spec is None:
            return self.error(404, 404, "Session not found", "rtk")
        origin = f"{request.scheme}://{request.host}"
        if kind == "chat":
            if not spec.has_chat:
                return self.error(404, 404, "Chat not found for this session", "rtk")
            url, expiry = self.state.presign(origin, app_id, sid, "chat.csv")
            data = {"chat_download_url": url, "chat_download_url_expiry": expiry}
        elif kind == "transcript":
            fmt = request.query.get("format", "CSV").upper()
            if fmt not in TRANSCRIPT_FORMATS:
                return self.error(400, 400, f"Invalid format {fmt!r}", "rtk")
            if not spec.has_transcript:
                return self.error(404, 404, "Transcript not found for this session", "rtk")
            url, expiry = self.state.presign(origin, app_id, sid, f"transcript.{fmt.lower()}")
            data = {
                "sessionId": sid,
                "transcript_download_url": url,
                "transcript_download_url_expiry": expiry,
            }
        else:
            if not spec.has_summary:
                return self.error(404, 404, "Summary not found for this session", "rtk")
            url, expiry = self.state.presign(origin, app_id, sid, "summary.txt")
            data = {"sessionId": sid, "summaryDownloadUrl": url, "summaryDownloadUrlExpiry": expiry}
        return web.json_response({"success": True, "data": data})

    async def session_details(self, request: web.Request) -> web.StreamResponse:
        spec = self.state.session(request.match_info["app_id"], request.match_info["session_id"])
        if spec is None:
            return self.error(404, 404, "Session not found", "rtk")
        self.state.media.recordings_of(spec.app_id, spec.session_id)
        breakouts = request.query.get("include_breakout_rooms", "false").lower() == "true"
        return web.json_response(
            {
                "success": True,
                "data": spec.to_json(self.state.organization_id, with_breakouts=breakouts),
            }
        )

    async def list_sessions(self, request: web.Request) -> web.StreamResponse:
        app_id, q = request.match_info["app_id"], request.query
        if not self.config.accept_any and app_id not in self.state.top_level:
            return self.error(404, 404, "App not found", "rtk")
        try:
            since = parse_time(q["start_time"]) if "start_time" in q else None
            until = parse_time(q["end_time"]) if "end_time" in q else None
            page_no = int(q.get("page_no", "1"))
            per_page = int(q.get("per_page", str(self.config.default_per_page)))
        except ValueError as exc:
            return self.error(400, 400, f"Invalid query: {exc}", "rtk")
        status = q.get("status")
        if page_no < 1 or per_page < 1 or status not in (None, "LIVE", "ENDED"):
            return self.error(400, 400, "Invalid page_no, per_page or status", "rtk")
        if self.config.max_per_page is not None:
            per_page = min(per_page, self.config.max_per_page)
        found = sorted(
            (
                s
                for s in self.state.top_level.get(app_id, ())
                if (since is None or s.started_at >= since)
                and (until is None or s.started_at < until)
                and (status is None or s.status == status)
            ),
            key=lambda s: s.started_at,
            reverse=q.get("sort_order") == "DESC",
        )
        offset = (page_no - 1) * per_page
        page = found[offset : offset + per_page]
        body: dict[str, Any] = {
            "success": True,
            "data": {"sessions": [s.to_json(self.state.organization_id) for s in page]},
        }
        if not self.config.omit_paging:
            # start_offset: the first item's 0-based index; end_offset: one past the last.
            body["paging"] = {
                "start_offset": offset,
                "end_offset": offset + len(page),
                "total_count": len(found),
            }
        return web.json_response(body)

    # -- downloads

    async def download(self, request: web.Request) -> web.StreamResponse:
        state, rec = self.state, request[RECORD_KEY]
        app_id, sid = request.match_info["app_id"], request.match_info["session_id"]
        filename = request.match_info["filename"]
        if "Authorization" in request.headers:
            # S3 refuses a presigned URL that also carries an Authorization header.
            return _s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the "
                "X-Amz-Algorithm query parameter, Signature query string parameter "
                "or the Authorization header should be specified",
            )
        expires_at = state.check_signature(app_id, sid, filename, request.query)
        if expires_at is None:
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        fault = state.draw_fault(DOWNLOAD_FAULTS)
        now = time.time()
        if now >= expires_at or fault == "download_expired":
            if fault == "download_expired":
                state.counters.faults[fault] += 1
                rec.fault = fault
            return _s3_error(
                403,
                "AccessDenied",
                "Request has expired",
                **{
                    "X-Amz-Expires": request.query.get("X-Amz-Expires", ""),
                    "Expires": rfc3339(datetime.fromtimestamp(expires_at, UTC)),
                    "ServerTime": rfc3339(datetime.fromtimestamp(now, UTC)),
                },
            )
        stem, _, ext = filename.partition(".")
        if stem not in ("chat", "transcript", "summary"):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        kind: Kind = (
            "chat" if stem == "chat" else "transcript" if stem == "transcript" else "summary"
        )
        if state.draw("download_slow"):
            state.counters.faults["download_slow"] += 1
            await asyncio.sleep(self.config.slow_seconds)
        if fault is not None:
            state.counters.faults[fault] += 1
            rec.fault = fault
        if fault == "download_drop":
            return await self.drop(request, rec)
        if fault == "download_5xx":
            if state.rng.random() < 0.5:
                return _s3_error(
                    500, "InternalError", "We encountered an internal error. Please try again."
                )
            return _s3_error(503, "SlowDown", "Please reduce your request rate.")
        length = state.content.size(app_id, sid, kind, ext)
        ctype = {
            "csv": "text/csv",
            "json": "application/json",
            "vtt": "text/vtt",
            "srt": "application/x-subrip",
        }.get(ext, "text/plain")
        headers = {"Content-Type": f"{ctype}; charset=utf-8", "x-amz-request-id": "STANDIN"}
        chunks = state.content.chunks(app_id, sid, kind, ext)
        if fault == "download_drop_mid_body":
            return await self.stream(
                request, rec, 200, headers, chunks, length, cut_at=length // 2, abort=True
            )
        if fault == "download_truncate":
            return await self.stream(
                request, rec, 200, headers, chunks, length, cut_at=length - max(1, length // 10)
            )
        if fault == "download_stall":
            return await self.stream(
                request,
                rec,
                200,
                headers,
                chunks,
                length,
                cut_at=length // 2,
                stall=self.config.stall_seconds,
            )
        resp = await self.stream(request, rec, 200, headers, chunks, length)
        state.counters.downloads_completed += 1
        return resp


def build_app(state: StandinState) -> web.Application:
    service = _Service(state)
    app = web.Application(middlewares=[service.middleware])
    app[STATE_KEY] = state
    app.router.add_get(_KIT, service.list_sessions, allow_head=False)
    app.router.add_get(_KIT + "/{session_id}", service.session_details, allow_head=False)
    app.router.add_get(
        _KIT + "/{session_id}/{kind:chat|transcript|summary}", service.export_link, allow_head=False
    )
    app.router.add_get(
        DOWNLOAD_PREFIX + "/{app_id}/{session_id}/{filename}", service.download, allow_head=False
    )
    media = MediaRoutes(state)
    recordings = API_PREFIX + "/accounts/{account_id}/realtime/kit/{app_id}/recordings"
    app.router.add_get(recordings, media.list_recordings, allow_head=False)
    app.router.add_get(recordings + "/{recording_id}", media.one_recording, allow_head=False)
    app.router.add_get(
        ATTACHMENT_PREFIX + "/{app_id}/{session_id}/{name}", media.attachment, allow_head=False
    )
    app.router.add_get(
        RECORDING_PREFIX + "/{app_id}/{name}", media.recording_file, allow_head=False
    )
    add_webhook_routes(app, state, API_PREFIX + "/accounts/{account_id}/realtime/kit/{app_id}")
    return app
