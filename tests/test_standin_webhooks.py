"""The stand-in's webhooks over real HTTP on 127.0.0.1: its key, the registration routes, and
signed deliveries to a receiver in the test that answers scripted statuses."""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from exporter.standin import (
    FAKE_STREAM_KEY_PREFIX,
    WELL_KNOWN,
    SessionSpec,
    StandinServer,
    config_from_args,
    standin_in_thread,
)
from exporter.webhooks.events import parse_event
from tests.helpers import ACCOUNT, TOKEN, standin_config

StandinFactory = Callable[..., AbstractAsyncContextManager[StandinServer]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "app-hooks"
SID = "sess-0001"
START = datetime(2026, 6, 3, 10, 0, tzinfo=UTC)
ALL_EVENTS = [
    "meeting.started",
    "meeting.ended",
    "meeting.chatSynced",
    "meeting.transcript",
    "meeting.summary",
    "recording.statusUpdate",
    "livestreaming.statusUpdate",
]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (200 once they run out)."""

    url: str = ""
    statuses: deque[int] = field(default_factory=deque)
    got: list[Received] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.popleft() if self.statuses else 200)


@asynccontextmanager
async def receiver(*statuses: int) -> AsyncIterator[Receiver]:
    rec = Receiver(statuses=deque(statuses))
    app = web.Application()
    app.router.add_post("/webhooks/realtimekit", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/webhooks/realtimekit"
    try:
        yield rec
    finally:
        await runner.cleanup()


def _hooks_url(server: StandinServer, app_id: str = APP, webhook_id: str | None = None) -> str:
    url = f"{server.base_url}/accounts/{ACCOUNT}/realtime/kit/{app_id}/webhooks"
    return f"{url}/{webhook_id}" if webhook_id else url


async def _register(
    server: StandinServer, url: str, events: list[str], app_id: str = APP, **extra: Any
) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.post(
            _hooks_url(server, app_id), json={"name": "t", "url": url, "events": events, **extra}
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        data: dict[str, Any] = (await resp.json())["data"]
        return data


async def _public_key(server: StandinServer) -> rsa.RSAPublicKey:
    async with aiohttp.ClientSession() as http, http.get(server.key_url) as resp:
        doc = await resp.json()
    assert doc["success"] is True and doc["message"] == ""
    key = serialization.load_pem_public_key(doc["data"]["publicKey"].encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _verifies(key: rsa.RSAPublicKey, got: Received) -> bool:
    try:
        sig = base64.b64decode(got.headers["rtk-signature"], validate=True)
        key.verify(sig, got.body, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, KeyError, ValueError):
        return False
    return True


def _fast(**kw: Any) -> Any:
    kw.setdefault("webhook_backoff", 0.0)
    kw.setdefault("sessions", (SessionSpec(APP, SID, START),))
    return kw


# -- the key


async def test_the_well_known_key_verifies_deliveries_and_rotates(
    standin: StandinFactory,
) -> None:
    """Each delivery is signed over its raw bytes with the key the well-known URL serves;
    after a rotation the URL serves the new key, and the old one no longer verifies."""
    async with standin(**_fast()) as server, receiver() as rec:
        await _register(server, rec.url, ["meeting.started"])
        key = await _public_key(server)
        await server.deliver(APP, {"event": "meeting.started", "meeting": {"sessionId": SID}})
        assert _verifies(key, rec.got[0])
        server.webhooks.signer.rotate()
        new = await _public_key(server)
        await server.deliver(APP, {"event": "meeting.started", "meeting": {"sessionId": SID}})
        assert _verifies(new, rec.got[1]) and not _verifies(key, rec.got[1])
        assert server.state.counters.api_requests == 1  # the registration only


# -- registration


async def test_registration_routes_answer_as_the_api_notes_say(standin: StandinFactory) -> None:
    """POST 201 with the webhook; GET lists and reads one; PUT replaces (all fields needed);
    PATCH changes one field; DELETE removes; each an API request, token checked."""
    async with standin() as server, aiohttp.ClientSession(headers=AUTH) as http:
        created = await _register(server, "https://hooks.example.invalid/a", ["meeting.ended"])
        assert set(created) == {"id", "name", "url", "events", "enabled", "created_at",
                                "updated_at"}  # fmt: skip
        assert created["enabled"] is True and created["events"] == ["meeting.ended"]
        one = _hooks_url(server, webhook_id=created["id"])
        async with http.get(_hooks_url(server)) as resp:
            assert [w["id"] for w in (await resp.json())["data"]] == [created["id"]]
        async with http.put(one, json={"name": "n2"}) as resp:
            assert resp.status == 400 and "required" in (await resp.json())["error"]["message"]
        body = {
            "name": "n2",
            "url": "https://hooks.example.invalid/b",
            "events": ["meeting.summary"],
        }
        async with http.put(one, json=body) as resp:
            assert (await resp.json())["data"]["url"].endswith("/b")
        async with http.patch(one, json={"enabled": False}) as resp:
            data = (await resp.json())["data"]
            assert data["enabled"] is False and data["name"] == "n2"
        async with http.get(one) as resp:
            assert (await resp.json())["data"]["events"] == ["meeting.summary"]
        async with http.delete(one) as resp:
            assert resp.status == 200
        async with http.get(one) as resp:
            assert resp.status == 404
        async with http.get(_hooks_url(server)) as resp:
            assert (await resp.json())["data"] == []
        assert server.state.counters.api_requests == 9


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://h.example.invalid/", "events": ["meeting.ended"]},
        {"name": "x", "url": "ftp://h/", "events": ["meeting.ended"]},
        {"name": "x", "url": "https://h.example.invalid/", "events": []},
        {"name": "x", "url": "https://h.example.invalid/", "events": ["meeting.nope"]},
        {"name": "x", "url": "https://h.example.invalid/", "events": ["meeting.ended"],
         "enabled": "yes"},
        ["not", "an", "object"],
    ],
)  # fmt: skip
async def test_a_bad_registration_is_a_400_naming_the_field(
    standin: StandinFactory, body: object
) -> None:
    async with (
        standin() as server,
        aiohttp.ClientSession(headers=AUTH) as http,
        http.post(_hooks_url(server), json=body) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["success"] is False
        assert server.webhooks.of_app(APP) == []


async def test_registration_needs_the_token_and_the_account(standin: StandinFactory) -> None:
    """No token: 401; another account: 403; nothing registered."""
    async with standin() as server, aiohttp.ClientSession() as http:
        body = {"name": "x", "url": "https://h.example.invalid/", "events": ["meeting.ended"]}
        async with http.post(_hooks_url(server), json=body) as resp:
            assert resp.status == 401
        other = _hooks_url(server).replace(ACCOUNT, "someone-else")
        async with http.post(other, json=body, headers=AUTH) as resp:
            assert resp.status == 403
        assert server.webhooks.of_app(APP) == []


# -- delivery


async def test_a_5xx_is_retried_with_the_same_uuid_until_a_2xx(standin: StandinFactory) -> None:
    """503 then 200: two attempts, one rtk-uuid, and the webhook's id on both."""
    async with standin(**_fast()) as server, receiver(503) as rec:
        hook = await _register(server, rec.url, ["meeting.ended"])
        (delivery,) = await server.deliver(APP, {"event": "meeting.ended"})
        assert [a.status for a in delivery.attempts] == [503, 200] and delivery.delivered
        assert len({g.headers["rtk-uuid"] for g in rec.got}) == 1
        assert {g.headers["rtk-webhook-id"] for g in rec.got} == {hook["id"]}
        assert [(a.url, a.status, a.uuid) for a in server.webhooks.attempts] == [
            (rec.url, 503, delivery.uuid),
            (rec.url, 200, delivery.uuid),
        ]


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
async def test_a_status_below_500_is_never_retried(standin: StandinFactory, status: int) -> None:
    """A 4xx (or anything else below 500 but not 2xx) fails the delivery for good."""
    async with standin(**_fast()) as server, receiver(status) as rec:
        await _register(server, rec.url, ["meeting.ended"])
        (delivery,) = await server.deliver(APP, {"event": "meeting.ended"})
        assert [a.status for a in delivery.attempts] == [status] and not delivery.delivered
        assert len(rec.got) == 1


async def test_network_errors_are_retried_a_bounded_number_of_times(
    standin: StandinFactory,
) -> None:
    """Nobody listening: `webhook_attempts` attempts, each a network error, then it stops."""
    async with receiver() as gone:
        url = gone.url
    async with standin(**_fast(webhook_attempts=3)) as server:
        await _register(server, url, ["meeting.ended"])
        (delivery,) = await server.deliver(APP, {"event": "meeting.ended"})
        assert [a.status for a in delivery.attempts] == [None, None, None]
        assert all(a.error for a in delivery.attempts) and not delivery.delivered


async def test_only_enabled_webhooks_whose_events_include_it_receive_an_event(
    standin: StandinFactory,
) -> None:
    """Per webhook: its events only; a disabled one nothing; each delivery its own uuid."""
    async with (
        standin(**_fast()) as server,
        receiver() as chat,
        receiver() as both,
        receiver() as off,
    ):
        await _register(server, chat.url, ["meeting.chatSynced"])
        await _register(server, both.url, ["meeting.chatSynced", "meeting.summary"])
        await _register(server, off.url, ALL_EVENTS, enabled=False)
        await _register(server, off.url, ALL_EVENTS, app_id="another-app")
        found = await server.deliver_session(APP, SID)
        assert [json.loads(g.body)["event"] for g in chat.got] == ["meeting.chatSynced"]
        assert [json.loads(g.body)["event"] for g in both.got] == [
            "meeting.chatSynced",
            "meeting.summary",
        ]
        assert off.got == []
        assert len({d.uuid for d in found}) == len(found) == 3


async def test_a_sessions_payloads_are_the_documented_ones_with_working_urls(
    standin: StandinFactory,
) -> None:
    """deliver_session sends started, ended, chatSynced, transcript, summary, recordings
    (UPLOADED with a URL and a string fileSize) and a livestream with a fake stream key;
    the URLs are the stand-in's, already minted, and serve the session's bytes; none of
    it is an API request."""
    config = _fast(recording_statuses=("UPLOADED", "RECORDING"), recording_bytes=4096)
    async with standin(**config) as server, receiver() as rec:
        await _register(server, rec.url, ALL_EVENTS)
        await server.deliver_session(APP, SID, livestream=True)
        docs = [json.loads(g.body) for g in rec.got]
        assert [d["event"] for d in docs] == [
            "meeting.started",
            "meeting.ended",
            "meeting.chatSynced",
            "meeting.transcript",
            "meeting.summary",
            "recording.statusUpdate",
            "recording.statusUpdate",
            "livestreaming.statusUpdate",
        ]
        assert server.state.counters.api_requests == 1  # the registration
        units = [u for g in rec.got for u in parse_event(g.body)[1]]
        assert [u.kind for u in units] == ["chat", "transcript", "summary", "recording"]
        assert {u.session_id for u in units} == {SID} and {u.app_hint for u in units} == {APP}
        recording = docs[5]["recording"]
        assert recording["fileSize"] == "4096" and units[3].file_size == 4096
        assert docs[6]["recording"]["status"] == "RECORDING" and "downloadUrl" not in docs[6]
        assert docs[7]["streamKey"].startswith(FAKE_STREAM_KEY_PREFIX)
        async with aiohttp.ClientSession() as http:
            for unit, kind in zip(units[:3], ("chat", "transcript", "summary"), strict=True):
                async with http.get(unit.url) as resp:
                    assert resp.status == 200
                    fmt = {"chat": "csv", "transcript": "csv", "summary": "txt"}[kind]
                    assert await resp.read() == server.expected_body(APP, SID, kind, fmt)  # type: ignore[arg-type]
            async with http.get(units[3].url) as resp:
                assert await resp.read() == server.state.media.body(units[3].recording_id or "")
            assert unit.expiry is not None
        assert server.state.counters.api_requests == 1


async def test_raw_deliveries_send_hostile_bytes_and_headers_as_given(
    standin: StandinFactory,
) -> None:
    """deliver_raw: the bytes untouched, signed unless told not to; headers replace or (None)
    drop the stand-in's; a replayed uuid is kept."""
    async with standin(**_fast()) as server, receiver() as rec:
        await _register(server, rec.url, ["meeting.ended"])
        key = await _public_key(server)
        await server.webhooks.deliver_raw(APP, b"\xff not json", delivery_uuid="u-1")
        await server.webhooks.deliver_raw(
            APP, b"{}", sign=False, headers={"rtk-signature": "forged", "Content-Type": None}
        )
        first, second = rec.got
        assert first.body == b"\xff not json" and _verifies(key, first)
        assert first.headers["rtk-uuid"] == "u-1"
        assert second.headers["rtk-signature"] == "forged" and not _verifies(key, second)
        assert "Content-Type" not in second.headers


async def test_the_control_route_delivers_for_a_standin_run_as_a_process(
    standin: StandinFactory,
) -> None:
    """POST /_standin/webhooks/deliver {app_id, session_id}: each delivery's statuses."""
    async with standin(**_fast()) as server, receiver(500) as rec:
        await _register(server, rec.url, ["meeting.chatSynced"])
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                server.origin + "/_standin/webhooks/deliver",
                json={"app_id": APP, "session_id": SID},
            ) as resp,
        ):
            (one,) = await resp.json()
        assert one["event"] == "meeting.chatSynced" and one["statuses"] == [500, 200]
        assert server.state.counters.api_requests == 1


