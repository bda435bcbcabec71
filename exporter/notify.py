"""Pings that tell a monitor a run started and how it ended (the Healthchecks convention:
POST `URL/start`, then `URL/<exit code>`), bounded so that a dead receiver never holds a run.

Plain `http.client` in a thread, not aiohttp: the end ping is sent after the event loop has
closed (on SIGTERM, on exit 2 before any loop), and one short POST needs no session. The URL is
a secret (a Healthchecks URL is its own credential), so only its host is ever logged.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from exporter import __version__
from exporter.urls import private_transport

log = logging.getLogger("exporter.notify")

PING_SECONDS = 10.0  # a ping as a whole (every try) waits at most this long (spec)
PING_TRIES = 3  # and is tried at most this many times (spec)
START_SEND_WAIT = 1.0  # the run waits this long at most for the start ping to be sent
MAX_BODY = 10_000  # bytes of summary in a ping (spec: at most 10 KB)


def url_from(arg: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The notify URL (`--notify-url`, else env RTK_EXPORT_NOTIFY_URL) and what is wrong with
    it: (url, None), (None, None) when none is asked for, (None, problem) when it is unusable."""
    url = arg or environ.get("RTK_EXPORT_NOTIFY_URL") or None
    problem = notify_url_problem(url) if url else None
    return (None if problem else url), problem


def notify_url_problem(url: str) -> str | None:
    """Why `url` cannot be pinged, or None: https, or plain http to a loopback address."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "--notify-url is malformed"
    if not parts.hostname or any(c.isspace() or ord(c) < 32 for c in url):
        return "--notify-url is malformed"
    if parts.username or parts.password:
        return "--notify-url must not hold a user or password"
    if private_transport(parts.scheme, parts.hostname):
        return None
    return f"--notify-url scheme {parts.scheme!r} refused (https only, http to loopback)"


def host_of(url: str) -> str:
    """What a log line may say of the URL: its host alone."""
    return urlsplit(url).hostname or "?"


class Ping:
    """One POST to `URL/what`, tried in a daemon thread until it is answered, the tries run out
    or PING_SECONDS pass. `sent` is set once the request is on the wire (or given up)."""

    def __init__(self, url: str, what: str, body: str, *, seconds: float = PING_SECONDS) -> None:
        parts = urlsplit(url)
        self._parts = parts
        self._path = (
            parts.path.rstrip("/") + "/" + what + (f"?{parts.query}" if parts.query else "")
        )
        self._what = what
        self._body = body.encode("utf-8")[:MAX_BODY]
        self._deadline = time.monotonic() + seconds
        self.sent = threading.Event()
        self.ok = False
        self._thread = threading.Thread(target=self._run, name=f"ping-{what}", daemon=True)
        self._thread.start()

    def wait(self) -> bool:
        """Wait until the ping is answered or given up (never past its deadline)."""
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 0.5)
        return self.ok

    def _run(self) -> None:
        host = self._parts.hostname or "?"
        problem = "no try"
        try:
            for attempt in range(PING_TRIES):
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    status = self._post(left)
                except (OSError, http.client.HTTPException) as exc:
                    # Messages of socket errors name no URL; the path holds the secret.
                    problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if status < 300:
                        self.ok = True
                        log.debug("ping %s sent to %s", self._what, host)
                        return
                    problem = f"HTTP {status}"
                    if status < 500 and status not in (408, 429):
                        break  # the receiver refuses it: another try would be refused too
                pause = min(0.5 * 2**attempt, self._deadline - time.monotonic())
                if attempt + 1 < PING_TRIES and pause > 0:
                    time.sleep(pause)
            log.warning(
                "notify: ping %s to %s failed (%s); the run goes on",
                self._what,
                host,
                problem,
                extra={"event": "notify_failed", "ping": self._what},
            )
        finally:
            self.sent.set()

    def _post(self, timeout: float) -> int:
        parts = self._parts
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.request(
                "POST",
                self._path or "/",
                body=self._body,
                headers={
                    "Content-Type": "text/plain; charset=utf-8",
                    "User-Agent": f"rtk-export/{__version__}",
                },
            )
            self.sent.set()
            return conn.getresponse().status
        finally:
            conn.close()


def ping_start(url: str | None) -> Ping | None:
    """The start ping: sent before the run's first API request, its answer not waited for."""
    if not url:
        return None
    ping = Ping(url, "start", "rtk-export run started")
    ping.sent.wait(START_SEND_WAIT)
    return ping


def ping_end(url: str | None, code: int, summary: str) -> None:
    """The end ping, `URL/<exit code>` with the one-line summary; waits at most PING_SECONDS,
    and a failure is a warning only: the exit code is the run's."""
    if url:
        Ping(url, str(code), summary).wait()
