"""Running the stand-in: in the test's event loop, in a thread, or as a process
(`python -m exporter.standin`, which prints `RTK_STANDIN_URL=...` and serves until signalled)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from aiohttp import web

from exporter.standin.app import build_app
from exporter.standin.model import (
    API_PREFIX,
    CannedResponse,
    FaultRates,
    Kind,
    SessionSpec,
    StandinConfig,
)
from exporter.standin.state import StandinState
from exporter.standin.webhooks import WELL_KNOWN, Delivery, Webhooks

T = TypeVar("T")


@dataclass
class StandinServer:
    """A running stand-in: where it listens, and its state (records, counters, catalogue)."""

    base_url: str  # http://127.0.0.1:PORT/client/v4
    origin: str  # http://127.0.0.1:PORT
    state: StandinState
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    @property
    def config(self) -> StandinConfig:
        return self.state.config

    @property
    def webhooks(self) -> Webhooks:
        """Registrations, the key pair (`webhooks.signer.rotate()`), `attempts` made."""
        return self.state.webhooks

    @property
    def key_url(self) -> str:
        """The stand-in's `.well-known/webhooks.json`."""
        return self.origin + WELL_KNOWN

    async def deliver_session(
        self, app_id: str, session_id: str, *, livestream: bool = False
    ) -> list[Delivery]:
        """The session's documented events, signed, to the app's registered webhooks."""
        return await self.state.webhooks.deliver_session(app_id, session_id, livestream=livestream)

    async def deliver(
        self, app_id: str, payload: Mapping[str, Any], *, delivery_uuid: str | None = None
    ) -> list[Delivery]:
        """One event payload, signed, to the app's webhooks that take its event."""
        return await self.state.webhooks.deliver(app_id, payload, delivery_uuid=delivery_uuid)

    def blocking(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run `coro` on the stand-in's loop from another thread (a `standin_in_thread`
        server, for subprocess tests and the demo): `server.blocking(server.deliver(...))`."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def api_path(self, app_id: str, session_id: str | None = None, kind: str | None = None) -> str:
        """The URL path of a sessions route, as the stand-in records it."""
        path = f"{API_PREFIX}/accounts/{self.config.account_id}/realtime/kit/{app_id}/sessions"
        if session_id is not None:
            path += f"/{session_id}"
        return path + (f"/{kind}" if kind is not None else "")

    def api_url(self, app_id: str, session_id: str | None = None, kind: str | None = None) -> str:
        """The full URL of a sessions route."""
        return self.origin + self.api_path(app_id, session_id, kind)

    def script(self, path: str, *responses: CannedResponse) -> None:
        self.state.script(path, *responses)

    def expected_body(
        self, app_id: str, session_id: str, kind: Kind = "chat", fmt: str = "csv"
    ) -> bytes:
        return self.state.expected_body(app_id, session_id, kind, fmt)


