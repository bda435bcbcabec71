"""`rtk-export search` as a user runs it: exit codes, one clear line for what cannot be searched,
the output of each mode (hostile text never raw), a real export searched, verify untroubled by
the index, and an archive in moto's bucket."""

from __future__ import annotations

import csv
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.archive import SEARCH_INDEX_NAME
from exporter.standin import StandinConfig, StandinServer, standin_in_thread
from tests.helpers import ACCOUNT, ROOT, TOKEN, cli_env, pairs, run_cli, write_sessions
from tests.s3fakes import store_env
from tests.search_archive import APP, Archive, Msg, session

HOSTILE = "see \x1b[2J\x1b]0;pwned\x07 and \u202eevil\u202c\r\nnext [bold]line[/bold]"


def search(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(["search", *args], env or dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.fixture
def a(tmp_path: Path) -> Archive:
    archive = Archive(tmp_path / "dir")
    session(archive, "s1", "the budget meeting", "Résumé attached", HOSTILE)
    archive.add_chat(
        APP, "s2", [Msg("x1", "Zoë \u202eEve", "budget again", "2026-11-21T08:00:00Z")]
    )
    return archive


def test_exit_0_with_hits_1_without_and_the_update_said_once(a: Archive) -> None:
    """Hits: 0, one line each on stdout; none: 1; the first search says it built the index."""
    found = search(str(a.root), "budget")
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == [
        f"2026-11-21 08:00:00 UTC  {APP}/s2  Zoë \\u202eEve: [budget] again",
        f"2026-11-20 09:00:00 UTC  {APP}/s1  Ana: the [budget] meeting",
    ]
    assert "index updated: 2 session(s) read, 0 removed" in found.stderr
    again = search(str(a.root), "nothing-like-this")
    assert again.returncode == 1 and again.stdout == "" and again.stderr == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (['"unclosed'], "bad query"),
        (["*"], "bad query"),
        (["NEAR("], None),  # a plain word: no hit, exit 1
        (["x", "--since", "yesterday"], "--since"),
        (["x", "--since", "last-run"], "last-run"),
        (["x", "--since", "2026-11-21", "--until", "2026-11-20"], "is not before"),
        (["x", "--limit", "0"], "--limit"),
        (["x", "--app", "../etc"], "--app"),
        (["x", "--from", "  "], "--from"),
        (["x", "--s3-endpoint", "http://127.0.0.1:9"], "s3://"),
    ],
)
def test_what_cannot_be_searched_exits_2_with_one_line(
    a: Archive, args: list[str], says: str | None
) -> None:
    done = search(str(a.root), *args)
    assert "Traceback" not in done.stderr
    if says is None:
        assert done.returncode == 1, done.stderr
        return
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("rtk-export search: ") and says in line


def test_a_missing_archive_or_manifest_exits_2(tmp_path: Path) -> None:
    missing = search(str(tmp_path / "nowhere"), "x")
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    bare = search(str(tmp_path / "empty"), "x")
    assert bare.returncode == 2 and "no manifest" in bare.stderr
    assert not (tmp_path / "empty" / SEARCH_INDEX_NAME).exists()


def test_plain_and_json_never_print_control_characters_raw(a: Archive) -> None:
    """Escapes, direction overrides and line breaks are shown escaped; --json objects parse back
    to the text as typed; nothing markup-like is interpreted."""
    plain = search(str(a.root), "pwned")
    assert plain.returncode == 0
    for raw in ("\x1b", "\x07", "\u202e", "\r"):
        assert raw not in plain.stdout
    assert "\\x1b[2J\\x1b]0;[pwned]\\x07 and \\u202eevil\\u202c\\r\\nnext [bold]line[/bold]" in (
        plain.stdout
    )
    js = search(str(a.root), "budget OR pwned", "--json")
    assert js.returncode == 1  # OR is a word here: no message has all three
    js = search(str(a.root), "pwned", "--json")
    for raw in ("\x1b", "\x07", "\u202e", "\r"):
        assert raw not in js.stdout
    (doc,) = [json.loads(line) for line in js.stdout.splitlines()]
    assert doc == {
        "app_id": APP,
        "session_id": "s1",
        "time": "2026-11-20T09:02:00.000Z",
        "author": "Ana",
        "message_id": "s1-m2",
        "kind": "chat",
        "text": HOSTILE,
    }
    names = [
        json.loads(x)["author"]
        for x in search(str(a.root), "budget", "--json").stdout.split("\n")
        if x
    ]
    assert names == ["Zoë \u202eEve", "Ana"]


def test_on_a_terminal_the_match_is_styled_and_hostile_text_still_escaped(a: Archive) -> None:
    """A pseudo-terminal gets rich's styling; the chat's own escapes are shown, not run."""
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", COLUMNS="400")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "search", str(a.root), "pwned"],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=30) == 0
    os.close(leader)
    text = out.decode()
    assert "\x1b[" in text  # rich's own styles
    assert "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\u202eevil" in text and "pwned" in text


def test_verify_does_not_report_the_index_and_a_rerun_reads_nothing(a: Archive) -> None:
    assert search(str(a.root), "budget").returncode == 0
    assert (a.root / SEARCH_INDEX_NAME).is_file()
    verify = run_cli(["verify", str(a.root)], dict(os.environ, PYTHONPATH=str(ROOT)))
    assert verify.returncode == 0, verify.stdout
    assert "untracked" not in verify.stdout
    assert search(str(a.root), "budget").stderr == ""


