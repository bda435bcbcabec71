"""kill -9 of a run archiving to a bucket, at planted points, then a rerun: every unit ends
stored whole with its SHA-256 and recorded, nothing already recorded is downloaded again, and
no multipart upload is left."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.standin import StandinConfig, StandinServer, standin_in_thread
from tests.helpers import ACCOUNT, TOKEN, cli_env, pairs, run_cli, write_sessions
from tests.s3fakes import store_env
from tests.s3helpers import latest, s3, sha256

N = 24


@pytest.fixture(scope="module")
def api() -> Iterator[StandinServer]:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def harness(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.s3_kill_harness", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_rerun(
    api: StandinServer, moto: str, bucket: str, args: list[str], todo: list[tuple[str, str]]
) -> None:
    recorded = {k[:2] for k, v in latest(moto, bucket, "k").items() if v["status"] == "exported"}
    seen = len(api.state.records("download"))
    rerun = run_cli(args, cli_env(api.base_url, **store_env(moto)))
    assert rerun.returncode == 0, rerun.stderr
    again = [r.path for r in api.state.records("download")[seen:]]
    assert not [p for p in again for a, s in recorded if p.startswith(f"/downloads/{a}/{s}/")]
    client = s3(moto)
    last = latest(moto, bucket, "k")
    assert len(last) == len(todo)
    for app, sid in todo:
        assert last[(app, sid, "chat")]["status"] in ("exported", "skipped")
        got = client.get_object(Bucket=bucket, Key=f"k/{app}/{sid}.csv")
        data = got["Body"].read()
        assert data == api.expected_body(app, sid)
        assert got["Metadata"]["sha256"] == sha256(data) == last[(app, sid, "chat")]["sha256"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize(
    ("point", "n"), [("mid-part", 1), ("mid-part", 7), ("after-put", 1), ("after-put", 9)]
)
def test_kill_9_mid_upload_then_rerun(
    api: StandinServer, moto_server: str, bucket: str, tmp_path: Path, point: str, n: int
) -> None:
    """SIGKILL with a multipart upload half done, or an object stored but not yet recorded:
    the rerun aborts the upload, stores and records every unit."""
    todo = pairs(N)
    args = [
        str(write_sessions(tmp_path / "s.txt", todo)),
        "--out",
        f"s3://{bucket}/k",
        "--concurrency",
        "4",
    ]
    env = cli_env(api.base_url, **store_env(moto_server), RTK_KILL_AT=f"{point}:{n}")
    if point == "mid-part":  # parts of 1 KiB: moto refuses to complete them, never to take them
        env["RTK_PART_SIZE"] = "1024"
    killed = harness(args, env)
    assert killed.returncode == -9, killed.stderr
    if point == "mid-part":
        assert s3(moto_server).list_multipart_uploads(Bucket=bucket).get("Uploads"), (
            "no upload left"
        )
    check_rerun(api, moto_server, bucket, args, todo)


@pytest.mark.parametrize("n", [1, 3])
def test_kill_9_mid_compaction_then_rerun(
    api: StandinServer, moto_server: str, bucket: str, tmp_path: Path, n: int
) -> None:
    """Runs leave many manifest objects; a run is killed while compacting them (the merged
    object written, old ones partly deleted); the rerun loses and repeats nothing."""
    first = pairs(N)[:15]
    args = [
        str(write_sessions(tmp_path / "a.txt", first)),
        "--out",
        f"s3://{bucket}/k",
        "--concurrency",
        "1",
    ]
    base = cli_env(api.base_url, **store_env(moto_server))
    done = harness(args, {**base, "RTK_KILL_AT": "none:0"})
    assert done.returncode == 0, done.stderr
    assert (
        len(s3(moto_server).list_objects_v2(Bucket=bucket, Prefix="k/manifest/")["Contents"]) >= 3
    )
    todo = pairs(N)
    args = [
        str(write_sessions(tmp_path / "b.txt", todo)),
        "--out",
        f"s3://{bucket}/k",
        "--concurrency",
        "4",
    ]
    killed = harness(args, {**base, "RTK_KILL_AT": f"mid-compaction:{n}"})
    assert killed.returncode == -9, killed.stderr
    names = [
        o["Key"]
        for o in s3(moto_server).list_objects_v2(Bucket=bucket, Prefix="k/manifest/")["Contents"]
    ]
    assert any("~" in k for k in names), names  # the compacted object was written first
    check_rerun(api, moto_server, bucket, args, todo)