def test_a_standin_in_a_thread_delivers_from_synchronous_code() -> None:
    """`server.blocking(...)` runs a delivery on the stand-in's own loop (the demo's way)."""
    with standin_in_thread(standin_config(webhook_backoff=0.0)) as server:

        async def register_and_deliver() -> list[int | None]:
            async with receiver() as rec:
                await _register(server, rec.url, ["meeting.ended"])
                (delivery,) = await server.deliver(APP, {"event": "meeting.ended"})
                return [a.status for a in delivery.attempts]

        assert server.blocking(register_and_deliver()) == [200]
        assert server.state.records()[-1].path.endswith("/webhooks")


async def test_the_well_known_route_is_not_an_api_request(standin: StandinFactory) -> None:
    async with standin() as server:
        await _public_key(server)
        (fetch,) = server.state.records()
        assert fetch.path == WELL_KNOWN and fetch.route == "other"
        assert server.state.counters.api_requests == 0


def test_the_standin_process_takes_its_webhook_retry_settings() -> None:
    """python -m exporter.standin --webhook-attempts N --webhook-backoff S; N >= 1."""
    config, _, _ = config_from_args(["--webhook-attempts", "2", "--webhook-backoff", "0"])
    assert (config.webhook_attempts, config.webhook_backoff) == (2, 0.0)
    with pytest.raises(SystemExit):
        config_from_args(["--webhook-attempts", "0"])
