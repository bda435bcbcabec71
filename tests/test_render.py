"""The renderer on hand-made archives: hostile text stays text, links stay inside the site and
the archive, attachments resolve to their archived copies, paging, the incremental record,
damage and exit codes."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from exporter.render import pages, site
from exporter.render.chat import Damaged, payload_link, read_messages
from exporter.render.site import render_site
from tests.render_archive import HEADER, HOSTILE, Archive, Msg, chat_csv, png, simple_session

APP = "app1"


class Page(HTMLParser):
    """A page's elements, attributes and text, as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in.append(tag)
        if tag == "script":
            self.scripts.append((dict(attrs), ""))

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        elif not (self._in and self._in[-1] == "style"):
            self.text.append(data)

    def all_text(self) -> str:
        return "".join(self.text)

    def urls(self) -> list[str]:
        return [v for _, a in self.tags for k, v in a.items() if k in ("href", "src") and v]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "render", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def hostile_archive(tmp_path: Path) -> Archive:
    a = Archive(tmp_path / "dir")
    msgs = [
        Msg(f"h{i}", text[:40], text, f"2026-11-20T09:00:{i:02d}Z", pinned=i == 1, edited=i == 2)
        for i, text in enumerate(HOSTILE)
    ]
    msgs.append(
        Msg("img1", "<b>Imager</b>", "javascript:alert(1)", "2026-11-20T09:01:00Z", "IMAGE_MESSAGE")
    )
    msgs.append(
        Msg(
            "file1",
            "Filer",
            json.dumps({"link": "https://127.0.0.1:9/x.html", "name": "<script>x</script>.pdf"}),
            "2026-11-20T09:02:00Z",
            "FILE_MESSAGE",
        )
    )
    a.add_chat(APP, "hostile", msgs)
    a.add_text(APP, "hostile", "summary", "</pre><script>document.title='pwned-summary'</script>")
    return a


def test_hostile_messages_are_shown_as_text_and_nothing_else(tmp_path: Path) -> None:
    """Every hostile message appears as its own text; the page holds only our own elements,
    no script at all, no event handler, and no link with a scheme."""
    a = hostile_archive(tmp_path)
    out = render_site(a.root, a.manifest, a.root / "html")
    assert out.rendered == 1 and not out.damaged
    html = (a.root / "html" / APP / "hostile.html").read_text(encoding="utf-8")
    page = Page(html)
    text = page.all_text()
    for payload in HOSTILE:
        assert payload in text, payload
    assert "</pre><script>document.title='pwned-summary'</script>" in text
    assert page.scripts == []
    allowed = {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "header",
        "a",
        "h1",
        "h2",
        "p",
        "ol",
        "li",
        "span",
        "bdi",
        "time",
        "div",
        "pre",
        "footer",
        "code",
    }
    assert {t for t, _ in page.tags} <= allowed
    for _, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), attrs
    for url in page.urls():
        assert ":" not in url.split("/")[0], url  # relative: no scheme, no host
    assert "javascript:alert(1)" in text and "https://127.0.0.1:9/x.html" in text


def test_the_csp_admits_only_the_pages_own_style_and_script_by_hash(tmp_path: Path) -> None:
    """Session pages allow no script; index pages only their inline script, by its SHA-256;
    neither allows a remote load or 'self' as script."""
    a = hostile_archive(tmp_path)
    render_site(a.root, a.manifest, a.root / "html")
    for path, has_script in (
        (a.root / "html" / APP / "hostile.html", False),
        (a.root / "html" / "index.html", True),
    ):
        page = Page(path.read_text(encoding="utf-8"))
        (policy,) = [
            at["content"]
            for t, at in page.tags
            if t == "meta" and (at.get("http-equiv") or "").lower() == "content-security-policy"
        ]
        assert policy is not None
        rules = dict(r.strip().split(" ", 1) for r in policy.split(";"))
        assert rules["default-src"] == "'none'"
        assert "http" not in policy and "*" not in policy
        # Everything not named falls to default-src 'none'; pictures and recordings are the
        # archive's own files only.
        assert set(rules) == {
            "default-src", "img-src", "media-src", "style-src", "script-src", "base-uri",
            "form-action",
        }  # fmt: skip
        assert rules["img-src"] == rules["media-src"] == "'self'"
        assert rules["base-uri"] == rules["form-action"] == "'none'"
        inline = [s for at, s in page.scripts if "type" not in at]
        if has_script:
            (code,) = inline
            digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
            assert rules["script-src"] == f"'sha256-{digest}'"
        else:
            assert inline == [] and rules["script-src"] == "'none'"


