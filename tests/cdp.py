"""A small Chrome DevTools Protocol client for the browser tests: Debian's chromium, headless,
on a fresh profile, driven over a websocket (aiohttp's client) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(rb"DevTools listening on (ws://127\.0\.0\.1:\d+/\S+)")
WAIT = 20.0  # seconds for any one browser answer or event


def chromium() -> str:
    """The browser binary; the browser tests fail (never skip) without it: .ci/run installs it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (apt-get install chromium; .ci/run does it)"
    return found


class Tab:
    """One page target, attached in flat mode: commands, and the events it has sent so far."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.events: list[dict[str, Any]] = []
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, session_id=self.session_id, **params)

    def _event(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        for name, fut in list(self._waiters):
            if name == message["method"] and not fut.done():
                fut.set_result(message)
                self._waiters.remove((name, fut))

    async def navigate(self, url: str) -> None:
        """Go to `url` and return once its load event has fired."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append(("Page.loadEventFired", fut))
        answer = await self.send("Page.navigate", url=url)
        assert "errorText" not in answer, answer
        await asyncio.wait_for(fut, WAIT)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    def requested(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tabs: dict[str, Tab] = {}

    async def send(
        self, method: str, session_id: str | None = None, **params: Any
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session_id:
            message["sessionId"] = session_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self.ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(fut, WAIT)
        assert "error" not in answer, (method, answer)
        return dict(answer.get("result", {}))

    async def pump(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            elif (tab := self._tabs.get(data.get("sessionId", ""))) is not None:
                tab._event(data)

    async def new_tab(self) -> Tab:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        tab = Tab(self, attached["sessionId"])
        self._tabs[tab.session_id] = tab
        for domain in ("Page", "Network", "Runtime", "Log"):
            await tab.send(f"{domain}.enable")
        return tab


@asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Browser]:
    """A headless chromium on a fresh profile, closed (and waited for) at the end."""
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        url = None
        async with asyncio.timeout(WAIT):
            while url is None:
                line = await proc.stderr.readline()
                assert line, "chromium exited before it listened"
                if found := _LISTENING.search(line):
                    url = found.group(1).decode()

        async def drain_stderr() -> None:
            assert proc.stderr is not None
            while await proc.stderr.read(65536):
                pass

        drain = asyncio.create_task(drain_stderr())
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            b = Browser(ws)
            pump = asyncio.create_task(b.pump())
            try:
                yield b
                with suppress(Exception):
                    await asyncio.wait_for(b.send("Browser.close"), 5)
            finally:
                pump.cancel()
                with suppress(asyncio.CancelledError):
                    await pump
    finally:
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            drain.cancel()
            with suppress(asyncio.CancelledError):
                await drain