def test_a_read_only_archive_is_searched_with_the_index_in_the_cache(
    a: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DIR not writable (as for anyone but root on a read-only mount): the index goes to the
    user's cache folder, DIR is left as it was."""
    from exporter.search import command

    monkeypatch.setattr(command.os, "access", lambda path, mode: False)
    code = command.main([str(a.root), "budget"], {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert code == 0
    assert "[budget]" in capsys.readouterr().out
    assert len(list((tmp_path / "cache" / "rtk-export").glob("*.sqlite"))) == 1
    assert not (a.root / SEARCH_INDEX_NAME).exists()


def test_index_option_keeps_the_index_where_asked(a: Archive, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.sqlite"
    assert search(str(a.root), "budget", "--index", str(path)).returncode == 0
    assert path.is_file() and not (a.root / SEARCH_INDEX_NAME).exists()
    bad = search(str(a.root), "budget", "--index", str(a.manifest))
    assert bad.returncode == 2 and "not touched" in bad.stderr


def test_a_real_export_is_searchable_message_by_message(tmp_path: Path) -> None:
    """After the demo's discovery runs against the stand-in (chat and CSV transcripts), each
    text message (read here with the csv module) is found by a phrase of its text, with its
    id; and a transcript utterance is found timed from its session's first message."""
    out = tmp_path / "archive"
    demo = run_cli(
        ["demo", "--discover", "--out", str(out)], dict(os.environ, PYTHONPATH=str(ROOT))
    )
    assert demo.returncode == 0, demo.stderr
    latest = {}
    for raw in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        doc = json.loads(raw)
        latest[(doc["app_id"], doc["session_id"], doc["kind"])] = doc
    chat = next(d for d in latest.values() if d["kind"] == "chat" and d["path"])
    app, sid = chat["app_id"], chat["session_id"]
    with open(out / chat["path"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    word_rows = [
        r
        for r in rows
        if r["payloadType"] == "TEXT_MESSAGE"
        and r["payload"].isascii()
        and any(c.isalpha() for c in r["payload"])
    ]
    row = word_rows[0]
    phrase = (
        '"' + " ".join("".join(c if c.isalnum() else " " for c in row["payload"]).split()) + '"'
    )
    done = search(str(out), phrase, "--app", app, "--json", "--limit", "1000")
    assert done.returncode == 0, done.stderr
    ids = {(d["session_id"], d["message_id"]) for d in map(json.loads, done.stdout.splitlines())}
    assert (sid, row["id"]) in ids
    transcript = next(
        (
            d
            for d in latest.values()
            if d["kind"] == "transcript"
            and d["path"]
            and (d["app_id"], d["session_id"], "chat") in latest
        ),
        None,
    )
    assert transcript is not None
    tapp, tsid = transcript["app_id"], transcript["session_id"]
    with open(out / transcript["path"], encoding="utf-8", newline="") as fh:
        cue = next(r for r in csv.DictReader(fh) if any(c.isalpha() for c in r["transcript"]))
    with open(out / latest[(tapp, tsid, "chat")]["path"], encoding="utf-8", newline="") as fh:
        start = min(datetime.fromisoformat(r["createdAt"]) for r in csv.DictReader(fh))
    words = "".join(c if c.isalnum() else " " for c in cue["transcript"]).split()
    done = search(
        str(out),
        " ".join(words),
        "--app",
        tapp,
        "--json",
        "--limit",
        "1000",
        "--from",
        cue["displayName"],
    )
    assert done.returncode == 0, done.stderr
    hits = [
        d
        for d in map(json.loads, done.stdout.splitlines())
        if d["kind"] == "transcript" and d["session_id"] == tsid
    ]
    assert hits
    expected = start.astimezone(UTC).timestamp() + float(cue["startTime"])
    assert any(abs(datetime.fromisoformat(h["time"]).timestamp() - expected) < 0.002 for h in hits)


@pytest.fixture(scope="module")
def api() -> Iterator[StandinServer]:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def test_an_archive_in_a_bucket_is_searched_with_the_index_in_the_cache(
    api: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """An export to moto (chat and VTT transcripts), searched: hits, the index in the user's
    cache folder, nothing read on a second search, and after a second export only its new
    sessions are read."""
    todo = pairs(6)
    env = cli_env(api.base_url, **store_env(moto_server), XDG_CACHE_HOME=str(tmp_path / "cache"))
    url = f"s3://{bucket}/arch"
    first = write_sessions(tmp_path / "a.txt", todo[:4])
    export = [url, "--include", "chat,transcript", "--transcript-format", "vtt"]
    done = run_cli([str(first), "--out", *export], env)
    assert done.returncode == 0, done.stderr
    found = run_cli(["search", url, "hello", "--json", "--limit", "1000"], env)
    assert found.returncode == 0, found.stderr
    assert "index updated: 4 session(s) read" in found.stderr
    docs = [json.loads(x) for x in found.stdout.splitlines()]
    assert {d["kind"] for d in docs} == {"chat", "transcript"}
    assert {d["session_id"] for d in docs} <= {s for _, s in todo[:4]}
    assert len(list((tmp_path / "cache" / "rtk-export").glob("*.sqlite"))) == 1
    again = run_cli(["search", url, "hello"], env)
    assert again.returncode == 0 and again.stderr == ""
    second = write_sessions(tmp_path / "b.txt", todo)
    done = run_cli([str(second), "--out", *export], env)
    assert done.returncode == 0, done.stderr
    later = run_cli(["search", url, "hello"], env)
    assert "index updated: 2 session(s) read, 0 removed" in later.stderr
    gone = run_cli(["search", f"s3://{bucket}-nope/arch", "hello"], env)
    assert gone.returncode == 2 and "does not exist" in gone.stderr
