"""`rtk-export serve` on a folder, as a process, over real HTTP on loopback: every signature
case, a delivery archived with no API request, replays (also across a restart), kill -9 after
a 200, an expired URL (one request), a full disk (503, then recovery), SIGTERM, two serves."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from exporter.standin import (
    CannedResponse,
    SessionSpec,
    StandinConfig,
    StandinServer,
    standin_in_thread,
)
from tests.helpers import ACCOUNT, TOKEN, cli_env, manifest_lines
from tests.webhooks import Serve, Signer, chat_synced, minted_chat, wait_until

APP = "app0"


@pytest.fixture
def srv():
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def serve(server: StandinServer, out: Path, signer: Signer, *extra: str, **popen: object) -> Serve:
    args = ["--out", str(out), "--webhook-public-key", str(signer.pem), *extra]
    return Serve(args, cli_env(server.base_url), **popen)


def chat_api_requests(server: StandinServer, session_id: str) -> int:
    path = server.api_path(APP, session_id, "chat")
    return sum(1 for r in server.state.requests if r.path == path)


def inbox_files(out: Path, sub: str = "") -> list[Path]:
    folder = out / ".rtk-export-inbox" / sub
    return sorted(p for p in folder.glob("*.json")) if folder.is_dir() else []


def lines_of(out: Path) -> list[dict[str, object]]:
    path = out / "manifest.jsonl"
    return manifest_lines(path) if path.exists() else []


def delivered(server: StandinServer, sid: str, expiry: str | None = None, hang: float = 0) -> bytes:
    """A chatSynced delivery for `sid`; with `hang`, its first download gets no answer."""
    url, minted_expiry = minted_chat(server.api_url(APP, sid, "chat"))
    DOWNLOADS[sid] = urlsplit(url).path
    if hang:
        server.script(DOWNLOADS[sid], CannedResponse(action="hang", seconds=hang))
    return chat_synced(sid, url, expiry or minted_expiry, organizer=APP)


DOWNLOADS: dict[str, str] = {}  # session id -> the path of its minted download URL


def download_started(server: StandinServer, sid: str) -> bool:
    return any(r.path == DOWNLOADS[sid] for r in server.state.requests)


def test_a_delivery_is_archived_with_no_api_request(srv: StandinServer, tmp_path: Path) -> None:
    """chatSynced: 200, then the CSV as served and a manifest line with source and delivery_id;
    serve asked the API nothing (the one chat request is the test's, minting the URL)."""
    signer, out = Signer(tmp_path), tmp_path / "out"
    raw = delivered(srv, "s-one")
    query = urlsplit(json.loads(raw)["chatDownloadUrl"]).query
    assert query  # the presigned part, a secret
    with serve(srv, out, signer, "-v") as proc:
        proc.wait_ready()
        assert proc.deliver(raw, signer.headers(raw, "d-1")) == 200
        wait_until(lambda: lines_of(out), what="a manifest line")
        assert proc.stop() == 143
    (line,) = lines_of(out)
    assert line["status"] == "exported" and line["source"] == "webhook"
    assert line["delivery_id"] == "d-1" and line["kind"] == "chat"
    assert (out / APP / "s-one.csv").read_bytes() == srv.expected_body(APP, "s-one")
    assert chat_api_requests(srv, "s-one") == 1
    assert inbox_files(out) == [] and len(inbox_files(out, "done")) == 1
    assert query not in proc.log and TOKEN not in proc.log
    assert query not in (out / "manifest.jsonl").read_text()


def test_signature_and_request_checks(srv: StandinServer, tmp_path: Path) -> None:
    """Missing signature 400, a wrong one 401, a body over 1 MiB 413, GET 405, another path
    404; nothing of any of them kept or exported."""
    signer, out = Signer(tmp_path), tmp_path / "out"
    (tmp_path / "other").mkdir()
    other = Signer(tmp_path / "other")  # a key serve does not know
    raw = delivered(srv, "s-sig")
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        unsigned = {"rtk-uuid": "u1", "content-type": "application/json"}
        assert proc.deliver(raw, unsigned) == 400
        assert proc.deliver(raw, other.headers(raw, "u2")) == 401
        assert proc.deliver(raw, {**signer.headers(raw, "u3"), "rtk-signature": "%%%"}) == 401
        tampered = raw.replace(b"s-sig", b"s-sih")
        assert proc.deliver(tampered, signer.headers(raw, "u4")) == 401
        big = b" " * (1024 * 1024 + 1)
        assert proc.deliver(big, signer.headers(big, "u5")) == 413
        assert proc.request("GET", "/webhooks/realtimekit")[0] == 405
        assert proc.deliver(raw, signer.headers(raw, "u6")) == 200
        assert proc.request("POST", "/webhooks/other", raw, signer.headers(raw, "u7"))[0] == 404
        assert proc.get("/healthz")[0] == 200
        assert proc.stop() == 143
    ids = [line["delivery_id"] for line in lines_of(out)]
    assert ids == ["u6"]  # the one good delivery, and nothing of the refused ones
    kept = [p.stem for p in (out / ".rtk-export-inbox").rglob("*.json")]
    assert kept == ["u6"]


def test_a_replay_is_acknowledged_and_does_nothing_also_after_a_restart(
    srv: StandinServer, tmp_path: Path
) -> None:
    signer, out = Signer(tmp_path), tmp_path / "out"
    raw = delivered(srv, "s-replay")
    headers = signer.headers(raw, "d-replay")
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        assert proc.deliver(raw, headers) == 200
        wait_until(lambda: lines_of(out), what="a manifest line")
        assert proc.deliver(raw, headers) == 200
        assert proc.stop() == 143
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        assert proc.deliver(raw, headers) == 200
        _, _, metrics = proc.get("/metrics")
        assert proc.stop() == 143
    assert len(lines_of(out)) == 1
    assert b'outcome="duplicate"' in metrics


def test_kill_9_right_after_the_200_then_a_restart_archives_the_unit(
    srv: StandinServer, tmp_path: Path
) -> None:
    """The delivery is durable before its 200: a serve killed at once (its export held back
    by a stalled download host) leaves it in the inbox, and the next one exports it."""
    signer, out = Signer(tmp_path), tmp_path / "out"
    raw = delivered(srv, "s-kill", hang=30)  # its export cannot finish before the kill
    with serve(srv, out, signer, "--read-timeout", "30") as proc:
        proc.wait_ready()
        assert proc.deliver(raw, signer.headers(raw, "d-kill")) == 200
        wait_until(lambda: download_started(srv, "s-kill"), what="the download to start")
        proc.kill()
    assert [p.stem for p in inbox_files(out)] == ["d-kill"]
    assert lines_of(out) == []
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        wait_until(lambda: lines_of(out), what="the kept delivery exported")
        assert proc.stop() == 143
    (line,) = lines_of(out)
    assert line["status"] == "exported" and line["delivery_id"] == "d-kill"
    assert inbox_files(out) == []


def test_an_expired_url_costs_exactly_one_api_request(srv: StandinServer, tmp_path: Path) -> None:
    signer, out = Signer(tmp_path), tmp_path / "out"
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    raw = delivered(srv, "s-expired", expiry=past)
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        assert proc.deliver(raw, signer.headers(raw, "d-exp")) == 200
        wait_until(lambda: lines_of(out), what="a manifest line")
        assert proc.stop() == 143
    (line,) = lines_of(out)
    assert line["status"] == "exported"
    assert chat_api_requests(srv, "s-expired") == 2  # the test's mint, and serve's one


def test_signed_but_malformed_bodies_are_kept_in_rejected_and_acknowledged(
    srv: StandinServer, tmp_path: Path
) -> None:
    signer, out = Signer(tmp_path), tmp_path / "out"
    bad = [b"not json", b"[]", json.dumps({"event": "meeting.chatSynced"}).encode()]
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        for i, raw in enumerate(bad):
            assert proc.deliver(raw, signer.headers(raw, f"bad-{i}")) == 200
        assert proc.stop() == 143
    rejected = inbox_files(out, "rejected")
    assert [p.stem for p in rejected] == ["bad-0", "bad-1", "bad-2"]
    assert all(json.loads(p.read_bytes())["reason"] for p in rejected)
    assert lines_of(out) == []


def test_a_delivery_with_no_app_is_kept_as_unroutable(srv: StandinServer, tmp_path: Path) -> None:
    signer, out = Signer(tmp_path), tmp_path / "out"
    url, expiry = minted_chat(srv.api_url(APP, "s-lost", "chat"))
    doc = json.loads(chat_synced("s-lost", url, expiry))
    del doc["organizedBy"]
    raw = json.dumps(doc).encode()
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        assert proc.deliver(raw, signer.headers(raw, "d-lost")) == 200
        assert proc.stop() == 143
    assert [p.stem for p in inbox_files(out, "unroutable")] == ["d-lost"]
    assert lines_of(out) == []
    assert "unroutable" in proc.log


def test_the_one_app_routes_a_delivery(srv: StandinServer, tmp_path: Path) -> None:
    """--app given once names the app of a delivery, before the payload's organizer."""
    signer, out = Signer(tmp_path), tmp_path / "out"
    raw = delivered(srv, "s-app")
    raw = raw.replace(b'"id": "app0"', b'"id": "someone-else"')
    with serve(srv, out, signer, "--app", APP) as proc:
        proc.wait_ready()
        assert proc.deliver(raw, signer.headers(raw, "d-app")) == 200
        wait_until(lambda: lines_of(out), what="a manifest line")
        assert proc.stop() == 143
    assert lines_of(out)[0]["app_id"] == APP


def test_other_events_are_acknowledged_and_not_kept(srv: StandinServer, tmp_path: Path) -> None:
    """meeting.started and a livestream update (its stream key never logged): 200, nothing
    kept, nothing exported."""
    signer, out = Signer(tmp_path), tmp_path / "out"
    secret = "live_sk_4f9a0c3e-secret-stream-key"
    events = [
        {"event": "meeting.started", "meeting": {"id": "m", "sessionId": "s"}},
        {"event": "livestreaming.statusUpdate", "streamKey": secret, "status": "LIVE"},
    ]
    with serve(srv, out, signer, "-v") as proc:
        proc.wait_ready()
        for i, doc in enumerate(events):
            raw = json.dumps(doc).encode()
            assert proc.deliver(raw, signer.headers(raw, f"e-{i}")) == 200
        _, _, metrics = proc.get("/metrics")
        assert proc.stop() == 143
    assert list((out / ".rtk-export-inbox").rglob("*.json")) == []
    assert secret not in proc.log and secret.encode() not in metrics
    assert b'rtk_export_webhook_deliveries_total{event="livestreaming.statusUpdate"' in metrics


def _raise_fsize(pid: int, soft: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))


