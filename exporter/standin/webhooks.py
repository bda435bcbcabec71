"""What RealtimeKit does with webhooks: an RSA key pair and `.well-known/webhooks.json`, the
registration routes, and delivery of signed events (the documented payloads) to registered
URLs, retrying 5xx and network errors, never a 4xx, with a record of every attempt."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from exporter.standin.model import meeting_id, rfc3339

if TYPE_CHECKING:
    from exporter.standin.state import StandinState

WELL_KNOWN = "/.well-known/webhooks.json"
CONTROL_PREFIX = "/_standin"  # the stand-in's own control routes (not RealtimeKit's)
EVENTS = (
    "meeting.started",
    "meeting.ended",
    "meeting.participantJoined",
    "meeting.participantLeft",
    "meeting.chatSynced",
    "recording.statusUpdate",
    "livestreaming.statusUpdate",
    "meeting.transcript",
    "meeting.summary",
)
FAKE_STREAM_KEY_PREFIX = "standin-stream-key-"  # a stream key: a secret the receiver must drop


class Signer:
    """The stand-in's RSA key pair, made on first use (a test that never signs pays nothing)."""

    def __init__(self) -> None:
        self._key: rsa.RSAPrivateKey | None = None
        self.generation = 0  # how many keys this stand-in has had

    @property
    def key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            self.rotate()
        assert self._key is not None
        return self._key

    def rotate(self) -> None:
        """A new key pair: later signatures, and the well-known answer, use it."""
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.generation += 1

    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def sign(self, raw: bytes) -> str:
        """`rtk-signature`: base64 RSASSA-PKCS1-v1_5 with SHA-256 over the raw bytes."""
        sig = self.key.sign(raw, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(sig).decode("ascii")


@dataclass
class Webhook:
    id: str
    name: str
    url: str
    events: list[str]
    enabled: bool
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "events": list(self.events),
            "enabled": self.enabled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class Attempt:
    """One POST of a delivery: where, what came back (None: a network error), which uuid."""

    url: str
    status: int | None
    uuid: str
    event: str | None
    webhook_id: str
    number: int  # 1 for the first attempt of this delivery
    error: str | None = None


@dataclass
class Delivery:
    """One event to one webhook, with its attempts."""

    webhook_id: str
    url: str
    uuid: str
    event: str | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        status = self.attempts[-1].status if self.attempts else None
        return status is not None and 200 <= status < 300


class Webhooks:
    """Registered webhooks per app, the key pair, and delivery; `attempts` records each POST."""

    def __init__(self, state: StandinState) -> None:
        self.state = state
        self.config = state.config
        self.signer = Signer()
        self.registered: dict[str, dict[str, Webhook]] = {}  # app id -> webhook id -> webhook
        self.attempts: list[Attempt] = []
        self._session: aiohttp.ClientSession | None = None

    # -- registration (the routes' logic)

    def of_app(self, app_id: str) -> list[Webhook]:
        return list(self.registered.get(app_id, {}).values())

    def find(self, app_id: str, webhook_id: str) -> Webhook | None:
        return self.registered.get(app_id, {}).get(webhook_id)

    def create(self, app_id: str, body: Mapping[str, Any]) -> Webhook:
        """A new webhook from a POST body; ValueError naming the bad field."""
        now = rfc3339(datetime.now(UTC))
        hook = Webhook(str(uuid.uuid4()), "", "", [], True, now, now)
        self._apply(hook, body, whole=True)
        self.registered.setdefault(app_id, {})[hook.id] = hook
        return hook

    def update(self, hook: Webhook, body: Mapping[str, Any], *, whole: bool) -> None:
        """PUT (`whole`: name, url and events required) or PATCH (any of them)."""
        self._apply(hook, body, whole=whole)
        hook.updated_at = rfc3339(datetime.now(UTC))

    @staticmethod
    def _apply(hook: Webhook, body: Mapping[str, Any], *, whole: bool) -> None:
        for key in ("name", "url", "events"):
            if whole and key not in body:
                raise ValueError(f"'{key}' is required")
        name, url, events = body.get("name"), body.get("url"), body.get("events")
        enabled = body.get("enabled")
        if "name" in body and (not isinstance(name, str) or not name.strip()):
            raise ValueError("'name' must be a non-empty string")
        if "url" in body and (
            not isinstance(url, str) or not url.startswith(("https://", "http://"))
        ):
            raise ValueError("'url' must be an http(s) URL")
        if "events" in body and (
            not isinstance(events, list) or not events or any(e not in EVENTS for e in events)
        ):
            raise ValueError(f"'events' must be a non-empty list of: {', '.join(EVENTS)}")
        if "enabled" in body and not isinstance(enabled, bool):
            raise ValueError("'enabled' must be a boolean")
        if isinstance(name, str):
            hook.name = name
        if isinstance(url, str):
            hook.url = url
        if isinstance(events, list):
            hook.events = list(dict.fromkeys(events))
        if isinstance(enabled, bool):
            hook.enabled = enabled

    def delete(self, app_id: str, webhook_id: str) -> Webhook | None:
        return self.registered.get(app_id, {}).pop(webhook_id, None)

    # -- payloads

    def session_payloads(
        self, app_id: str, session_id: str, *, livestream: bool = False
    ) -> list[dict[str, Any]]:
        """The documented events of a session that has ended, in the order RealtimeKit sends
        them: started, ended, chatSynced, transcript, summary, one recording.statusUpdate per
        recording (URLs minted now, as the API's routes would); livestreaming if asked."""
        spec = self.state.session(app_id, session_id)
        if spec is None:
            raise KeyError(f"the stand-in knows no session {app_id}/{session_id}")
        origin, state = self.state.content.origin, self.state
        start = spec.started_at
        end = start + timedelta(minutes=spec.minutes)
        organizer = {"id": app_id, "name": "Stand-in organization"}  # the app, as inferred
        meeting = {
            "id": meeting_id(app_id, session_id),
            "sessionId": session_id,
            "title": spec.title,
            "roomName": f"room-{session_id[:8]}",
            "status": "LIVE",  # the docs' examples say LIVE even once it ended
            "createdAt": rfc3339(start - timedelta(minutes=2)),
            "startedAt": rfc3339(start),
            "organizedBy": organizer,
        }
        ended = {**meeting, "endedAt": rfc3339(end)}
        out: list[dict[str, Any]] = [
            {"event": "meeting.started", "meeting": meeting},
            {"event": "meeting.ended", "meeting": ended, "reason": "ALL_PARTICIPANTS_LEFT"},
        ]
        if spec.has_chat:
            url, expiry = state.presign(origin, app_id, session_id, "chat.csv")
            out.append(
                {
                    "event": "meeting.chatSynced",
                    "title": spec.title,
                    "createdAt": meeting["createdAt"],
                    "startedAt": meeting["startedAt"],
                    "endedAt": rfc3339(end),
                    "meetingId": meeting["id"],
                    "sessionId": session_id,
                    "chatDownloadUrl": url,
                    "chatDownloadUrlExpiry": expiry,
                    "organizedBy": organizer,
                }
            )
        for kind, name, present in (
            ("transcript", "transcript.csv", spec.has_transcript),
            ("summary", "summary.txt", spec.has_summary),
        ):
            if present:
                url, expiry = state.presign(origin, app_id, session_id, name)
                out.append(
                    {
                        "event": f"meeting.{kind}",
                        "meeting": ended,
                        f"{kind}DownloadUrl": url,
                        f"{kind}DownloadUrlExpiry": expiry,
                    }
                )
        for rec in state.media.recordings_of(app_id, session_id):
            recording: dict[str, Any] = {
                "id": rec.id,
                "recordingId": rec.id,
                "status": rec.status,
                "meetingId": meeting["id"],
                "organizationId": app_id,
                "roomUUID": session_id,
                "startedTime": rfc3339(start),
            }
            if rec.status == "UPLOADED":
                url, expiry = state.media.presign(origin, rec, state.secret)
                recording.update(
                    downloadUrl=url,
                    downloadUrlExpiry=expiry,
                    stoppedTime=rfc3339(end),
                    fileSize=str(rec.size),  # a string, as in the docs' example
                    outputFileName=f"{rec.id}.mp4",
                    recordingDuration=round(spec.minutes * 60),
                )
            out.append(
                {"event": "recording.statusUpdate", "recording": recording, "meeting": ended}
            )
        if livestream:
            out.append(livestream_payload(meeting))
        return out

    # -- delivery

    async def deliver_session(
        self, app_id: str, session_id: str, *, livestream: bool = False
    ) -> list[Delivery]:
        """Every event of the session to every enabled webhook of the app that takes it."""
        found = []
        for payload in self.session_payloads(app_id, session_id, livestream=livestream):
            found.extend(await self.deliver(app_id, payload))
        return found

    async def deliver(
        self, app_id: str, payload: Mapping[str, Any], *, delivery_uuid: str | None = None
    ) -> list[Delivery]:
        """`payload` serialized once, signed, POSTed to each enabled webhook of the app whose
        events include it; `delivery_uuid` replays an rtk-uuid (else a fresh uuid4 each)."""
        raw = json.dumps(payload, separators=(",", ":")).encode()
        event = payload.get("event")
        hooks = [h for h in self.of_app(app_id) if h.enabled and event in h.events]
        return [
            await self.send(hook, raw, event=str(event), delivery_uuid=delivery_uuid)
            for hook in hooks
        ]

    async def deliver_raw(
        self,
        app_id: str,
        raw: bytes,
        *,
        headers: Mapping[str, str | None] | None = None,
        sign: bool = True,
        delivery_uuid: str | None = None,
    ) -> list[Delivery]:
        """Hostile forms: `raw` bytes as they are (signed unless `sign` is False) to every
        enabled webhook of the app; `headers` are added last (None values drop a header)."""
        return [
            await self.send(
                hook, raw, headers=headers, sign=sign, delivery_uuid=delivery_uuid, event=None
            )
            for hook in self.of_app(app_id)
            if hook.enabled
        ]

    async def send(
        self,
        hook: Webhook,
        raw: bytes,
        *,
        event: str | None,
        headers: Mapping[str, str | None] | None = None,
        sign: bool = True,
        delivery_uuid: str | None = None,
    ) -> Delivery:
        """One delivery: up to `webhook_attempts` POSTs, the same rtk-uuid on each, retried
        after a 5xx or a network error (doubling back-off), never after any other status."""
        delivery = Delivery(hook.id, hook.url, delivery_uuid or str(uuid.uuid4()), event)
        sent: dict[str, str] = {
            "Content-Type": "application/json",
            "rtk-uuid": delivery.uuid,
            "rtk-webhook-id": hook.id,
        }
        if sign:
            sent["rtk-signature"] = self.signer.sign(raw)
        for name, value in (headers or {}).items():
            sent = {k: v for k, v in sent.items() if k.lower() != name.lower()}
            if value is not None:
                sent[name] = value
        delay = self.config.webhook_backoff
        for number in range(1, self.config.webhook_attempts + 1):
            attempt = await self._post(hook, raw, sent, delivery, number)
            delivery.attempts.append(attempt)
            self.attempts.append(attempt)
            if attempt.status is not None and attempt.status < 500:
                break  # 2xx delivered; any other status below 500 is failed for good
            if number < self.config.webhook_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.webhook_backoff_max)
        return delivery

    async def _post(
        self, hook: Webhook, raw: bytes, headers: dict[str, str], delivery: Delivery, number: int
    ) -> Attempt:
        session = self._client()
        try:
            async with session.post(
                hook.url, data=raw, headers=headers, allow_redirects=False
            ) as resp:
                await resp.read()
                status: int | None = resp.status
                error = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, error = None, type(exc).__name__
        return Attempt(hook.url, status, delivery.uuid, delivery.event, hook.id, number, error)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout),
                skip_auto_headers=("Content-Type",),
            )
            if hasattr(session, "_retry_connection"):
                # aiohttp would re-send silently on a closed kept-alive connection: an
                # attempt the record would not show.
                session._retry_connection = False
            self._session = session
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def livestream_payload(meeting: Mapping[str, Any]) -> dict[str, Any]:
    """A livestreaming.statusUpdate as documented, with a fresh fake `streamKey`."""
    inner = {k: meeting[k] for k in ("id", "title", "createdAt", "status", "organizedBy")}
    return {
        "event": "livestreaming.statusUpdate",
        "streamId": str(uuid.uuid4()),
        "status": "LIVE",
        "manualIngest": False,
        "playbackUrl": "https://stream.invalid/live.m3u8",
        "ingestServer": "rtmps://stream.invalid/live",
        "streamKey": FAKE_STREAM_KEY_PREFIX + secrets.token_hex(12),
        "meeting": inner,
    }


