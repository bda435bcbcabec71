"""Attachments end to end over real HTTP on loopback: every payload form from the stand-in, the
refusals (with listeners that must see no connection), redirects, cookies and the size cap."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from exporter.attachments import iter_attachments
from exporter.config import RetryPolicy
from exporter.media_names import recorded_id
from exporter.standin import CannedResponse, StandinServer
from tests.helpers import export, leftovers, make_settings, manifest_lines, write_sessions

LOCAL = frozenset({"127.0.0.1"})
HEADER = (
    "id,participantId,sessionId,meetingId,displayName,pinned,isEdited,payloadType,payload,createdAt"
)


def chat_with(links: list[tuple[str, str]]) -> bytes:
    """A chat CSV whose image rows link where a test says (message id, payload)."""
    out = io.StringIO()
    out.write(HEADER + "\r\n")
    writer = csv.writer(out)
    for mid, payload in links:
        writer.writerow([mid, "p", "s1", "m", "Ann", "false", "false", "IMAGE_MESSAGE", payload,
                         "2026-01-01T00:00:00.000Z"])  # fmt: skip
    return out.getvalue().encode()


def by_message(out: Path) -> dict[str, dict[str, object]]:
    """The attachment lines of a one-session run, by message id."""
    return {str(k[1]): v for k, v in by_unit(out).items()}


def by_unit(out: Path) -> dict[tuple[object, object], dict[str, object]]:
    """The attachment lines, by (session id, message id)."""
    return {
        (x["session_id"], x["message_id"]): x
        for x in manifest_lines(out / "manifest.jsonl")
        if x["kind"] == "attachment"
    }


async def test_every_payload_form_is_exported_once_then_skipped(standin, tmp_path: Path) -> None:
    """Each linked image or file lands under <session>.attachments/<message_id>[.ext] as the
    stand-in served it; rows without a link are unavailable, odd ids failed `invalid`; no
    credential or cookie goes with them; a rerun skips them all with no request."""
    out = tmp_path / "out"
    sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1"), ("app1", "s2")])
    async with standin(attachments=12, attachment_odd_ids=True) as server:
        settings = make_settings(
            server, out, sessions, kinds=("chat", "attachment"), attachment_allow_hosts=LOCAL
        )
        result = await export(settings)
        lines = by_unit(out)
        listed = [
            a
            for sid in ("s1", "s2")
            for a in iter_attachments(
                "app1", sid, io.BytesIO((out / f"app1/{sid}.csv").read_bytes())
            )
        ]
        assert len(listed) == len(lines) >= 28
        forms = set()
        for att in listed:
            line = lines[(att.session_id, recorded_id(att.message_id))]
            if att.payload.link is None:
                assert line["status"] == "unavailable" and line["path"] is None
            elif att.message_id.startswith(("..", "xxx")):
                assert line["status"] == "failed" and line["path"] is None
                assert line["error"]["kind"] == "invalid"  # type: ignore[index]
            else:
                assert line["status"] == "exported", line
                name = urlsplit(att.payload.link).path.rsplit("/", 1)[1]
                body = server.state.media.attachment_body("app1", att.session_id, name)
                stored = out / str(line["path"])
                assert stored.read_bytes() == body and line["bytes"] == len(body)
                assert stored.parent == out / "app1" / f"{att.session_id}.attachments"
                forms.add(stored.suffix)
        assert forms == {".png", ".pdf", ".jpg", ".gif", ""}  # name's ext, URL's, or none
        served = server.state.records("attachment")
        assert served and all("Authorization" not in r.headers for r in served)
        assert all("Cookie" not in r.headers for r in served)
        assert result.stats.counts["failed"] == 4  # the two odd ids of each session
        again = await export(settings)
        assert len(server.state.records("attachment")) == len(served)
        assert again.stats.counts["skipped"] == result.stats.counts["exported"]
    assert leftovers(out) == []


@dataclass
class Listener:
    """A TCP listener that records every connection it accepts (it should accept none)."""

    host: str
    connections: int = 0
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@asynccontextmanager
async def listeners(*hosts: str) -> AsyncIterator[list[Listener]]:
    found = [Listener(h) for h in hosts]
    for one in found:
        one.server = await asyncio.start_server(one._accept, one.host, 0)
    try:
        yield found
    finally:
        for one in found:
            assert one.server is not None
            one.server.close()
            await one.server.wait_closed()


@dataclass
class LinkHost:
    """An allowed host on 127.0.0.1 for the hops and caps the stand-in does not script."""

    origin: str = ""
    seen: list[web.Request] = field(default_factory=list)


@asynccontextmanager
async def link_host() -> AsyncIterator[LinkHost]:
    host = LinkHost()

    async def redirect(request: web.Request) -> web.StreamResponse:
        host.seen.append(request)
        raise web.HTTPFound(request.query["to"])

    async def stream(request: web.Request) -> web.StreamResponse:
        host.seen.append(request)
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse it by
        await resp.prepare(request)
        for _ in range(int(request.query["n"])):
            await resp.write(b"z" * 65536)
        await resp.write_eof()
        return resp

    async def announced(request: web.Request) -> web.StreamResponse:
        host.seen.append(request)
        return web.Response(body=b"y" * int(request.query["n"]))

    async def cookie(request: web.Request) -> web.StreamResponse:
        host.seen.append(request)
        resp = web.Response(body=b"c")
        resp.set_cookie("track", "me")
        return resp

    app = web.Application()
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/stream", stream)
    app.router.add_get("/announced", announced)
    app.router.add_get("/cookie/{n}", cookie)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield host
    finally:
        await runner.cleanup()


async def run_links(
    server: StandinServer, tmp_path: Path, links: list[tuple[str, str]], **kw: object
) -> dict[str, dict[str, object]]:
    out = tmp_path / "out"
    server.script("/downloads/app1/s1/chat.csv", CannedResponse(body=chat_with(links)))
    sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1")])
    settings = make_settings(server, out, sessions, kinds=("chat", "attachment"), **kw)
    await export(settings)
    assert leftovers(out) == []
    return by_message(out)


async def test_loopback_links_not_allowed_are_refused_without_a_connection(
    standin, tmp_path: Path
) -> None:
    """127.0.0.2, [::1], localhost (a name resolving to loopback) and http to an unlisted host
    are refused (`failed`, error.kind refused), and their listeners see no connection."""
    async with listeners("127.0.0.2", "::1", "127.0.0.1") as (v4, v6, named), standin() as server:
        links = [
            ("a", f"https://127.0.0.2:{v4.port}/a.png"),
            ("b", f"https://[::1]:{v6.port}/b.png"),
            ("c", f"https://localhost:{named.port}/c.png"),
            ("d", f"http://localhost:{named.port}/d.png"),
            ("e", f"https://[::ffff:127.0.0.1]:{named.port}/e.png"),
            ("f", f"https://user:secret@localhost:{named.port}/f.png"),
        ]
        lines = await run_links(server, tmp_path, links)
        assert (v4.connections, v6.connections, named.connections) == (0, 0, 0)
    for mid in "abcdef":
        assert lines[mid]["status"] == "failed", lines[mid]
        assert lines[mid]["error"]["kind"] == "refused"  # type: ignore[index]
        assert "secret" not in str(lines[mid])
    assert "loopback" in str(lines["c"]["error"])  # refused by the resolver: its address


async def test_links_of_a_refused_scheme_are_failed_refused_not_unavailable(
    standin, tmp_path: Path
) -> None:
    """`javascript:`, `data:`, `file:` and `ftp:` links, bare or in a JSON payload, are
    `failed` with error.kind refused (they name a link), and the allowed host sees nothing."""
    async with listeners("127.0.0.1") as (ftp,), standin() as server:
        links = [
            ("js", '{"link": "javascript:alert(1)", "name": "x.png"}'),
            ("data", "data:image/png;base64,iVBORw0KGgo="),
            ("file", '{"url": "file:///etc/passwd"}'),
            ("ftp", f"ftp://127.0.0.1:{ftp.port}/x.png"),
            ("none", '{"name": "x.png"}'),
        ]
        lines = await run_links(server, tmp_path, links, attachment_allow_hosts=LOCAL)
        assert ftp.connections == 0
    for mid in ("js", "data", "file", "ftp"):
        assert lines[mid]["status"] == "failed", lines[mid]
        assert lines[mid]["error"]["kind"] == "refused"  # type: ignore[index]
        assert lines[mid]["path"] is None and lines[mid]["attempts"] == 0
    assert lines["none"]["status"] == "unavailable"


async def test_each_redirect_hop_is_checked(standin, tmp_path: Path) -> None:
    """An allowed host redirecting to a loopback address that is not allowed, or to http on
    an unlisted name, is refused at that hop; the target sees no connection."""
    async with listeners("127.0.0.2") as (v4,), link_host() as host, standin() as server:
        links = [
            ("r1", f"{host.origin}/redirect?to=https://127.0.0.2:{v4.port}/x"),
            ("r2", f"{host.origin}/redirect?to=http://localhost:{v4.port}/x"),
            ("ok", f"{host.origin}/redirect?to={host.origin}/announced%3Fn%3D10"),
        ]
        lines = await run_links(server, tmp_path, links, attachment_allow_hosts=LOCAL)
        assert v4.connections == 0
    assert lines["r1"]["error"]["kind"] == "refused"  # type: ignore[index]
    assert lines["r2"]["error"]["kind"] == "refused"  # type: ignore[index]
    assert lines["ok"]["status"] == "exported" and lines["ok"]["bytes"] == 10


async def test_the_size_cap_holds_while_streaming(standin, tmp_path: Path) -> None:
    """A body with no length that grows past --attachment-max-bytes is cut off and nothing is
    kept; one announcing too much is refused before its body; one under the cap is kept."""
    async with link_host() as host, standin() as server:
        links = [
            ("big", f"{host.origin}/stream?n=64"),  # 4 MiB, chunked
            ("told", f"{host.origin}/announced?n={3 << 20}"),
            ("small", f"{host.origin}/stream?n=8"),  # 512 KiB
        ]
        lines = await run_links(
            server, tmp_path, links, attachment_allow_hosts=LOCAL, attachment_max_bytes=1 << 20
        )
    for mid in ("big", "told"):
        assert lines[mid]["status"] == "failed" and lines[mid]["path"] is None
        assert lines[mid]["error"]["kind"] == "too_large"  # type: ignore[index]
    assert lines["small"]["status"] == "exported" and lines["small"]["bytes"] == 8 * 65536
    kept = {p.name for p in (tmp_path / "out/app1/s1.attachments").iterdir()}
    assert kept == {"small"}


async def test_a_body_shorter_than_announced_is_an_incomplete_download(
    standin, tmp_path: Path
) -> None:
    """A host that announces 4,000 bytes, sends 1,000 and closes: the attachment is `failed`
    with error.kind incomplete_download (as a chat or a recording cut short is), after the
    retries the policy allows, and nothing is kept under its name."""
    served: list[int] = []

    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\nConnection: close\r\n\r\n")
        writer.write(b"x" * 1000)
        await writer.drain()
        writer.close()

    host = await asyncio.start_server(short, "127.0.0.1", 0)
    port = host.sockets[0].getsockname()[1]
    try:
        async with standin() as server:
            lines = await run_links(
                server,
                tmp_path,
                [("cut", f"http://127.0.0.1:{port}/a.png")],
                attachment_allow_hosts=LOCAL,
                retry=RetryPolicy(max_attempts=2, initial_backoff=0, max_backoff=0),
            )
    finally:
        host.close()
        await host.wait_closed()
    assert lines["cut"]["status"] == "failed" and lines["cut"]["path"] is None
    assert lines["cut"]["error"]["kind"] == "incomplete_download"  # type: ignore[index]
    assert len(served) == 2 and lines["cut"]["attempts"] == 2
    assert not (tmp_path / "out/app1/s1.attachments").exists() or not any(
        (tmp_path / "out/app1/s1.attachments").iterdir()
    )


async def test_no_cookie_travels_between_links(standin, tmp_path: Path) -> None:
    """A cookie set by one attachment's host is never sent with the next request."""
    async with link_host() as host, standin() as server:
        links = [(f"c{i}", f"{host.origin}/cookie/{i}") for i in range(4)]
        lines = await run_links(
            server, tmp_path, links, attachment_allow_hosts=LOCAL, concurrency=1
        )
        assert len(host.seen) == 4
        assert all("Cookie" not in r.headers for r in host.seen)
    assert {v["status"] for v in lines.values()} == {"exported"}


