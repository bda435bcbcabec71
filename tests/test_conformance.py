"""The spec's outside, driven as a user types it: a demo archive rendered and verified, with
standard output holding nothing that was not asked for; recordings in the site; JSON logs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

from exporter.standin import CannedResponse, StandinConfig, standin_in_thread
from tests.helpers import ACCOUNT, TOKEN, cli_env, pairs, run_cli, write_sessions
from tests.render_archive import Archive, simple_session
from tests.s3fakes import store_env


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_render_anywhere_in_dir_is_not_reported_by_verify_and_stdout_stays_empty(
    tmp_path: Path,
) -> None:
    """After the demo (chat, attachments, recordings), render to the default DIR/html and to
    another folder inside DIR, then export again: verify passes each time, and the demo,
    render and an intact verify print nothing on standard output."""
    out = tmp_path / "archive"
    demo = cli("demo", "--out", str(out))
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout == ""
    for to in ((), ("--to", str(out / "site")), ("--to", str(out / "html" / "again"))):
        render = cli("render", str(out), *to)
        assert render.returncode == 0, render.stderr
        assert render.stdout == ""
        site = Path(to[1]) if to else out / "html"
        assert (site / "index.html").is_file()
        verify = cli("verify", str(out))
        assert (verify.returncode, verify.stdout) == (0, ""), verify.stdout + verify.stderr
    again = cli("demo", "--out", str(out))
    assert again.returncode == 0, again.stderr
    verify = cli("verify", str(out))
    assert (verify.returncode, verify.stdout) == (0, ""), verify.stdout + verify.stderr
    stray = out / "html" / "notes.txt"
    stray.write_text("mine", encoding="utf-8")
    verify = cli("verify", str(out))
    assert verify.returncode == 1 and verify.stdout == "untracked: html/notes.txt\n"


def test_the_index_names_archived_recordings_and_the_page_links_each_one(tmp_path: Path) -> None:
    """Recordings are an archived kind like the others: the index row of a session with one
    says so, and its page links to each archived copy (a relative link that resolves)."""
    out = tmp_path / "archive"
    assert cli("demo", "--out", str(out)).returncode == 0
    assert cli("render", str(out)).returncode == 0
    latest: dict[tuple[str, str, str], dict[str, object]] = {}
    for raw in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        doc = json.loads(raw)
        latest[(doc["app_id"], doc["session_id"], f"{doc['kind']}/{doc.get('recording_id')}")] = doc
    recorded: dict[tuple[str, str], list[str]] = {}
    for (app, sid, unit), doc in latest.items():
        if unit.startswith("recording/") and doc["status"] == "exported":
            recorded.setdefault((app, sid), []).append(str(doc["path"]))
    assert recorded
    index = (out / "html" / "index.html").read_text(encoding="utf-8")
    for (app, sid), paths in recorded.items():
        row = index[index.index(sid) :].split("</li>", 1)[0]
        n = len(paths)
        assert f"{n} recording{'' if n == 1 else 's'}" in row, row
        page = out / "html" / app / f"{sid}.html"
        links = {
            unquote(h) for h in re.findall(r'href="([^"]+)"', page.read_text(encoding="utf-8"))
        }
        for rel in paths:
            target = [h for h in links if h.endswith(rel)]
            assert target, (rel, links)
            assert (page.parent / target[0]).resolve() == (out / rel).resolve()


def test_a_recording_is_linked_only_when_its_type_opens_inertly(tmp_path: Path) -> None:
    """By the attachments' rule, a recording saved as .mp4 is linked from its session's page,
    and one whose name the API gave as .html is named as text, never linked."""
    archive = Archive(tmp_path / "archive")
    simple_session(archive, "app1", "s1", 0, "hello")
    for rid, ext in (("r1", "mp4"), ("r2", "html")):
        rel = f"app1/s1.recordings/{rid}.{ext}"
        archive._store("app1", "s1", "recording", rel, b"<script>x</script>", recording_id=rid)
    assert cli("render", str(archive.root)).returncode == 0
    page = (archive.root / "html" / "app1" / "s1.html").read_text(encoding="utf-8")
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert [h for h in hrefs if "recordings" in h] == ["../../app1/s1.recordings/r1.mp4"]
    assert "recording (r2.html)" in page
    index = (archive.root / "html" / "index.html").read_text(encoding="utf-8")
    assert "2 recordings" in index


def test_json_logs_are_one_object_a_line_each_with_level_and_event(tmp_path: Path) -> None:
    """With --log-format json and -v, every stderr line is one JSON object with `level` and
    an `event` of the run's own (no library's chatter), and a unit's lines (exported, failed,
    a retry) name its pair."""
    config = StandinConfig(token=TOKEN, account_id=ACCOUNT, attachments=2)
    with standin_in_thread(config) as server:
        sessions = write_sessions(tmp_path / "s.txt", pairs(3))
        app, sid = pairs(3)[1]  # one 503, then the answer: a retry of that pair
        server.script(server.api_path(app, sid, "chat"), CannedResponse(503))
        proc = run_cli(
            [
                str(sessions),
                "--out",
                str(tmp_path / "o"),
                "--include",
                "attachments",
                "-v",
                "--log-format",
                "json",
            ],
            cli_env(server.base_url),
        )
    assert proc.returncode == 1, proc.stderr  # the attachments' http links are refused
    assert proc.stdout == ""
    docs = [json.loads(line) for line in proc.stderr.splitlines()]
    assert docs and all({"level", "event"} <= d.keys() for d in docs)
    assert {d["event"] for d in docs} >= {"exported", "failed", "retry_scheduled", "summary"}
    assert "asyncio" not in {d["event"] for d in docs}
    for d in docs:
        if d["event"] in ("exported", "failed", "retry_scheduled"):
            assert (d["app_id"], d["session_id"]) in pairs(3), d


def test_the_storage_endpoint_comes_from_the_option_then_either_variable(
    moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """An export and `verify s3://BUCKET/PREFIX` reach the store named by AWS_ENDPOINT_URL
    alone, by AWS_ENDPOINT_URL_S3 over it, and by --s3-endpoint over both (the variables
    then naming a port where nothing listens); stdout stays empty."""
    dead = "http://127.0.0.1:9"  # discard port: nothing answers there
    ways = [
        ("generic", [], {"AWS_ENDPOINT_URL": moto_server}),
        ("s3", [], {"AWS_ENDPOINT_URL_S3": moto_server, "AWS_ENDPOINT_URL": dead}),
        ("option", ["--s3-endpoint", moto_server], {"AWS_ENDPOINT_URL_S3": dead}),
    ]
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        sessions = write_sessions(tmp_path / "s.txt", pairs(2))
        for name, args, endpoints in ways:
            env = cli_env(server.base_url, **store_env(moto_server))
            env.pop("AWS_ENDPOINT_URL_S3")
            env.update(endpoints)
            out = f"s3://{bucket}/{name}"
            run = run_cli([str(sessions), "--out", out, *args], env)
            assert (run.returncode, run.stdout) == (0, ""), run.stderr
            verify = run_cli(["verify", out, *args], env)
            assert (verify.returncode, verify.stdout) == (0, ""), verify.stderr
            assert "2 objects checked, 2 intact" in verify.stderr


def test_an_invalid_line_is_a_json_event_with_what_could_be_read_of_its_pair(
    tmp_path: Path,
) -> None:
    """Under --log-format json, an invalid SESSIONS line's event carries its line number and
    the app_id and session_id read from it (spec: where they apply)."""
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as live:
        sessions = tmp_path / "s.txt"
        sessions.write_text("app1 s1\nbad!app s2\n", encoding="utf-8")
        proc = run_cli(
            [str(sessions), "--out", str(tmp_path / "o"), "--log-format", "json"],
            cli_env(live.base_url),
        )
    assert proc.returncode == 1, proc.stderr
    (event,) = [e for e in map(json.loads, proc.stderr.splitlines()) if e["event"] == "invalid"]
    assert (event["line"], event["app_id"], event["session_id"]) == (2, "bad!app", "s2")


def test_verbose_json_logs_name_every_exported_attachment(tmp_path: Path) -> None:
    """-v logs an `exported` event for each attachment as for a chat, with its kind and ids."""
    config = StandinConfig(token=TOKEN, account_id=ACCOUNT, attachments=6)
    with standin_in_thread(config) as live:
        sessions = write_sessions(tmp_path / "s.txt", pairs(1))
        args = [str(sessions), "--out", str(tmp_path / "o"), "--include", "attachments"]
        args += ["-v", "--log-format", "json", "--attachment-allow-host", "127.0.0.1"]
        proc = run_cli(args, cli_env(live.base_url))
    assert proc.returncode == 0, proc.stderr
    events = [e for e in map(json.loads, proc.stderr.splitlines()) if e["event"] == "exported"]
    kinds = [e["kind"] for e in events]
    manifest = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    exported = [m for m in manifest if m["kind"] == "attachment" and m["status"] == "exported"]
    assert exported and kinds.count("attachment") == len(exported)
    assert all(e["app_id"] == pairs(1)[0][0] for e in events)