def _error(status: int, message: str) -> web.Response:
    body = {"success": False, "error": {"code": status, "message": message}}
    return web.json_response(body, status=status)


class WebhookRoutes:
    """The registration routes (behind the API gate: token, counted) and the well-known key."""

    def __init__(self, state: StandinState) -> None:
        self.hooks = state.webhooks

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            doc = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise ValueError("the body is not JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("the body is not a JSON object")
        return doc

    async def well_known(self, request: web.Request) -> web.StreamResponse:
        data = {"publicKey": self.hooks.signer.public_pem()}
        return web.json_response({"success": True, "data": data, "message": ""})

    async def create(self, request: web.Request) -> web.StreamResponse:
        try:
            hook = self.hooks.create(request.match_info["app_id"], await self._body(request))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response({"success": True, "data": hook.to_json()}, status=201)

    async def list(self, request: web.Request) -> web.StreamResponse:
        hooks = self.hooks.of_app(request.match_info["app_id"])
        return web.json_response({"success": True, "data": [h.to_json() for h in hooks]})

    async def one(self, request: web.Request) -> web.StreamResponse:
        app_id, webhook_id = request.match_info["app_id"], request.match_info["webhook_id"]
        if request.method == "DELETE":
            gone = self.hooks.delete(app_id, webhook_id)
            if gone is None:
                return _error(404, "Webhook not found")
            return web.json_response({"success": True, "data": gone.to_json()})
        hook = self.hooks.find(app_id, webhook_id)
        if hook is None:
            return _error(404, "Webhook not found")
        if request.method in ("PUT", "PATCH"):
            try:
                self.hooks.update(hook, await self._body(request), whole=request.method == "PUT")
            except ValueError as exc:
                return _error(400, str(exc))
        return web.json_response({"success": True, "data": hook.to_json()})

    async def control_deliver(self, request: web.Request) -> web.StreamResponse:
        """POST /_standin/webhooks/deliver {app_id, session_id[, livestream]}: for a stand-in
        run as a process; answers each delivery's attempts."""
        try:
            body = await self._body(request)
            app_id, session_id = str(body["app_id"]), str(body["session_id"])
        except (ValueError, KeyError):
            return _error(400, "expected {app_id, session_id}")
        try:
            found = await self.hooks.deliver_session(
                app_id, session_id, livestream=bool(body.get("livestream"))
            )
        except KeyError as exc:
            return _error(404, str(exc))
        return web.json_response(
            [
                {
                    "event": d.event,
                    "uuid": d.uuid,
                    "webhook_id": d.webhook_id,
                    "statuses": [a.status for a in d.attempts],
                }
                for d in found
            ]
        )


def add_routes(app: web.Application, state: StandinState, kit: str) -> None:
    """`kit`: the path of an app's RealtimeKit API (…/realtime/kit/{app_id})."""
    routes = WebhookRoutes(state)
    app.router.add_get(WELL_KNOWN, routes.well_known, allow_head=False)
    app.router.add_post(kit + "/webhooks", routes.create)
    app.router.add_get(kit + "/webhooks", routes.list, allow_head=False)
    one = kit + "/webhooks/{webhook_id}"
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        app.router.add_route(method, one, routes.one)
    app.router.add_post(CONTROL_PREFIX + "/webhooks/deliver", routes.control_deliver)