def test_the_search_index_is_inert_json_holding_names_ids_and_words(tmp_path: Path) -> None:
    """The filter's data cannot close its script element, and reads back to the names, the
    session id and the chat's words."""
    a = hostile_archive(tmp_path)
    simple_session(a, APP, "quiet-one", 5, "budget approved by finance")
    render_site(a.root, a.manifest, a.root / "html")
    html = (a.root / "html" / "index.html").read_text(encoding="utf-8")
    block = re.search(
        r'<script type="application/json" id="search-index">(.*?)</script>', html, re.S
    )
    assert block is not None
    raw = block.group(1)
    assert "<" not in raw and ">" not in raw and "&" not in raw
    data = json.loads(raw)
    assert len(data) == 2
    joined = " ".join(data)
    assert "quiet-one" in joined and "finance" in joined and "person 0" in joined
    assert "</script><script>document.title='pwned-close'</script>".lower()[:40] in joined


def test_attachments_link_to_archived_copies_and_unarchived_links_stay_text(tmp_path: Path) -> None:
    """An archived image (with or without an extension) is shown from the archive by a
    relative link, an archived PDF linked
    (noopener noreferrer), an archived HTML file not linked, a link never archived shown as
    text only."""
    a = Archive(tmp_path / "dir")
    msgs = [
        Msg(
            "m-img",
            "Ana",
            json.dumps({"link": "https://cdn.invalid/a.png"}),
            "2026-11-20T09:00:00Z",
            "IMAGE_MESSAGE",
        ),
        Msg(
            "m-pdf",
            "Ana",
            json.dumps({"url": "https://cdn.invalid/r.pdf", "name": "report.pdf", "size": 2048}),
            "2026-11-20T09:00:01Z",
            "FILE_MESSAGE",
        ),
        Msg(
            "m-html", "Bo", "https://cdn.invalid/page.html", "2026-11-20T09:00:02Z", "FILE_MESSAGE"
        ),
        Msg(
            "m-gone", "Bo", "https://cdn.invalid/never.png", "2026-11-20T09:00:03Z", "IMAGE_MESSAGE"
        ),
    ]
    msgs.append(
        Msg("m-noext", "Cy", "https://cdn.invalid/raw", "2026-11-20T09:00:04Z", "IMAGE_MESSAGE")
    )
    a.add_chat(APP, "s1", msgs)
    img = a.add_attachment(APP, "s1", "m-img", "png", png())
    noext = a.add_attachment(APP, "s1", "m-noext", "", png())
    pdf = a.add_attachment(APP, "s1", "m-pdf", "pdf", b"%PDF-1.4\n")
    a.add_attachment(APP, "s1", "m-html", "html", b"<script>alert(1)</script>")
    site_dir = tmp_path / "elsewhere" / "site"
    render_site(a.root, a.manifest, site_dir)
    page_path = site_dir / APP / "s1.html"
    page = Page(page_path.read_text(encoding="utf-8"))
    imgs = [at["src"] for t, at in page.tags if t == "img"]
    assert [(page_path.parent / i).resolve() for i in imgs] == [
        (a.root / img).resolve(),
        (a.root / noext).resolve(),
    ]
    links = {at["href"]: at for t, at in page.tags if t == "a" and at.get("class") == "file"}
    (href,) = links
    assert (page_path.parent / href).resolve() == (a.root / pdf).resolve()
    assert links[href]["rel"] == "noopener noreferrer"
    assert not any("m-html" in u for u in page.urls())
    assert "m-html.html" in page.all_text()
    assert "https://cdn.invalid/never.png" in page.all_text()
    assert not any("cdn.invalid" in u for u in page.urls())


def test_a_session_page_shows_names_times_marks_line_breaks_transcript_and_summary(
    tmp_path: Path,
) -> None:
    """Names, UTC times, pinned and edited marks, multi-line text, then transcript and summary."""
    a = Archive(tmp_path / "dir")
    a.add_chat(
        APP,
        "s1",
        [
            Msg("1", "Zoë", "first line\nsecond line", "2026-11-20T09:00:00+01:00", pinned=True),
            Msg("2", "O'Brien, Pat", 'said "hi"', "2026-11-20T08:30:05.123Z", edited=True),
        ],
    )
    a.add_text(APP, "s1", "transcript", "startTime,text\n0,hello there\n")
    a.add_text(APP, "s1", "summary", "They agreed.")
    render_site(a.root, a.manifest, a.root / "html")
    html = (a.root / "html" / APP / "s1.html").read_text(encoding="utf-8")
    text = Page(html).all_text()
    assert "first line\nsecond line" in text
    assert "2026-11-20 08:00:00 UTC" in text and "2026-11-20 08:30:05 UTC" in text
    assert text.index("pinned") < text.index("O'Brien, Pat") < text.index("edited")
    assert text.index('said "hi"') < text.index("hello there") < text.index("They agreed.")


