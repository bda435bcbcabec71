"""The command line with an s3:// --out, as cron runs it: exit codes, one clear line for bad
input before any API request, verify finding damage, the lock's 75, and no secret printed."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.standin import FaultRates, StandinConfig, StandinServer, standin_in_thread
from tests.helpers import ACCOUNT, TOKEN, cli_env, pairs, run_cli, write_sessions
from tests.s3fakes import ACCESS_KEY, SECRET_KEY, store_env
from tests.s3helpers import keys, latest, s3


@pytest.fixture(scope="module")
def api() -> Iterator[StandinServer]:
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as server:
        yield server


def env_for(api: StandinServer, moto: str, **extra: str) -> dict[str, str]:
    return cli_env(api.base_url, **store_env(moto, **extra))


def test_export_then_verify_finds_missing_corrupt_and_untracked(
    api: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """A run exits 0; verify says intact (0); after a delete, an overwrite and a stray object
    it names each (1)."""
    todo = pairs(5)
    sessions = write_sessions(tmp_path / "s.txt", todo)
    out = f"s3://{bucket}/nightly"
    env = env_for(api, moto_server)
    done = run_cli([str(sessions), "--out", out], env)
    assert done.returncode == 0, done.stderr
    ok = run_cli(["verify", out], env)
    assert ok.returncode == 0, ok.stderr
    assert "5 objects checked, 5 intact" in ok.stderr
    client = s3(moto_server)
    client.delete_object(Bucket=bucket, Key=f"nightly/{todo[0][0]}/{todo[0][1]}.csv")
    client.put_object(Bucket=bucket, Key=f"nightly/{todo[1][0]}/{todo[1][1]}.csv", Body=b"x")
    client.put_object(Bucket=bucket, Key="nightly/app9/stray.csv", Body=b"y")
    bad = run_cli(["verify", out], env)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        f"missing: {todo[0][0]}/{todo[0][1]}.csv",
        f"corrupt: {todo[1][0]}/{todo[1][1]}.csv",
        "untracked: app9/stray.csv",
    ]


def test_a_second_run_exits_75_naming_host_and_pid(
    api: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """While another run's lease is live, a run exits 75 at once and names its host and pid."""
    lock = {"host": "box-7", "pid": 31337, "run_id": "r", "expires": "2999-01-01T00:00:00Z"}
    s3(moto_server).put_object(Bucket=bucket, Key="p/.rtk-export.lock", Body=json.dumps(lock))
    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    before = len(api.state.records())
    got = run_cli([str(sessions), "--out", f"s3://{bucket}/p"], env_for(api, moto_server))
    assert got.returncode == 75, got.stderr
    assert "box-7" in got.stderr and "31337" in got.stderr
    assert len(api.state.records()) == before


