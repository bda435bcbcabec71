"""The stand-in in its own process, lean enough for a million requests.

`python -m bench.standin_proc [stand-in options]` prints `RTK_STANDIN_URL=...` like
`python -m exporter.standin` and serves until SIGTERM.

The stand-in keeps every request it saw (headers included) for tests to inspect: fine for a
test, gigabytes for a million pairs, so here nothing is kept (the pacing benchmark, which
reads arrival times, runs the stand-in in its own process instead). Each chat body's 64
template rows are computed twice per download (size, then body); a small cache halves that,
so that the server takes less of a 2-core machine's CPU from the contender it serves.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import OrderedDict
from typing import Any

from exporter.standin.server import config_from_args, run_standin
from exporter.standin.state import RecordedRequest


class _Sink(list[RecordedRequest]):
    """A request list that keeps nothing."""

    def append(self, rec: RecordedRequest) -> None:
        return None


def _cache_templates(content: Any) -> None:
    original = content._chat_templates
    cache: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def cached(app_id: str, session_id: str) -> Any:
        key = (app_id, session_id)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = original(app_id, session_id)
            if len(cache) > 256:
                cache.popitem(last=False)
        return hit

    content._chat_templates = cached


async def serve(argv: list[str]) -> None:
    config, host, port = config_from_args(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_standin(config, host=host, port=port) as server:
        server.state.requests = _Sink()
        _cache_templates(server.state.content)
        sys.stdout.write(f"RTK_STANDIN_URL={server.base_url}\n")
        sys.stdout.flush()
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1:]))
