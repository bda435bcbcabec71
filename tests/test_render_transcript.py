"""A transcript on its session page, in a real browser: one row per utterance with its speaker,
start and text, whichever of CSV, JSON, VTT and SRT was archived; the raw file linked; a
malformed one shown as archived with a note, the page rendered all the same."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from exporter.render.site import render_site
from tests.cdp import browser
from tests.render_archive import Archive, Msg

APP = "app1"
# (speaker, start in seconds, text): Latin, right-to-left, a line break, a stranger's markup.
SAID = [
    ("Ana", 0.0, "hello there"),
    ("محمد علي", 4.5, "مرحبا 42"),
    ("Bo", 64.25, "line one\nline two"),
    ("<b>Eve</b>", 3725.0, "<script>document.title='pwned'</script> & co"),
]
SHOWN = ["0:00:00", "0:00:04", "0:01:04", "1:02:05"]


def clock(seconds: float, comma: bool) -> str:
    h, rest = divmod(seconds, 3600)
    text = f"{int(h):02d}:{int(rest // 60):02d}:{rest % 60:06.3f}"
    return text.replace(".", ",") if comma else text


def as_csv() -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["startTime", "displayName", "transcript"])
    w.writerows([start, who, text] for who, start, text in SAID)
    return out.getvalue()


def as_json() -> str:
    return json.dumps({"utterances": [{"name": w, "start": s, "text": t} for w, s, t in SAID]})


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def as_vtt() -> str:
    cues = [
        f"{clock(s, False)} --> {clock(s + 4, False)}\n<v {esc(w)}>{esc(t)}" for w, s, t in SAID
    ]
    return "WEBVTT\n\n" + "\n\n".join(cues) + "\n"


def as_srt() -> str:
    cues = [
        f"{i}\n{clock(s, True)} --> {clock(s + 4, True)}\n{w}: {t}"
        for i, (w, s, t) in enumerate(SAID, start=1)
    ]
    return "\n\n".join(cues) + "\n"


ROWS = (
    "[...document.querySelectorAll('ol.said li.utt')].map(li => ["
    " li.querySelector('.who').textContent, li.querySelector('time').textContent,"
    " li.querySelector('.text').textContent,"
    " li.querySelector('time').getBoundingClientRect().left"
    " - li.querySelector('.who').getBoundingClientRect().right])"
)


@pytest.mark.parametrize(
    ("fmt", "body"), [("csv", as_csv), ("json", as_json), ("vtt", as_vtt), ("srt", as_srt)]
)
async def test_each_format_reads_as_a_conversation(tmp_path: Path, fmt: str, body: object) -> None:
    """Speaker, start and text of every utterance, in order, the time right of the speaker
    (Arabic too); markup in a name or text is text; the raw file is linked."""
    a = Archive(tmp_path / "dir")
    a.add_chat(APP, "talk", [Msg("m1", "Ana", "hi", "2026-11-20T09:00:00Z")])
    a.add_text(APP, "talk", "transcript", body(), fmt)  # type: ignore[operator]
    site = tmp_path / "site"
    out = render_site(a.root, a.manifest, site)
    assert out.rendered == 1 and not out.damaged
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / APP / "talk.html").as_uri())
        rows = await tab.eval(ROWS)
        assert [r[:3] for r in rows] == [
            [w, shown, t] for (w, _, t), shown in zip(SAID, SHOWN, strict=True)
        ]
        assert all(gap >= 0 for *_, gap in rows), rows
        assert await tab.eval("document.title") == "Session talk · rtk-export archive"
        assert await tab.eval("document.querySelectorAll('pre').length") == 0
        link = await tab.eval(
            "[...document.querySelectorAll('a')].filter(a => a.textContent =="
            f" 'talk.transcript.{fmt}').map(a => a.href)"
        )
        assert link and all(
            h == (a.root / APP / f"talk.transcript.{fmt}").resolve().as_uri() for h in link
        )


@pytest.mark.parametrize(
    ("fmt", "body", "why"),
    [
        ("json", '{"utterances": [{"name": "Ana", "text": "cut sh', "is not valid JSON"),
        ("vtt", "00:00.000 --> 00:01.000\nno header\n", "does not start with WEBVTT"),
        ("srt", "1\nsoon --> later\n<i>hi</i>\n", "is not a time"),
        ("csv", "startTime,speaker\n0,Ana\n", "has no text column"),
    ],
)
async def test_a_malformed_transcript_is_shown_as_archived_with_a_note(
    tmp_path: Path, fmt: str, body: str, why: str
) -> None:
    """The page renders; the file's text is shown exactly, with a note saying why it is not a
    conversation; the chat is there as ever."""
    a = Archive(tmp_path / "dir")
    a.add_chat(APP, "talk", [Msg("m1", "Ana", "the chat", "2026-11-20T09:00:00Z")])
    a.add_text(APP, "talk", "transcript", body, fmt)
    site = tmp_path / "site"
    out = render_site(a.root, a.manifest, site)
    assert out.rendered == 1 and not out.damaged
    async with browser(tmp_path / "profile") as b:
        tab = await b.new_tab()
        await tab.navigate((site / APP / "talk.html").as_uri())
        assert await tab.eval("document.querySelectorAll('li.utt').length") == 0
        assert await tab.eval("document.querySelector('pre').textContent") == body
        note = await tab.eval("document.querySelector('p.note').textContent")
        assert why in note and "as archived" in note
        assert await tab.eval("document.querySelector('ol.chat .text').textContent") == "the chat"