@pytest.mark.parametrize(
    ("args", "extra", "says"),
    [
        (["--out", "s3://no-such-bucket-here/p"], {}, "does not exist"),
        (["--out", "s3://B_ad/p"], {}, "not a valid bucket name"),
        (["--out", "s3://{bucket}/p", "--s3-endpoint", "ftp://127.0.0.1:9"], {}, "https"),
        (["--out", "s3://{bucket}/p", "--manifest", "m.jsonl"], {}, "--manifest"),
        (
            ["--out", "s3://{bucket}/p"],
            {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
            "credentials",
        ),
        (["--out", "s3://{bucket}/p", "--lock-lease", "soon"], {}, "--lock-lease"),
    ],
    ids=["no-bucket", "bad-bucket", "bad-endpoint", "manifest", "no-credentials", "bad-lease"],
)
def test_bad_storage_input_exits_2_with_one_line_before_any_api_request(
    args: list[str],
    extra: dict[str, str],
    says: str,
    api: StandinServer,
    moto_server: str,
    bucket: str,
    tmp_path: Path,
) -> None:
    """No bucket, a bad name, a refused endpoint, --manifest, no credentials, a bad lease:
    exit 2, one error line saying what, and no request to the API."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    before = len(api.state.records())
    argv = [str(sessions)] + [a.replace("{bucket}", bucket) for a in args]
    got = run_cli(argv, env_for(api, moto_server, **extra), cwd=tmp_path)
    assert got.returncode == 2, got.stderr
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "rtk-export:" in lines[0] and says in lines[0], got.stderr
    assert len(api.state.records()) == before


def test_no_secret_reaches_any_output_or_the_wrong_host(
    api: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """With -v and JSON logs, neither the API token nor the storage secret is printed, the
    API and download hosts never see AWS credentials."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(3))
    before = len(api.state.records())
    got = run_cli(
        [
            str(sessions),
            "--out",
            f"s3://{bucket}/sec",
            "-vv",
            "--log-format",
            "json",
            "--summary-json",
            "-",
        ],
        env_for(api, moto_server),
    )
    assert got.returncode == 0, got.stderr
    for secret in (TOKEN, SECRET_KEY):
        assert secret not in got.stdout + got.stderr
    for rec in api.state.records()[before:]:
        assert ACCESS_KEY not in json.dumps(dict(rec.headers))
    assert keys(moto_server, bucket, "sec/")


def test_lock_lease_is_written_with_host_and_pid(moto_server: str, bucket: str) -> None:
    """The lock object holds host, pid, run_id and expires (read from outside while held)."""
    import anyio

    from exporter.config import RetryPolicy, Timeouts
    from exporter.objectstore.client import open_store
    from exporter.objectstore.lease import Lease
    from exporter.objectstore.target import parse_target

    async def go() -> dict[str, object]:
        target = parse_target(f"s3://{bucket}/l", moto_server, {"AWS_REGION": "us-east-1"})
        async with open_store(target, RetryPolicy.immediate(), Timeouts(), 4) as store:
            lease = Lease(store, "run-1", 60)
            await lease.acquire()
            doc = json.loads(
                s3(moto_server).get_object(Bucket=bucket, Key="l/.rtk-export.lock")["Body"].read()
            )
            first = lease.etag
            await lease.renew()
            assert lease.etag and lease.etag != first
            await lease.release()
            return doc

    doc = anyio.run(go)
    assert doc["host"] == socket.gethostname() and doc["run_id"] == "run-1"
    assert isinstance(doc["pid"], int) and "expires" in doc
    assert "l/.rtk-export.lock" not in keys(moto_server, bucket)


def test_verify_refuses_manifest_and_a_missing_bucket(moto_server: str, bucket: str) -> None:
    """verify s3:// with --manifest, or of a bucket that does not exist: exit 2, one line."""
    env = cli_env("http://127.0.0.1:9", **store_env(moto_server))
    with_manifest = run_cli(["verify", f"s3://{bucket}/p", "--manifest", "m.jsonl"], env)
    assert with_manifest.returncode == 2 and "--manifest" in with_manifest.stderr
    missing = run_cli(["verify", "s3://no-such-bucket-xyz/p"], env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_sigterm_mid_run_records_what_finished_and_releases_the_lock(
    moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """SIGTERM while exporting to a bucket: exit 143, the lock is gone, what finished is in
    the manifest objects, and a rerun completes the rest without downloading those again."""
    slow = StandinConfig(
        token=TOKEN, account_id=ACCOUNT, slow_seconds=0.05, faults=FaultRates(download_slow=1.0)
    )
    todo = pairs(40)
    args = [
        str(write_sessions(tmp_path / "s.txt", todo)),
        "--out",
        f"s3://{bucket}/t",
        "--concurrency",
        "2",
    ]
    with standin_in_thread(slow) as server:
        env = cli_env(server.base_url, **store_env(moto_server))
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args], env=env, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while len(server.state.records("download")) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert "t/.rtk-export.lock" not in keys(moto_server, bucket)
        done = {
            k[:2] for k, v in latest(moto_server, bucket, "t").items() if v["status"] == "exported"
        }
        assert done, "what finished before the signal is recorded"
        seen = len(server.state.records("download"))
        rerun = run_cli(args, env)
        assert rerun.returncode == 0, rerun.stderr
        again = [r.path for r in server.state.records("download")[seen:]]
    assert not [p for p in again for a, s in done if p.startswith(f"/downloads/{a}/{s}/")]
    assert len(latest(moto_server, bucket, "t")) == 40


def test_attachments_and_recordings_go_to_an_s3_out(
    moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """`--include attachments,recordings` with an s3:// out (refused before the store knew
    them) exits 0 with the files as objects beside the chats, and verify finds all intact."""
    config = StandinConfig(
        token=TOKEN,
        account_id=ACCOUNT,
        attachments=3,
        recording_statuses=("UPLOADED",),
        recording_bytes=50_000,
    )
    sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1")])
    out = f"s3://{bucket}/media"
    with standin_in_thread(config) as server:
        env = env_for(server, moto_server, TMPDIR=str(tmp_path))
        args = ["--include", "attachments,recordings", "--attachment-allow-host", "127.0.0.1"]
        done = run_cli([str(sessions), "--out", out, *args], env)
    assert done.returncode == 0, done.stderr
    stored = keys(moto_server, bucket, "media/app1/")
    assert "media/app1/s1.csv" in stored
    assert len([k for k in stored if k.startswith("media/app1/s1.attachments/")]) >= 3
    assert len([k for k in stored if k.startswith("media/app1/s1.recordings/")]) == 1
    ok = run_cli(["verify", out], env)
    assert ok.returncode == 0, ok.stderr
    assert f"{len(stored)} objects checked, {len(stored)} intact" in ok.stderr
