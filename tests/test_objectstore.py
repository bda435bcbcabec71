"""--out s3://BUCKET/PREFIX against moto's S3 on loopback: whole objects with their SHA-256,
manifest objects, resume from the listing, the lease, the state, verify, bad inputs."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from exporter.objectstore.lease import LeaseHeld
from exporter.standin import StandinServer
from tests.helpers import pairs, write_sessions
from tests.s3helpers import body, keys, latest, run_store, s3, sha256, store_settings


async def test_every_unit_lands_as_a_whole_object_with_its_sha256(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """Each CSV is an object under PREFIX, byte for byte, with x-amz-meta-sha256, and the
    manifest objects record it; the lock is gone at the end."""
    todo = pairs(12)
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "s", todo))
    result = await run_store(settings)
    assert result.fatal is None and result.stats.counts["exported"] == 12
    client = s3(moto_server)
    last = latest(moto_server, bucket)
    for app, sid in todo:
        key = f"arch/{app}/{sid}.csv"
        got = client.get_object(Bucket=bucket, Key=key)
        data = got["Body"].read()
        assert data == server.expected_body(app, sid)
        assert got["Metadata"]["sha256"] == sha256(data)
        rec = last[(app, sid, "chat")]
        assert (rec["status"], rec["path"], rec["bytes"], rec["sha256"]) == (
            "exported",
            f"{app}/{sid}.csv",
            len(data),
            sha256(data),
        )
    assert "arch/.rtk-export.lock" not in keys(moto_server, bucket)
    assert all(k.endswith(".jsonl") for k in keys(moto_server, bucket, "arch/manifest/"))


async def test_a_rerun_skips_what_is_stored_and_redoes_what_went_missing(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """The second run skips every unit whose object has the recorded size, with no API
    request for them, and exports again the one whose object was deleted."""
    todo = pairs(6)
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "s", todo))
    await run_store(settings)
    app, sid = todo[0]
    s3(moto_server).delete_object(Bucket=bucket, Key=f"arch/{app}/{sid}.csv")
    before = len(server.state.records())
    again = await run_store(settings)
    assert again.stats.counts == {"skipped": 5, "exported": 1}
    paths = [r.path for r in server.state.records()[before:]]
    assert all(f"/{sid}" in p for p in paths) and paths
    assert body(moto_server, bucket, f"arch/{app}/{sid}.csv") == server.expected_body(app, sid)


async def test_a_manifest_object_is_written_every_n_lines(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """With a flush every 4 lines, 10 units make at least 3 manifest objects, whose key order
    is their write order, and whose lines are all there."""
    from exporter.objectstore import manifest as m

    todo = pairs(10)
    settings = store_settings(
        server, moto_server, bucket, write_sessions(tmp_path / "s", todo), concurrency=1
    )
    old = m.FLUSH_LINES
    m.FLUSH_LINES = 4
    try:
        await run_store(settings)
    finally:
        m.FLUSH_LINES = old
    objects = keys(moto_server, bucket, "arch/manifest/")
    assert len(objects) >= 3
    assert objects == sorted(objects)
    assert len(latest(moto_server, bucket)) == 10


async def test_a_live_lease_of_another_run_stops_this_one_naming_it(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """A lock whose lease runs and whose holder is elsewhere: LeaseHeld naming host and pid,
    and no API request."""
    lock = {"host": "other-host", "pid": 4242, "run_id": "r", "expires": _when(minutes=5)}
    s3(moto_server).put_object(Bucket=bucket, Key="arch/.rtk-export.lock", Body=json.dumps(lock))
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "s", pairs(2)))
    with pytest.raises(LeaseHeld) as info:
        await run_store(settings)
    assert "other-host" in str(info.value) and "4242" in str(info.value)
    assert server.state.records() == []


@pytest.mark.parametrize("holder", ["expired", "dead-pid"])
async def test_an_expired_or_dead_lock_is_taken_over(
    holder: str, server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """A lease that has expired, or one held by a dead pid on this host, is taken over and
    the run goes on."""
    if holder == "expired":
        lock = {"host": "other-host", "pid": 4242, "run_id": "r", "expires": _when(minutes=-1)}
    else:
        lock = {
            "host": socket.gethostname(),
            "pid": _dead_pid(),
            "run_id": "r",
            "expires": _when(minutes=5),
        }
    s3(moto_server).put_object(Bucket=bucket, Key="arch/.rtk-export.lock", Body=json.dumps(lock))
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "s", pairs(2)))
    result = await run_store(settings)
    assert result.fatal is None and result.stats.counts["exported"] == 2


async def test_a_stale_multipart_upload_under_prefix_is_aborted(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """An upload left under PREFIX by a killed run is aborted; one outside PREFIX is not."""
    client = s3(moto_server)
    client.create_multipart_upload(Bucket=bucket, Key="arch/app0/x.csv")
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/y.csv")
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "s", pairs(1)))
    await run_store(settings)
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["elsewhere/y.csv"]


def _when(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


async def test_a_lease_taken_over_mid_run_stops_the_run(
    standin,
    moto_server: str,
    bucket: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Another run overwrites the lock while this one runs: the next renewal gets a 412 and
    the run stops with a fatal error instead of writing on beside it."""
    from exporter.standin import FaultRates

    async with standin(slow_seconds=0.2, faults=FaultRates(download_slow=1.0)) as server:
        settings = store_settings(
            server,
            moto_server,
            bucket,
            write_sessions(tmp_path / "s", pairs(40)),
            concurrency=1,
            lock_lease=0.3,  # renewed every 0.1 s
        )

        class Thief:
            """After the first unit, another run's lock replaces ours."""

            def recorded(self, rec: object) -> None:
                other = {"host": "thief", "pid": 1, "run_id": "x", "expires": _when(minutes=5)}
                s3(moto_server).put_object(
                    Bucket=bucket, Key="arch/.rtk-export.lock", Body=json.dumps(other)
                )

            async def run(self, stats: object, pacer: object) -> None:
                await anyio.sleep_forever()

        result = await run_store(settings, reporter=Thief())
    assert result.fatal is not None and "taken over" in result.fatal.message
    assert sum(result.stats.counts.values()) < 40
    lock = json.loads(body(moto_server, bucket, "arch/.rtk-export.lock"))
    assert lock["host"] == "thief"  # the thief's lock is left alone