def test_a_full_disk_answers_503_and_recovers(srv: StandinServer, tmp_path: Path) -> None:
    """Writes past RLIMIT_FSIZE fail with EFBIG, as on a full disk: deliveries get 503 with
    Retry-After (never a 4xx: RealtimeKit would drop them), /readyz 503; once the disk has
    room, the resent delivery is kept and exported."""
    signer, out = Signer(tmp_path), tmp_path / "out"
    raw = delivered(srv, "s-full")
    headers = signer.headers(raw, "d-full")
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        _raise_fsize(proc.proc.pid, 64)
        status, answer, _ = proc.request("POST", "/webhooks/realtimekit", raw, headers)
        assert status == 503 and answer.get("Retry-After")
        assert proc.get("/readyz")[0] == 503
        _raise_fsize(proc.proc.pid, resource.RLIM_INFINITY)
        wait_until(lambda: proc.get("/readyz")[0] == 200, what="ready again")
        assert proc.deliver(raw, headers) == 200
        wait_until(lambda: lines_of(out), what="a manifest line")
        assert proc.stop() == 143
    assert lines_of(out)[0]["status"] == "exported"


def test_two_serves_on_one_folder_the_second_exits_75(srv: StandinServer, tmp_path: Path) -> None:
    signer, out = Signer(tmp_path), tmp_path / "out"
    with serve(srv, out, signer) as first:
        first.wait_ready()
        second = serve(srv, out, signer)
        assert second.proc.wait(30) == 75
        second.close()
        assert f"pid {first.proc.pid}" in second.log
        assert first.stop(signal.SIGINT) == 130


