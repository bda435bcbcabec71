"""Helpers for the serve tests: a real RSA key pair, signed deliveries as RealtimeKit sends
them, payloads whose URL the stand-in minted, and `rtk-export serve` as a subprocess."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.helpers import TOKEN


class Signer:
    """A key pair: the private half signs, the public half is a PEM file for serve."""

    def __init__(self, folder: Path) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = folder / "webhooks.pem"
        self.pem.write_bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, raw: bytes) -> str:
        sig = self.private.sign(raw, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(sig).decode()

    def headers(self, raw: bytes, delivery: str | None = None, **extra: str) -> dict[str, str]:
        return {
            "rtk-signature": self.sign(raw),
            "rtk-uuid": delivery or str(uuid.uuid4()),
            "content-type": "application/json",
            **extra,
        }


def minted_chat(api_url: str) -> tuple[str, str]:
    """A chat URL and expiry as the stand-in's API mints them (as RealtimeKit's webhook
    carries them): asked for here, by the test, so that serve itself asks nothing."""
    req = urllib.request.Request(api_url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # loopback: the stand-in
        data = json.load(resp)["data"]
    return data["chat_download_url"], data["chat_download_url_expiry"]


def chat_synced(session_id: str, url: str, expiry: str, organizer: str = "app0") -> bytes:
    doc = {
        "event": "meeting.chatSynced",
        "meetingId": "m-" + session_id,
        "sessionId": session_id,
        "chatDownloadUrl": url,
        "chatDownloadUrlExpiry": expiry,
        "startedAt": "2026-12-01T10:00:00.000Z",
        "endedAt": "2026-12-01T11:00:00.000Z",
        "organizedBy": {"id": organizer, "name": "Org"},
    }
    return json.dumps(doc).encode()


class Serve:
    """`rtk-export serve` in a child process; the port read from its 'listening' line."""

    def __init__(self, args: list[str], env: dict[str, str], **popen: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--listen", "127.0.0.1:0", *args],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen,
        )
        self.lines: list[str] = []
        self._port = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if not self.port and (m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line)):
                self.port = int(m.group(1))
                self._port.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_listening(self, timeout: float = 20) -> Serve:
        if not self._port.wait(timeout):
            self.proc.kill()
            raise AssertionError(f"serve did not start listening:\n{self.log}")
        return self

    def wait_ready(self, timeout: float = 20) -> Serve:
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/readyz")[0] == 200:
                return self
            time.sleep(0.02)
        raise AssertionError(f"serve never became ready:\n{self.log}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            self.url(path), data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # loopback: serve
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            return self.request("GET", path)
        except (urllib.error.URLError, ConnectionError):
            return 0, {}, b""

    def deliver(self, raw: bytes, headers: dict[str, str]) -> int:
        return self.request("POST", "/webhooks/realtimekit", raw, headers)[0]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(check: Any, timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
