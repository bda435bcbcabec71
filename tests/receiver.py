"""A webhook receiver on 127.0.0.1 for the ping tests: records every request it is sent, and
answers 200, or refuses every ping (500), as a test asks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Ping:
    method: str
    path: str
    body: str
    headers: dict[str, str]
    arrived: float  # time.monotonic()


class Receiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.pings: list[Ping] = []
        self.status = 200

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def paths(self) -> list[str]:
        return [p.path for p in self.pings]

    def wait_for(self, count: int, seconds: float = 10.0) -> list[Ping]:
        deadline = time.monotonic() + seconds
        while len(self.pings) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.pings)


@contextmanager
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(size).decode("utf-8", "replace")
            rec = box[0]
            rec.pings.append(
                Ping("POST", self.path, body, dict(self.headers.items()), time.monotonic())
            )
            self.send_response(rec.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
