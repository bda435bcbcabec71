"""rtk-signature verification with real RSA keys, and the key: from a PEM file, or fetched from
the stand-in's `.well-known/webhooks.json` over HTTP on 127.0.0.1, fetched again on a failed
signature at most once a minute (an injected clock)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from exporter.config import Timeouts
from exporter.errors import ExportError, TransientError
from exporter.standin import WELL_KNOWN, CannedResponse, StandinServer
from exporter.webhooks.signature import (
    WebhookKey,
    WebhookKeyError,
    key_url_problem,
    load_public_key,
    verify,
)

StandinFactory = Callable[..., AbstractAsyncContextManager[StandinServer]]
TIMEOUTS = Timeouts(connect=5, api=10, read=10)
BODY = b'{"event":"meeting.chatSynced","sessionId":"s1"}'


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(
    key: rsa.RSAPrivateKey,
    fmt: serialization.PublicFormat = serialization.PublicFormat.SubjectPublicKeyInfo,
) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, fmt)


def _sign(key: rsa.RSAPrivateKey, raw: bytes) -> str:
    return base64.b64encode(key.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- pure


def test_a_signature_of_the_raw_bytes_verifies(private_key: rsa.RSAPrivateKey) -> None:
    """PKCS1v15 SHA-256 over exactly these bytes, base64: valid."""
    assert verify(load_public_key(_pem(private_key)), BODY, _sign(private_key, BODY))


def test_the_same_json_reserialized_does_not_verify(private_key: rsa.RSAPrivateKey) -> None:
    """The raw bytes are signed: one space more is another body."""
    key = load_public_key(_pem(private_key))
    sig = _sign(private_key, BODY)
    assert not verify(key, json.dumps(json.loads(BODY)).encode(), sig)
    assert not verify(key, BODY + b" ", sig)


def test_another_keys_signature_does_not_verify(private_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert not verify(load_public_key(_pem(private_key)), BODY, _sign(other, BODY))


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!!", "QUJD", "QUJD=", "é" * 8, "A" * 10_000, " ", "=" * 4, "\x00"],
)
def test_what_is_not_a_signature_is_false_never_an_error(
    private_key: rsa.RSAPrivateKey, signature: str
) -> None:
    """Bad base64, a short or empty value, non-ASCII, a huge header: False."""
    assert verify(load_public_key(_pem(private_key)), BODY, signature) is False


def test_a_pkcs1_pem_and_escaped_newlines_are_read(private_key: rsa.RSAPrivateKey) -> None:
    """BEGIN RSA PUBLIC KEY works too, and a PEM whose newlines arrived as \\n text."""
    sig = _sign(private_key, BODY)
    pkcs1 = _pem(private_key, serialization.PublicFormat.PKCS1)
    assert verify(load_public_key(pkcs1), BODY, sig)
    escaped = _pem(private_key).replace(b"\n", b"\\n")
    assert verify(load_public_key(escaped), BODY, sig)


def test_what_is_not_an_rsa_public_key_is_a_clear_value_error() -> None:
    """Garbage and an EC key: ValueError naming the problem."""
    with pytest.raises(ValueError, match="not a PEM public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an RSA public key"):
        load_public_key(ec_pem)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.realtime.cloudflare.com/.well-known/webhooks.json", True),
        ("http://127.0.0.1:8080/.well-known/webhooks.json", True),
        ("http://[::1]:8080/k", True),
        ("http://keys.example.invalid/k", False),  # no request made: a pure check
        ("ftp://127.0.0.1/k", False),
        ("https:///k", False),
        ("http://127.0.0.1:99999/k", False),
    ],
)
def test_the_key_url_is_https_or_http_to_loopback(url: str, ok: bool) -> None:
    """The key decides what verifies: fetched in clear text only from this machine."""
    assert (key_url_problem(url) is None) is ok
    if not ok:
        with pytest.raises(ValueError, match="webhook key URL"):
            WebhookKey(key_url=url, timeouts=TIMEOUTS)


def test_one_source_of_key_exactly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        WebhookKey(timeouts=TIMEOUTS)
    with pytest.raises(ValueError, match="not both"):
        WebhookKey(key_url="https://k.example.invalid/", pem_file=tmp_path, timeouts=TIMEOUTS)


# -- a PEM file


async def test_a_pem_file_key_checks_signatures(
    tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    """Not ready before load; then valid is True, invalid False, and no refetch exists."""
    pem = tmp_path / "key.pem"
    pem.write_bytes(_pem(private_key))
    async with WebhookKey(pem_file=pem, timeouts=TIMEOUTS) as key:
        assert not key.ready
        await key.load()
        assert key.ready
        assert await key.check(BODY, _sign(private_key, BODY))
        assert not await key.check(BODY, "QUJD")
        assert key.fetches == 0


async def test_a_missing_or_bad_pem_file_is_a_safe_key_error(tmp_path: Path) -> None:
    """The path and the reason, as an ExportError: the caller logs it as it is."""
    async with WebhookKey(pem_file=tmp_path / "nope.pem", timeouts=TIMEOUTS) as key:
        with pytest.raises(WebhookKeyError, match=r"nope\.pem: No such file"):
            await key.load()
        with pytest.raises(WebhookKeyError, match="no webhook public key"):
            await key.check(BODY, "QUJD")
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    async with WebhookKey(pem_file=bad, timeouts=TIMEOUTS) as key:
        with pytest.raises(WebhookKeyError, match=r"bad\.pem: not a PEM public key"):
            await key.load()


# -- the stand-in's key URL


async def test_the_key_is_fetched_from_the_standins_well_known_url(
    standin: StandinFactory,
) -> None:
    """The stand-in signs; the key fetched from its URL verifies; no token is sent."""
    async with standin() as server, WebhookKey(key_url=server.key_url, timeouts=TIMEOUTS) as key:
        await key.load()
        assert key.ready and key.fetches == 1
        signer = server.webhooks.signer
        assert await key.check(BODY, signer.sign(BODY))
        (fetch,) = [r for r in server.state.requests if r.path == WELL_KNOWN]
        assert "Authorization" not in fetch.headers
        assert server.state.counters.api_requests == 0


async def test_a_failed_signature_refetches_once_then_not_within_a_minute(
    standin: StandinFactory,
) -> None:
    """The load counts as a fetch: no refetch within 60 s of it. Then invalid: one refetch,
    still invalid (False); again within 60 s: no fetch; 60 s later: one."""
    clock = Clock()
    async with (
        standin() as server,
        WebhookKey(key_url=server.key_url, timeouts=TIMEOUTS, clock=clock) as key,
    ):
        await key.load()
        clock.now += 59.9
        assert not await key.check(BODY, "QUJD")
        assert key.fetches == 1
        clock.now += 0.1
        assert not await key.check(BODY, "QUJD")
        assert key.fetches == 2
        clock.now += 59
        assert not await key.check(BODY, "QUJD")
        assert key.fetches == 2
        clock.now += 1
        assert not await key.check(BODY, "QUJD")
        assert key.fetches == 3
        assert await key.check(BODY, server.webhooks.signer.sign(BODY))
        assert key.fetches == 3  # a valid signature costs no fetch


async def test_a_rotated_key_is_picked_up_by_one_refetch(standin: StandinFactory) -> None:
    """The stand-in rotates its key: the first new signature refetches and verifies; the
    next ones verify at once; the old key's signatures then fail."""
    clock = Clock()
    async with (
        standin() as server,
        WebhookKey(key_url=server.key_url, timeouts=TIMEOUTS, clock=clock) as key,
    ):
        await key.load()
        signer = server.webhooks.signer
        old = signer.sign(BODY)
        assert await key.check(BODY, old)
        clock.now += 120
        signer.rotate()
        assert await key.check(BODY, signer.sign(BODY))
        assert key.fetches == 2
        assert await key.check(BODY + b" ", signer.sign(BODY + b" "))
        assert key.fetches == 2
        assert not await key.check(BODY, old)