def test_index_pages_hold_at_most_page_size_sessions_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions are listed by app, newest first, PAGE_SIZE a page; when the archive shrinks,
    the extra pages go."""
    monkeypatch.setattr(site, "PAGE_SIZE", 3)
    a = Archive(tmp_path / "dir")
    for i in range(7):
        simple_session(a, APP, f"s{i}", i * 5)
    out = render_site(a.root, a.manifest, a.root / "html")
    assert out.index_pages == 3
    order = []
    for name in ("index.html", "index-2.html", "index-3.html"):
        found = re.findall(r'href="app1/(s\d)\.html"', (a.root / "html" / name).read_text())
        assert 1 <= len(found) <= 3
        order += found
    assert order == [f"s{i}" for i in reversed(range(7))]
    b = Archive(tmp_path / "dir2")
    b.root.mkdir()
    (b.root / APP).symlink_to(a.root / APP)
    for i in range(4):
        simple_session(b, APP, f"s{i}", i * 5)
    # the same site, fed a smaller archive
    out = render_site(b.root, b.manifest, a.root / "html")
    assert out.index_pages == 2 and out.removed == 3
    assert not (a.root / "html" / "index-3.html").exists()
    assert not (a.root / "html" / APP / "s6.html").exists()


def test_a_rerun_renders_only_what_changed(tmp_path: Path) -> None:
    """A rerun renders nothing and rewrites no page; a changed session (new manifest line) and
    a deleted page are rendered again, and only they."""
    a = Archive(tmp_path / "dir")
    for i in range(4):
        simple_session(a, APP, f"s{i}", i)
    html = a.root / "html"
    assert render_site(a.root, a.manifest, html).rendered == 4
    stamps = {p: p.stat().st_mtime_ns for p in html.rglob("*.html")}
    again = render_site(a.root, a.manifest, html)
    assert (again.rendered, again.unchanged, again.index_written) == (0, 4, 0)
    assert {p: p.stat().st_mtime_ns for p in html.rglob("*.html")} == stamps
    simple_session(a, APP, "s2", 2, "a new word: zanzibar")
    (html / APP / "s3.html").unlink()
    third = render_site(a.root, a.manifest, html)
    assert (third.rendered, third.unchanged) == (2, 2)
    assert "zanzibar" in (html / APP / "s2.html").read_text()
    assert "zanzibar" in (html / "index.html").read_text()
    assert (html / APP / "s0.html").stat().st_mtime_ns == stamps[html / APP / "s0.html"]


def test_a_damaged_csv_is_named_and_skipped_and_the_rest_rendered(tmp_path: Path) -> None:
    """Exit 1 naming the damaged CSV on stderr; the other sessions are rendered; damage found
    after an earlier render is found on the rerun too."""
    a = Archive(tmp_path / "dir")
    simple_session(a, APP, "good", 1)
    bad = a.root / APP / "bad.csv"
    simple_session(a, APP, "bad", 2)
    later = a.root / APP / "later.csv"
    simple_session(a, APP, "later", 3)
    bad.write_bytes(bad.read_bytes()[:-9])  # cut short inside the last row
    result = run(str(a.root))
    assert result.returncode == 1, result.stderr
    assert "app1/bad.csv" in result.stderr and "app1/good.csv" not in result.stderr
    assert (a.root / "html" / APP / "good.html").is_file()
    assert not (a.root / "html" / APP / "bad.html").exists()
    assert "bad.html" not in (a.root / "html" / "index.html").read_text()
    later.write_bytes(later.read_bytes().replace(b"hello", b"HELLO"))
    again = run(str(a.root))
    assert again.returncode == 1 and "app1/later.csv" in again.stderr
    assert not (a.root / "html" / APP / "later.html").exists()


def test_exit_2_without_dir_or_manifest_and_0_when_all_rendered(tmp_path: Path) -> None:
    """No DIR or no manifest: exit 2 and nothing written; a whole archive: exit 0, and verify
    then still finds the archive intact (the site is not reported)."""
    assert run(str(tmp_path / "nope")).returncode == 2
    (tmp_path / "empty").mkdir()
    assert run(str(tmp_path / "empty")).returncode == 2
    assert list((tmp_path / "empty").iterdir()) == []
    a = Archive(tmp_path / "dir")
    simple_session(a, APP, "s1", 0)
    assert run(str(a.root)).returncode == 0
    verify = subprocess.run(
        [sys.executable, "-m", "exporter", "verify", str(a.root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_chat_columns_are_read_by_header_name_and_both_payload_forms_understood(
    tmp_path: Path,
) -> None:
    """A CSV with its columns in another order reads the same; a JSON payload (link, url or
    downloadUrl) and a bare URL both give the link."""
    reordered = tuple(reversed(HEADER))
    path = tmp_path / "c.csv"
    path.write_bytes(
        chat_csv(
            "s",
            [Msg("1", 'Ana, "A"', "multi\nline, quoted", "2026-11-20T09:00:00Z", pinned=True)],
            header=reordered,
        )
    )
    (m,) = list(read_messages(path))
    assert (m.name, m.text, m.pinned, m.edited) == ('Ana, "A"', "multi\nline, quoted", True, False)
    for key in ("link", "url", "downloadUrl"):
        assert payload_link(json.dumps({key: "https://h/x", "name": "n", "size": 3})) == (
            "https://h/x",
            "n",
            3,
        )
    assert payload_link("https://h/y.png") == ("https://h/y.png", None, None)
    assert payload_link("just words") == (None, None, None)


@pytest.mark.parametrize(
    "body",
    [
        b'id,displayName,payloadType,payload,createdAt\r\n1,a,TEXT_MESSAGE,"torn',
        b"id,displayName,payloadType,payload,createdAt\r\n1,a,TEXT_MESSAGE\r\n",
        b"id,displayName,payloadType,payload,createdAt\r\n1,\xff\xfe,TEXT_MESSAGE,x,y\r\n",
        b"id,name,payload\r\n1,a,b\r\n",
        b"",
    ],
)
def test_a_damaged_chat_csv_raises_damaged(tmp_path: Path, body: bytes) -> None:
    """A torn quote, a short row, bad UTF-8, missing columns or an empty file is Damaged."""
    path = tmp_path / "c.csv"
    path.write_bytes(body)
    with pytest.raises(Damaged):
        list(read_messages(path))


def test_a_page_that_fails_while_written_leaves_no_file(tmp_path: Path) -> None:
    """A failure half-way through a page leaves neither the page nor a temporary file."""

    def chunks():
        yield "<p>half"
        raise Damaged("boom")

    target = tmp_path / "x" / "page.html"
    with pytest.raises(Damaged):
        pages.write_atomic(target, chunks())
    assert os.listdir(target.parent) == []


def test_other_templates_or_a_damaged_record_render_every_page_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages made from other templates are not kept; a record that is not a database costs
    a full render, not a failure."""
    a = Archive(tmp_path / "dir")
    for i in range(3):
        simple_session(a, APP, f"s{i}", i)
    html = a.root / "html"
    render_site(a.root, a.manifest, html)
    monkeypatch.setattr(pages, "DIGEST", "another-template")
    assert render_site(a.root, a.manifest, html).rendered == 3
    assert render_site(a.root, a.manifest, html).rendered == 0
    (record,) = html.glob(".rtk-export-site*")
    record.write_bytes(b"not a database" * 100)
    assert render_site(a.root, a.manifest, html).rendered == 3


