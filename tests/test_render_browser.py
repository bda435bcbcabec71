"""The rendered site in a real browser (headless chromium over the DevTools protocol): every
message is in the DOM, archived images load, the filter narrows the list as one types, hostile
messages run nothing and reach nothing, and no page asks for anything outside SITE and DIR."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from exporter.render.site import render_site
from tests.cdp import Tab, browser
from tests.render_archive import HOSTILE, Archive, Msg, png, simple_session

APP = "app1"
# The index rows the filter leaves shown, by their links.
VISIBLE = (
    "[...document.querySelectorAll('li.session')].filter(li => !li.hidden)"
    ".map(li => li.querySelector('a').getAttribute('href'))"
)


@pytest.fixture
async def listener() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request it gets: none is the answer."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        return web.Response(
            text="<script>document.title='pwned-listener'</script>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def build(root: Path, base: str) -> tuple[Archive, list[Msg]]:
    """An archive with one hostile session (aimed at the listener), one with images, and
    three plain ones for the filter."""
    a = Archive(root)
    lure = [
        f"<img src='{base}/img'>",
        f"<script src='{base}/script.js'></script>",
        f"<link rel=stylesheet href='{base}/style.css'>",
        f"<iframe src='{base}/frame'></iframe>",
        f"<meta http-equiv='refresh' content='0;url={base}/refresh'>",
        f"<style>@import url('{base}/import.css');</style>",
        f"{base}/bare-link",
    ]
    msgs = [
        Msg(f"h{i}", f"Hostile <b>{i}</b>", text, f"2026-11-20T09:00:{i:02d}Z")
        for i, text in enumerate((*HOSTILE, *lure, 'multi\r\nline, "quoted"\nend', " lead"))
    ]
    msgs.append(
        Msg("hi1", "Imager", f"{base}/not-archived.png", "2026-11-20T09:01:00Z", "IMAGE_MESSAGE")
    )
    msgs.append(
        Msg(
            "hf1",
            "Filer",
            json.dumps({"link": f"{base}/f.pdf", "name": "f.pdf"}),
            "2026-11-20T09:01:01Z",
            "FILE_MESSAGE",
        )
    )
    a.add_chat(APP, "hostile", msgs)
    a.add_text(APP, "hostile", "summary", f"<img src='{base}/summary.png'>")
    pics = [
        Msg(
            "p1",
            "Ana",
            json.dumps({"link": "https://cdn.invalid/1.png"}),
            "2026-11-20T10:00:00Z",
            "IMAGE_MESSAGE",
        ),
        Msg("p2", "Bo", "https://cdn.invalid/2.gif", "2026-11-20T10:00:05Z", "IMAGE_MESSAGE"),
        Msg("p3", "Bo", "look at these", "2026-11-20T10:00:09Z"),
    ]
    a.add_chat(APP, "pictures", pics)
    a.add_attachment(APP, "pictures", "p1", "png", png(3, 2))
    a.add_attachment(APP, "pictures", "p2", "png", png(5, 4))
    simple_session(a, APP, "alpha", 10, "the quarterly numbers")
    simple_session(a, "app2", "beta", 20, "lunch plans", "zebra crossing")
    simple_session(a, "app2", "gamma", 30, "nothing here")
    return a, msgs


async def no_escape(tab: Tab, allowed: list[Path]) -> None:
    """Every request the page made was a file:// URL inside one of `allowed`."""
    roots = [p.resolve().as_uri() + "/" for p in allowed]
    for url in tab.requested():
        assert any(url.startswith(r) for r in roots), url


async def test_session_pages_show_every_message_and_run_nothing(
    tmp_path: Path, listener: tuple[str, list[str]]
) -> None:
    """The hostile session's page holds every message's text exactly (CR LF included), keeps
    its own title, sends the loopback listener nothing, and loads nothing outside the site
    and the archive."""
    base, seen = listener
    a, msgs = build(tmp_path / "dir", base)
    site = tmp_path / "site"
    render_site(a.root, a.manifest, site)
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / APP / "hostile.html").as_uri())
        text = await tab.eval("document.querySelector('ol.chat').textContent")
        for m in msgs:
            assert m.name in text
            if m.kind == "TEXT_MESSAGE":
                assert m.payload in text, m.payload
        assert await tab.eval("document.title") == "Session hostile · rtk-export archive"
        assert await tab.eval("document.scripts.length") == 0
        assert await tab.eval("location.href") == (site / APP / "hostile.html").as_uri()
        # A round trip through the browser after load: anything the page set off has started.
        await tab.eval("new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
        await no_escape(tab, [site, a.root])
    assert seen == []


async def test_archived_images_load_from_the_archive(tmp_path: Path) -> None:
    """Both archived images are drawn at their real size, from files inside DIR."""
    a, _ = build(tmp_path / "dir", "http://127.0.0.1:9")
    site = a.root / "html"
    render_site(a.root, a.manifest, site)
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / APP / "pictures.html").as_uri())
        sizes = await tab.eval(
            "Promise.all([...document.images].map(i => { i.loading = 'eager';"
            " return i.complete ? null : new Promise(r => { i.onload = i.onerror = r; }); }))"
            ".then(() => [...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.src]))"
        )
        assert [s[:2] for s in sizes] == [[3, 2], [5, 4]]
        for _, _, src in sizes:
            assert src.startswith((a.root / APP).resolve().as_uri() + "/pictures.attachments/")
        # The network log sees file:// loads, so the check below has something to check.
        assert sum("pictures.attachments" in u for u in tab.requested()) == 2
        await no_escape(tab, [site, a.root])