async def test_a_manifest_object_is_written_after_flush_seconds_without_more_lines(
    moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """Two lines and no more: the flusher writes them as an object once its period ends."""
    from exporter.config import RetryPolicy, Timeouts
    from exporter.manifest import Status, record
    from exporter.objectstore.client import open_store
    from exporter.objectstore.manifest import StoreManifest
    from exporter.objectstore.target import parse_target

    target = parse_target(f"s3://{bucket}/f", moto_server, {"AWS_REGION": "us-east-1"})
    async with open_store(target, RetryPolicy.immediate(), Timeouts(), 4) as store:
        manifest = StoreManifest(store, tmp_path / "m.jsonl")
        for sid in ("s1", "s2"):
            manifest.append(
                record(app_id="a", session_id=sid, kind="chat", status=Status.FAILED, run_id="r")
            )
        async with anyio.create_task_group() as tg:
            tg.start_soon(manifest.keep_flushing, 0.01)
            with anyio.fail_after(10):
                while manifest.written < 2:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    names = keys(moto_server, bucket, "f/manifest/")
    assert len(names) == 1
    assert body(moto_server, bucket, names[0]).count(b"\n") == 2


async def test_an_unreadable_lock_object_is_taken_over(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """A lock object that is not the program's JSON (torn, hand-edited) is taken over."""
    s3(moto_server).put_object(Bucket=bucket, Key="arch/.rtk-export.lock", Body=b"\x00garbage")
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "s", pairs(1)))
    result = await run_store(settings)
    assert result.fatal is None and result.stats.counts["exported"] == 1
