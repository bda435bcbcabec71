"""The stand-in in its own process, lean enough for a million requests.

`python -m bench.standin_proc [--record api|none] [--dump PATH] [stand-in options]` prints
`RTK_STANDIN_URL=...` like `python -m exporter.standin`, and on SIGTERM writes its counters
(and with `--record api`, the arrival time, status and fault of every API request) to PATH.

The stand-in keeps every request it saw (headers included) for tests to inspect: fine for a
test, gigabytes for a million pairs, so here only what the benchmark reads is kept. Each chat
body's 64 template rows are computed twice per download (size, then body); a two-entry cache
halves that, so that the server's CPU on a 2-core machine is taken from the contenders less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import OrderedDict
from typing import Any

from exporter.standin.server import config_from_args, run_standin
from exporter.standin.state import RecordedRequest


class _Sink(list[RecordedRequest]):
    """Keeps API requests only (`api`), or nothing (`none`)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def append(self, rec: RecordedRequest) -> None:
        if self.mode == "api" and rec.route == "api":
            super().append(rec)


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
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--record", choices=("api", "none"), default="none")
    p.add_argument("--dump")
    ours, rest = p.parse_known_args(argv)
    config, host, port = config_from_args(rest)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_standin(config, host=host, port=port) as server:
        state = server.state
        state.requests = _Sink(ours.record)
        _cache_templates(state.content)
        sys.stdout.write(f"RTK_STANDIN_URL={server.base_url}\n")
        sys.stdout.flush()
        await stop.wait()
        if ours.dump:
            c = state.counters
            out = {
                "api_requests": c.api_requests,
                "downloads": c.downloads,
                "downloads_completed": c.downloads_completed,
                "rate_violations": c.rate_violations,
                "early_after_retry_after": c.early_after_retry_after,
                "scripted": c.scripted,
                "faults": dict(c.faults),
                "api": [[r.arrived, r.status, r.fault] for r in state.requests],
            }
            with open(ours.dump, "w", encoding="utf-8") as fh:
                json.dump(out, fh)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1:]))