async def test_ids_are_recorded_exactly_so_no_two_rows_share_a_line(
    standin, tmp_path: Path
) -> None:
    """A valid 200-character id and an invalid 201-character one with the same first 200
    characters get two lines; an id of 1,000 characters is recorded whole, one of 1,001 as its
    first 100, `...` and the SHA-256 of the whole."""
    import hashlib

    long = "a" * 1001
    ids = ["a" * 200, "a" * 201, "b" * 1000, long]
    async with standin() as server:
        lines = await run_links(server, tmp_path, [(mid, "data:x") for mid in ids])
    hashed = "a" * 100 + "..." + hashlib.sha256(long.encode()).hexdigest()
    assert set(lines) == {"a" * 200, "a" * 201, "b" * 1000, hashed}
    assert lines["a" * 200]["error"]["kind"] == "refused"  # type: ignore[index]
    for mid in ("a" * 201, "b" * 1000, hashed):
        assert lines[mid]["error"]["kind"] == "invalid"  # type: ignore[index]


def test_recorded_id_bounds() -> None:
    """The rule itself at its bounds, for any id (a recording's too): 1,000 kept, 1,001 hashed,
    and two long ids differing only past character 100 stay apart."""
    assert recorded_id("r" * 1000) == "r" * 1000
    one, two = recorded_id("r" * 1001), recorded_id("r" * 1000 + "s")
    assert one.startswith("r" * 100 + "...") and len(one) == 100 + 3 + 64
    assert one != two
