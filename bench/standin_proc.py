"""The stand-in in its own process, lean enough for a million requests.

`python -m bench.standin_proc [stand-in options]` prints `RTK_STANDIN_URL=...` like
`python -m exporter.standin` and serves until SIGTERM.

The stand-in keeps every request it saw (headers included) for tests to inspect: fine for a
test, gigabytes for a million pairs, so here nothing is kept (the pacing benchmark, which
reads arrival times, runs the stand-in in its own process instead). Small bodies come from a
pool built once (see `_pool_bodies`), so that the server takes less of a 2-core machine's CPU
from the contender it serves.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import zlib
from collections.abc import Iterator
from typing import Any

from exporter.standin.server import config_from_args, run_standin
from exporter.standin.state import RecordedRequest


class _Sink(list[RecordedRequest]):
    """A request list that keeps nothing."""

    def append(self, rec: RecordedRequest) -> None:
        return None


POOL = 64  # distinct small bodies served in turn
POOLED_MAX = 1 << 20  # bodies larger than this are built as they are streamed, as usual


def _pool_bodies(content: Any) -> None:
    """Serve each session one of POOL prebuilt bodies (chosen by a CRC of its ids) instead of
    building its rows on every download: a real S3 costs the client's machine no CPU, and on a
    2-core machine the stand-in's CPU is taken from the contender it serves. The API answers,
    the presigned URLs and their signature checks are unchanged."""
    size, chunks = content.size, content.chunks
    pool: dict[tuple[int, str, str], bytes] = {}

    def slot(app_id: str, session_id: str, kind: str, fmt: str) -> tuple[int, str, str]:
        return zlib.crc32(f"{app_id}/{session_id}".encode()) % POOL, kind, fmt

    def body(app_id: str, session_id: str, kind: str = "chat", fmt: str = "csv") -> bytes | None:
        key = slot(app_id, session_id, kind, fmt)
        if key not in pool:
            if size("pool", f"body-{key[0]}", kind, fmt) > POOLED_MAX:
                return None
            pool[key] = b"".join(chunks("pool", f"body-{key[0]}", kind, fmt))
        return pool[key]

    def pooled_size(app_id: str, session_id: str, kind: str = "chat", fmt: str = "csv") -> int:
        b = body(app_id, session_id, kind, fmt)
        return size(app_id, session_id, kind, fmt) if b is None else len(b)

    def pooled_chunks(
        app_id: str, session_id: str, kind: str = "chat", fmt: str = "csv"
    ) -> Iterator[bytes]:
        b = body(app_id, session_id, kind, fmt)
        if b is None:
            yield from chunks(app_id, session_id, kind, fmt)
        else:
            yield b

    content.size, content.chunks = pooled_size, pooled_chunks


async def serve(argv: list[str]) -> None:
    config, host, port = config_from_args(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_standin(config, host=host, port=port) as server:
        server.state.requests = _Sink()
        _pool_bodies(server.state.content)
        counters = server.state.counters

        def counts() -> None:  # SIGUSR1: "API DOWNLOADS" on stdout, the harness's own count
            sys.stdout.write(f"{counters.api_requests} {counters.downloads}\n")
            sys.stdout.flush()

        loop.add_signal_handler(signal.SIGUSR1, counts)
        sys.stdout.write(f"RTK_STANDIN_URL={server.base_url}\n")
        sys.stdout.flush()
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1:]))