def test_a_changed_transcript_or_a_missing_chat_is_named_by_its_path(tmp_path: Path) -> None:
    """A transcript that differs from its manifest record and a chat CSV that is gone are
    each reported with their path under DIR, and their sessions left out of the site."""
    a = Archive(tmp_path / "dir")
    simple_session(a, APP, "talk", 0)
    a.add_text(APP, "talk", "transcript", "0,hello\n")
    simple_session(a, APP, "gone", 5)
    simple_session(a, APP, "fine", 9)
    (a.root / APP / "talk.transcript.csv").write_text("0,hullo\n")
    (a.root / APP / "gone.csv").unlink()
    said: list[str] = []
    out = render_site(a.root, a.manifest, a.root / "html", said.append)
    assert sorted(out.damaged) == [f"{APP}/gone.csv", f"{APP}/talk.transcript.csv"]
    assert any(line.startswith(str(a.root / APP / "gone.csv")) for line in said)
    assert any(line.startswith(str(a.root / APP / "talk.transcript.csv")) for line in said)
    assert sorted(p.name for p in (a.root / "html" / APP).iterdir()) == ["fine.html"]


def test_an_exported_archive_renders_whole_and_stays_verified(tmp_path: Path) -> None:
    """After a real export (the demo, against the stand-in, with transcripts and summaries),
    every archived session has a page holding each message's name and text (read here with
    the csv module), its transcript's speakers and texts, and its summary; verify still passes."""
    out = tmp_path / "archive"
    demo = subprocess.run(
        [sys.executable, "-m", "exporter", "demo", "--discover", "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert run(str(out)).returncode == 0
    latest = {}
    for raw in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        doc = json.loads(raw)
        latest[(doc["app_id"], doc["session_id"], doc["kind"])] = doc
    chats = [d for d in latest.values() if d["kind"] == "chat" and d["path"]]
    assert chats
    for doc in chats:
        page = out / "html" / doc["app_id"] / f"{doc['session_id']}.html"
        text = Page(page.read_text(encoding="utf-8")).all_text()
        with open(out / doc["path"], encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                assert row["displayName"] in text
                if row["payloadType"] == "TEXT_MESSAGE":
                    assert row["payload"] in text
        summary = latest.get((doc["app_id"], doc["session_id"], "summary"))
        if summary and summary["path"]:
            body = (out / summary["path"]).read_text(encoding="utf-8")
            assert body.replace("\r\n", "\n") in text.replace("\r\n", "\n")
        talk = latest.get((doc["app_id"], doc["session_id"], "transcript"))
        if talk and talk["path"]:
            # Shown as a conversation: each utterance's speaker and text (the demo's are CSV).
            assert talk["path"].endswith(".csv"), talk["path"]
            with open(out / talk["path"], encoding="utf-8", newline="") as fh:
                for row in csv.DictReader(fh):
                    assert row["displayName"] in text
                    assert row["transcript"].replace("\r\n", "\n") in text.replace("\r\n", "\n")
    verify = subprocess.run(
        [sys.executable, "-m", "exporter", "verify", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout


def test_recordings_play_in_the_page_are_linked_and_counted_in_the_index(tmp_path: Path) -> None:
    """An archived recording is a <video> (or <audio>) whose source is the archived file, its
    size shown, and linked; a type no page plays is only linked, one that could run in a
    browser not even that; one whose line names no file is left out; the index counts them."""
    a = Archive(tmp_path / "dir")
    a.add_chat(APP, "s1", [Msg("m1", "Ana", "hi", "2026-11-20T09:00:00Z")])
    body = b"\x00\x00\x00\x18ftypmp42" + bytes(3000)
    files = {}
    for rid, ext in (("rec-1", "mp4"), ("rec-3", "m4a"), ("rec-4", "mkv"), ("rec-5", "html")):
        files[rid] = rel = f"{APP}/s1.recordings/{rid}.{ext}"
        a._store(APP, "s1", "recording", rel, body, recording_id=rid)
    a.line(APP, "s1", "recording", status="unavailable", recording_id="rec-2")
    site_dir = tmp_path / "site"
    render_site(a.root, a.manifest, site_dir)
    page_path = site_dir / APP / "s1.html"
    page = Page(page_path.read_text(encoding="utf-8"))

    def target(ref: str | None) -> Path:
        assert ref and ":" not in ref.split("/")[0], ref  # relative: the file itself, no copy
        return (page_path.parent / ref).resolve()

    players = [(t, at) for t, at in page.tags if t in ("video", "audio")]
    assert [(t, target(at["src"])) for t, at in players] == [
        ("video", (a.root / files["rec-1"]).resolve()),
        ("audio", (a.root / files["rec-3"]).resolve()),
    ]
    assert all(at["preload"] == "none" and "controls" in at for _, at in players)
    hrefs = [at["href"] for t, at in page.tags if t == "a" and "recording" in at.get("href", "")]
    assert [target(h) for h in hrefs] == [
        (a.root / files[r]).resolve() for r in ("rec-1", "rec-3", "rec-4")
    ]
    text = page.all_text()
    assert text.count("(2.9 KiB)") == 2 + 4  # under each player, and beside each file
    assert "recording (rec-5.html) (2.9 KiB)" in text
    assert "rec-2" not in text
    assert not list(site_dir.rglob("*.mp4"))  # played from DIR, never copied
    assert "4 recordings" in (site_dir / "index.html").read_text(encoding="utf-8")