async def test_a_key_url_that_fails_is_an_export_error_with_a_safe_message(
    standin: StandinFactory,
) -> None:
    """503: transient (the caller tries later); 200 with no key, or 404: a WebhookKeyError;
    none holds the URL's query."""
    async with standin() as server:
        url = server.key_url + "?token=SECRET"
        cases: list[tuple[CannedResponse, type[ExportError], str]] = [
            (CannedResponse(503), TransientError, "HTTP 503"),
            (CannedResponse(404), WebhookKeyError, "HTTP 404"),
            (CannedResponse(200, {"success": True, "data": {}}), WebhookKeyError, "no data"),
            (CannedResponse(200, "<html>"), WebhookKeyError, "not JSON"),
            (
                CannedResponse(200, {"success": True, "data": {"publicKey": "x"}}),
                WebhookKeyError,
                "not a PEM public key",
            ),
            (CannedResponse(302, headers={"Location": "/"}), WebhookKeyError, "HTTP 302"),
            (CannedResponse(action="drop"), TransientError, "webhook key"),
        ]
        async with WebhookKey(key_url=url, timeouts=TIMEOUTS) as key:
            for canned, kind, text in cases:
                server.script(WELL_KNOWN, canned)
                with pytest.raises(kind, match=text) as caught:
                    await key.load()
                assert "SECRET" not in str(caught.value)
                assert not key.ready
            await key.load()  # nothing scripted any more: the real key
            assert key.ready


async def test_no_key_and_a_failing_key_url_on_check_is_an_error_not_false(
    standin: StandinFactory,
) -> None:
    """Without a key a signature cannot be called invalid: the caller answers 503."""
    clock = Clock()
    async with (
        standin() as server,
        WebhookKey(key_url=server.key_url, timeouts=TIMEOUTS, clock=clock) as key,
    ):
        server.script(WELL_KNOWN, CannedResponse(503), CannedResponse(503))
        with pytest.raises(TransientError):
            await key.load()
        with pytest.raises(WebhookKeyError, match="fetch failed recently"):
            await key.check(BODY, server.webhooks.signer.sign(BODY))
        clock.now += 60
        with pytest.raises(TransientError):
            await key.check(BODY, server.webhooks.signer.sign(BODY))
        clock.now += 60
        assert await key.check(BODY, server.webhooks.signer.sign(BODY))


@pytest.mark.parametrize(
    ("url", "ok"),
    [("http://keys.example.invalid/k", False), ("http://127.0.0.1:9/k", True)],
)
def test_serve_refuses_a_key_url_by_the_same_rule(url: str, ok: bool, tmp_path: Path) -> None:
    """`serve --webhook-key-url` is checked by key_url_problem, named after the option."""
    from exporter.arguments import serve_options
    from exporter.options import serve_parser

    args = serve_parser().parse_args(["--out", str(tmp_path), "--webhook-key-url", url])
    if ok:
        assert serve_options(args, {}).key_url == url
    else:
        with pytest.raises(ValueError, match=r"^--webhook-key-url: the webhook key URL must be"):
            serve_options(args, {})