@asynccontextmanager
async def run_standin(
    config: StandinConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[StandinServer]:
    """Serves the stand-in for the duration of the block."""
    state = StandinState(config or StandinConfig())
    # A short shutdown_timeout: stalled handlers are cancelled instead of holding up the test.
    runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        origin = f"http://{bound_host}:{bound_port}"
        state.content.origin = origin  # attachment links in chat CSVs point here
        yield StandinServer(origin + API_PREFIX, origin, state, asyncio.get_running_loop())
    finally:
        await state.webhooks.close()
        await runner.cleanup()


@contextmanager
def standin_in_thread(
    config: StandinConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[StandinServer]:
    """The stand-in on its own event loop in a thread, for synchronous (subprocess) tests."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        async with run_standin(config, host=host, port=port) as server:
            box.update(server=server, loop=asyncio.get_running_loop(), stop=stop)
            ready.set()
            await stop.wait()

    def target() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="rtk-standin", daemon=True)
    thread.start()
    ready.wait()
    if "server" not in box:
        thread.join()
        raise RuntimeError("the stand-in did not start") from box.get("error")
    try:
        yield box["server"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exporter.standin",
        description="A local RealtimeKit stand-in: API and downloads.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="standin-token", help="the Bearer token it accepts")
    p.add_argument("--account-id", default="standin-account")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url-lifetime", type=float, default=300.0)
    p.add_argument(
        "--catalogue",
        help="JSON file: a list of sessions (app_id, session_id, "
        "started_at, status, minutes, has_transcript, has_summary, breakout_rooms)",
    )
    p.add_argument("--catalogue-only", action="store_true", help="unknown ids get 404")
    p.add_argument("--chat-rows", type=int)
    p.add_argument("--chat-bytes", type=int)
    p.add_argument("--rate-limit", type=_rate, help="N/Ws, e.g. 1200/300s")
    p.add_argument("--rate-limit-block", type=float)
    p.add_argument(
        "--retry-after",
        type=float,
        default=1,
        help="seconds; a fraction is also sent as retry-after-ms",
    )
    p.add_argument(
        "--retry-after-grace",
        type=float,
        default=0.0,
        help="seconds after a 429 during which arrivals count as already in flight, not early",
    )
    p.add_argument("--slow-seconds", type=float, default=0.05)
    p.add_argument("--stall-seconds", type=float, default=10.0)
    p.add_argument("--max-per-page", type=int)
    p.add_argument("--error-envelope", choices=("auto", "v4", "rtk"), default="auto")
    p.add_argument("--omit-paging", action="store_true")
    p.add_argument("--token-lacks-permission", action="store_true")
    p.add_argument("--attachments", type=int, default=0, help="attachment rows per chat")
    p.add_argument("--attachment-odd-ids", action="store_true")
    p.add_argument("--attachment-bytes", type=int)
    p.add_argument(
        "--recordings",
        default="",
        help="each session's recordings by status, e.g. UPLOADED,RECORDING",
    )
    p.add_argument("--recording-bytes", type=int, default=256 * 1024)
    p.add_argument(
        "--recording-media",
        action="store_true",
        help="recordings are a real one-second WebM (--recording-bytes is then not used)",
    )
    p.add_argument("--recordings-ignore-filter", action="store_true")
    p.add_argument("--ignore-range", action="store_true")
    p.add_argument("--recording-chunk-delay", type=float, default=0.0)
    p.add_argument("--webhook-attempts", type=int, default=5, help="POSTs per delivery")
    p.add_argument(
        "--webhook-backoff", type=float, default=0.2, help="seconds before a delivery's retry"
    )
    for f in fields(FaultRates):
        p.add_argument(
            f"--fault-{f.name.replace('_', '-')}",
            type=float,
            default=0.0,
            dest=f"fault_{f.name}",
            metavar="P",
        )
    return p


def _rate(text: str) -> tuple[int, float]:
    n, _, w = text.strip().rstrip("s").partition("/")
    try:
        return int(n), float(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N/Ws such as 1200/300s, got {text!r}") from None


def config_from_args(argv: list[str] | None = None) -> tuple[StandinConfig, str, int]:
    """(config, host, port) from command-line arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _config(args), args.host, args.port
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"{type(exc).__name__}: {exc}")


def _config(args: argparse.Namespace) -> StandinConfig:
    sessions: tuple[SessionSpec, ...] = ()
    if args.catalogue:
        with open(args.catalogue, encoding="utf-8") as fh:
            sessions = tuple(SessionSpec.from_json(o) for o in json.load(fh))
    faults = FaultRates(**{f.name: getattr(args, f"fault_{f.name}") for f in fields(FaultRates)})
    return StandinConfig(
        token=args.token,
        account_id=args.account_id,
        url_lifetime=args.url_lifetime,
        accept_any=not args.catalogue_only,
        sessions=sessions,
        seed=args.seed,
        chat_rows=args.chat_rows,
        chat_bytes=args.chat_bytes,
        faults=faults,
        retry_after=args.retry_after,
        retry_after_grace=args.retry_after_grace,
        slow_seconds=args.slow_seconds,
        stall_seconds=args.stall_seconds,
        max_per_page=args.max_per_page,
        rate_limit=args.rate_limit,
        rate_limit_block=args.rate_limit_block,
        error_envelope=args.error_envelope,
        omit_paging=args.omit_paging,
        token_lacks_permission=args.token_lacks_permission,
        attachments=args.attachments,
        attachment_odd_ids=args.attachment_odd_ids,
        attachment_bytes=args.attachment_bytes,
        recording_statuses=tuple(s for s in args.recordings.split(",") if s),
        recording_bytes=args.recording_bytes,
        recording_media=args.recording_media,
        recordings_ignore_filter=args.recordings_ignore_filter,
        ignore_range=args.ignore_range,
        recording_chunk_delay=args.recording_chunk_delay,
        webhook_attempts=args.webhook_attempts,
        webhook_backoff=args.webhook_backoff,
    )


async def serve_until_signalled(config: StandinConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_standin(config, host=host, port=port) as server:
        # The parent process reads this line to learn the port.
        sys.stdout.write(f"RTK_STANDIN_URL={server.base_url}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    config, host, port = config_from_args(argv)
    asyncio.run(serve_until_signalled(config, host, port))