def test_sigterm_mid_download_leaves_the_item_for_the_next_serve(
    srv: StandinServer, tmp_path: Path
) -> None:
    """SIGTERM: /readyz and new deliveries 503 at once; the stalled unit gets the grace, then
    stays in the inbox; exit 143; the next serve exports it."""
    signer, out = Signer(tmp_path), tmp_path / "out"
    raw = delivered(srv, "s-term", hang=30)
    with serve(srv, out, signer, "--shutdown-grace", "2s", "--read-timeout", "30") as proc:
        proc.wait_ready()
        assert proc.deliver(raw, signer.headers(raw, "d-term")) == 200
        wait_until(lambda: download_started(srv, "s-term"), what="the download to start")
        proc.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: proc.get("/readyz")[0] == 503, what="not ready")
        other = delivered(srv, "s-late")
        assert proc.deliver(other, signer.headers(other, "d-late")) in (503, 0)
        assert proc.proc.wait(30) == 143
    assert [p.stem for p in inbox_files(out)] == ["d-term"]
    with serve(srv, out, signer) as proc:
        proc.wait_ready()
        wait_until(lambda: lines_of(out), what="the kept delivery exported")
        assert proc.stop() == 143
    assert lines_of(out)[0]["delivery_id"] == "d-term"


def test_a_discovery_run_and_serve_on_one_folder_at_once(tmp_path: Path) -> None:
    """The cron backstop beside serve: both work, every session's chat archived once as
    served, every manifest line whole and valid, no temporary file left, and each unit
    exported by one process only (the other finds it and skips it)."""
    now = datetime.now(UTC)
    sids = [f"s-both-{i:03d}" for i in range(150)]
    catalogue = tuple(SessionSpec(APP, sid, now - timedelta(hours=2)) for sid in sids)
    config = StandinConfig(token=TOKEN, account_id=ACCOUNT, sessions=catalogue)
    with standin_in_thread(config) as srv:
        signer, out = Signer(tmp_path), tmp_path / "out"
        bodies = [delivered(srv, sid) for sid in sids]
        with serve(srv, out, signer, "--concurrency", "4") as proc:
            proc.wait_ready()
            export = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "--app",
                    APP,
                    "--since",
                    "1d",
                    "--out",
                    str(out),
                    "--concurrency",
                    "4",
                ],
                env=cli_env(srv.base_url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            # Once the export is under way, the deliveries from the other end of the list: the
            # two meet in the middle, where both find units the other has just exported.
            wait_until(lambda: len(lines_of(out)) >= 5, what="the export under way")
            for i, raw in reversed(list(enumerate(bodies))):
                assert proc.deliver(raw, signer.headers(raw, f"d-both-{i}")) == 200
            _, err = export.communicate(timeout=60)
            assert export.returncode == 0, err
            wait_until(lambda: not inbox_files(out), what="the inbox drained")
            assert proc.stop() == 143
        lines = manifest_lines(out / "manifest.jsonl")  # every line parses
        for sid in sids:
            assert (out / APP / f"{sid}.csv").read_bytes() == srv.expected_body(APP, sid)
            mine = [x for x in lines if x["session_id"] == sid]
            assert {x["status"] for x in mine} <= {"exported", "skipped"}
            assert sum(x["status"] == "exported" for x in mine) == 1, [
                (x["status"], x.get("source"), x["run_id"], x["finished_at"]) for x in mine
            ]
            assert sum(x.get("source") == "webhook" for x in mine) == 1
        assert not [p for p in out.rglob("*.part")]
