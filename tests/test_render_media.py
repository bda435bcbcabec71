"""Recordings and pictures in a real browser: a recording's <video> loads the archived file
itself under the site's CSP, and in the demo's rendered site every picture decodes, the PDF
is a whole PDF and the uploaded recording plays."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

from exporter.render.site import render_site
from tests.cdp import Tab, browser
from tests.render_archive import Archive, Msg

APP = "app1"
WEBM = (resources.files("exporter.standin") / "data" / "recording.webm").read_bytes()

# Resolves when the element has its metadata (or fails): [readyState, duration, error code].
LOAD = (
    "(() => { const v = document.querySelector('video'); v.load();"
    " return new Promise(r => { v.onloadedmetadata = v.onerror = () =>"
    " r([v.readyState, v.duration, v.error && v.error.code, v.currentSrc]); }); })()"
)
DECODED = (
    "Promise.all([...document.images].map(i => { i.loading = 'eager';"
    " return i.complete ? null : new Promise(r => { i.onload = i.onerror = r; }); }))"
    ".then(() => [...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.src]))"
)


def console_errors(tab: Tab) -> list[object]:
    return [
        e["params"]
        for e in tab.events
        if e["method"] in ("Runtime.exceptionThrown", "Log.entryAdded")
        and e["params"].get("entry", {}).get("level", "error") == "error"
    ]


async def test_a_recording_plays_from_the_archived_file(tmp_path: Path) -> None:
    """The <video> loads its metadata (readyState > 0, about one second long) from the file in
    DIR, with the site elsewhere; nothing is copied and the CSP refuses nothing."""
    a = Archive(tmp_path / "dir")
    a.add_chat(APP, "s1", [Msg("m1", "Ana", "hi", "2026-11-20T09:00:00Z")])
    rel = f"{APP}/s1.recordings/rec-1.webm"
    a._store(APP, "s1", "recording", rel, WEBM, recording_id="rec-1")
    site = tmp_path / "site"
    render_site(a.root, a.manifest, site)
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / APP / "s1.html").as_uri())
        # preload="none": nothing is fetched until the reader asks.
        assert not any(u.endswith(".webm") for u in tab.requested())
        state, duration, error, src = await tab.eval(LOAD)
        assert error is None and state > 0, (state, error)
        assert 0.9 <= duration <= 1.1
        assert src == (a.root / rel).resolve().as_uri()
        assert console_errors(tab) == []
    assert not list(site.rglob("*.webm"))


def pdf_is_whole(data: bytes) -> bool:
    """A PDF a reader opens: header, every xref offset at its object, startxref at the xref."""
    if not data.startswith(b"%PDF-1.") or not data.rstrip().endswith(b"%%EOF"):
        return False
    m = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    if m is None or not data[int(m.group(1)) :].startswith(b"xref"):
        return False
    table = re.search(rb"xref\s+0 (\d+)\s+((?:\d{10} \d{5} [nf] ?\r?\n)+)", data)
    if table is None:
        return False
    rows = table.group(2).split(b"\n")[1:-1]
    return len(rows) == int(table.group(1)) - 1 and all(
        data[int(row[:10]) :].startswith(b"%d 0 obj" % n) for n, row in enumerate(rows, start=1)
    )


async def test_the_demos_pictures_decode_its_pdf_is_whole_and_its_recording_plays(
    tmp_path: Path,
) -> None:
    """A demo export rendered: every <img> on every page decodes, each PNG, JPEG and GIF
    among them; every PDF attachment is a whole PDF; an uploaded recording loads."""
    out = tmp_path / "archive"
    demo = subprocess.run(
        [sys.executable, "-m", "exporter", "demo", "--out", str(out), "--progress", "never"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    site = tmp_path / "site"
    render_site(out, out / "manifest.jsonl", site)
    pdfs = sorted(out.glob("*/*.attachments/*.pdf"))
    assert pdfs and all(pdf_is_whole(p.read_bytes()) for p in pdfs)
    pages = sorted(site.glob("*/*.html"))
    assert pages
    seen: set[str] = set()
    videos = 0
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        for page in pages:
            await tab.navigate(page.as_uri())
            for width, height, src in await tab.eval(DECODED):
                assert width > 0 and height > 0, src
                seen.add(src.rsplit(".", 1)[-1])
            if await tab.eval("document.querySelectorAll('video').length"):
                videos += 1
                state, duration, error, _ = await tab.eval(LOAD)
                assert error is None and state > 0 and duration > 0.9, (page, error)
        assert console_errors(tab) == []
    assert {"png", "jpg", "gif"} <= seen
    assert videos > 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert any(d["kind"] == "recording" and (d["path"] or "").endswith(".webm") for d in lines)