async def test_the_filter_narrows_the_list_as_one_types(tmp_path: Path) -> None:
    """Typing a participant's name, a session id or a word of the chat leaves only the
    matching sessions shown; clearing the box shows them all again."""
    a, _ = build(tmp_path / "dir", "http://127.0.0.1:9")
    site = tmp_path / "site"
    render_site(a.root, a.manifest, site)
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / "index.html").as_uri())
        everything = await tab.eval(VISIBLE)
        assert len(everything) == 5
        for typed, expected in (
            ("zebra", ["app2/beta.html"]),
            ("gamma", ["app2/gamma.html"]),
            ("imager", ["app1/hostile.html"]),
            ("QUARTERLY num", ["app1/alpha.html"]),
            ("<b>Hostile</b>", ["app1/hostile.html"]),
        ):
            await tab.eval(
                "(() => { const f = document.getElementById('filter'); f.value = '';"
                " f.focus(); })()"
            )
            await tab.send("Input.insertText", text=typed)
            assert await tab.eval(VISIBLE) == expected, typed
            assert await tab.eval("document.getElementById('shown').textContent") == "1"
        await tab.eval("(() => { const f = document.getElementById('filter'); f.select(); })()")
        await tab.send(
            "Input.dispatchKeyEvent",
            type="keyDown",
            key="Backspace",
            code="Backspace",
            windowsVirtualKeyCode=8,
        )
        await tab.send(
            "Input.dispatchKeyEvent",
            type="keyUp",
            key="Backspace",
            code="Backspace",
            windowsVirtualKeyCode=8,
        )
        assert await tab.eval(VISIBLE) == everything
        for page in [site / "index.html", *sorted(site.glob("*/*.html"))]:
            await tab.navigate(page.as_uri())
            await no_escape(tab, [site, a.root])
        errors = [
            e
            for e in tab.events
            if e["method"] in ("Runtime.exceptionThrown", "Log.entryAdded")
            and e["params"].get("entry", {}).get("level", "error") == "error"
        ]
        assert errors == []


async def test_a_time_keeps_its_place_next_to_a_right_to_left_name(tmp_path: Path) -> None:
    """Beside an Arabic or Hebrew name (and text) the time is one box to the right of the name,
    as beside a Latin name: the names and texts are isolated, so bidi reordering stays inside."""
    a = Archive(tmp_path / "dir")
    stamp = "2026-11-20T10:04:30.000Z"
    names = ("Ann Lee", "سارة 12", "דוד 7")
    a.add_chat(APP, "rtl", [Msg(f"m{i}", n, f"{n} 42", stamp) for i, n in enumerate(names)])
    site = tmp_path / "site"
    render_site(a.root, a.manifest, site)
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / APP / "rtl.html").as_uri())
        boxes = await tab.eval(
            "[...document.querySelectorAll('li.msg')].map(li => {"
            " const w = li.querySelector('.who').getBoundingClientRect();"
            " const t = li.querySelector('time');"
            " return [t.getClientRects().length, t.getBoundingClientRect().left - w.right,"
            " t.textContent]; })"
        )
    assert len(boxes) == 3
    for fragments, gap, _ in boxes:
        assert fragments == 1 and gap >= 0, boxes
    assert len({text for _, _, text in boxes}) == 1


async def test_the_filter_finds_every_word_folded_as_search_does(tmp_path: Path) -> None:
    """A word after 1,500 others of its session and an accented word typed without its accents
    (or in capitals) are found: the filter searches every word, folded as `search` does."""
    a = Archive(tmp_path / "dir")
    filler = " ".join(f"w{i}" for i in range(1500))
    simple_session(a, APP, "long", 0, filler, "the lastword here")
    simple_session(a, APP, "accent", 5, "mon Résumé final")
    simple_session(a, APP, "other", 9, "nothing of note")
    site = tmp_path / "site"
    render_site(a.root, a.manifest, site)
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / "index.html").as_uri())
        assert len(await tab.eval(VISIBLE)) == 3
        for typed, expected in (
            ("lastword", [f"{APP}/long.html"]),
            ("w1499", [f"{APP}/long.html"]),
            ("resume", [f"{APP}/accent.html"]),
            ("RÉSUMÉ", [f"{APP}/accent.html"]),
        ):
            await tab.eval("(() => { const f = document.getElementById('filter');"
                           " f.value = ''; f.focus(); })()")  # fmt: skip
            await tab.send("Input.insertText", text=typed)
            assert await tab.eval(VISIBLE) == expected, typed
