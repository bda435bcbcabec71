"""kill -9 of a run exporting a recording to a bucket, mid-download and mid-upload, then a
rerun: the partial kept on this host is continued (not downloaded again), the upload left
behind is aborted, and the object holds every byte with its SHA-256."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.resume import BATCH, SYNC_EVERY
from exporter.standin import StandinServer, standin_in_thread
from tests.helpers import cli_env, run_cli, standin_config, write_sessions
from tests.s3fakes import store_env
from tests.s3helpers import latest, s3, sha256

SIZE = 20 << 20  # three parts of 8 MiB when uploaded


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    config = standin_config(
        recording_statuses=("UPLOADED",), recording_bytes=SIZE, recording_chunk_delay=0.001
    )
    with standin_in_thread(config) as srv:
        yield srv


def start(
    server: StandinServer, moto: str, bucket: str, tmp_path: Path, session: str, kill_at: str
) -> tuple[list[str], dict[str, str], subprocess.CompletedProcess[str]]:
    """A run with RTK_KILL_AT planted by `harness` (tests.kill_harness or
    tests.s3_kill_harness), its partials folder under tmp_path."""
    harness, _, point = kill_at.partition("=")
    sessions = write_sessions(tmp_path / "s.txt", [("app1", session)])
    args = [str(sessions), "--out", f"s3://{bucket}/k", "--include", "recordings"]
    (tmp_path / "tmp").mkdir()
    env = cli_env(server.base_url, **store_env(moto), TMPDIR=str(tmp_path / "tmp"))
    killed = subprocess.run(
        [sys.executable, "-m", harness, *args],
        env={**env, "RTK_KILL_AT": point},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return args, env, killed


def held(tmp: Path) -> int:
    records = list(tmp.rglob("*.resume.json"))
    return int(json.loads(records[0].read_text())["held"]) if records else 0


def rerun_and_check(
    server: StandinServer, moto: str, bucket: str, args: list[str], env: dict[str, str], kept: int
) -> str:
    """The rerun exits 0, asks only for the bytes not kept, and stores the whole recording."""
    served = server.state.media.recording_bytes_served
    rerun = run_cli(args, env)
    assert rerun.returncode == 0, rerun.stderr
    assert server.state.media.recording_bytes_served - served == SIZE - kept
    (line,) = [v for k, v in latest(moto, bucket, "k").items() if k[2] == "recording"]
    got = s3(moto).get_object(Bucket=bucket, Key=f"k/{line['path']}")
    data = got["Body"].read()
    assert len(data) == SIZE and got["Metadata"]["sha256"] == sha256(data) == line["sha256"]
    assert s3(moto).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert line["status"] == "exported"
    return str(line["sha256"])


def test_kill_9_mid_download_then_the_rerun_continues_the_partial(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """SIGKILL at 40% of the download: the partial and its record stay on this host, nothing
    is in the bucket; the rerun continues with Range and uploads the whole file."""
    args, env, killed = start(
        server,
        moto_server,
        bucket,
        tmp_path,
        "k9-dl",
        f"tests.kill_harness=recording-at:{int(SIZE * 0.4)}",
    )
    assert killed.returncode == -9, killed.stderr
    tmp = tmp_path / "tmp"
    assert [p.suffix for p in tmp.rglob("*.partial")] == [".partial"]
    kept = held(tmp)
    assert kept >= SIZE * 0.4 - SYNC_EVERY - BATCH
    assert not [
        k
        for k in s3(moto_server).list_objects_v2(Bucket=bucket).get("Contents", [])
        if ".recordings/" in k["Key"]
    ]
    (rec,) = server.state.media.recordings_of("app1", "k9-dl")
    assert (
        rerun_and_check(server, moto_server, bucket, args, env, kept)
        == server.state.media.digest(rec.id)[1]
    )
    assert list(tmp.rglob("*.partial")) == []


def test_kill_9_mid_upload_then_the_rerun_uploads_without_downloading(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """SIGKILL after the first part of the recording's multipart upload: the rerun aborts
    that upload, finds the partial whole (416 from its end) and uploads it again, with no
    byte of the recording downloaded twice."""
    args, env, killed = start(
        server, moto_server, bucket, tmp_path, "k9-up", "tests.s3_kill_harness=mid-part:1"
    )
    assert killed.returncode == -9, killed.stderr
    assert s3(moto_server).list_multipart_uploads(Bucket=bucket).get("Uploads")
    (rec,) = server.state.media.recordings_of("app1", "k9-up")
    assert held(tmp_path / "tmp") == SIZE
    assert (
        rerun_and_check(server, moto_server, bucket, args, env, SIZE)
        == server.state.media.digest(rec.id)[1]
    )
