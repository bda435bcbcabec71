"""What a real store checks, through a checking proxy in front of moto: R2's refusal of
checksum trailers, Content-MD5 on every PUT and part, refused credentials, SlowDown and
dropped connections retried, a store that stays down ending the run with nothing lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from exporter.config import RetryPolicy
from exporter.standin import StandinServer
from tests.helpers import TOKEN, pairs, write_sessions
from tests.s3fakes import checking_proxy
from tests.s3helpers import body, keys, latest, run_store, s3, store_settings


async def test_an_r2_like_store_accepts_every_request_of_a_run(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """Through a proxy refusing aws-chunked, checksum trailers and PUTs without a matching
    Content-MD5, a whole run and its rerun go through with nothing refused."""
    async with checking_proxy(moto_server) as proxy:
        settings = store_settings(
            server, proxy.url, bucket, write_sessions(tmp_path / "s", pairs(6))
        )
        first = await run_store(settings, handle_signals=False)
        second = await run_store(settings, handle_signals=False)
    assert proxy.rules.refused == []
    assert first.stats.counts["exported"] == 6 and second.stats.counts["skipped"] == 6
    puts = [r for r in proxy.rules.seen if r["method"] == "PUT" and "/arch/" in r["path"]]
    assert puts and all("Content-MD5" in r["headers"] for r in puts)
    for r in proxy.rules.seen:  # the API token never goes to the storage endpoint
        assert TOKEN not in str(r["headers"])


async def test_slow_down_and_dropped_connections_are_retried(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """503 SlowDown answers and dropped connections cost retries, not units."""
    async with checking_proxy(moto_server) as proxy:
        settings = store_settings(
            server,
            proxy.url,
            bucket,
            write_sessions(tmp_path / "s", pairs(4)),
            retry=RetryPolicy.immediate(max_attempts=8),
        )
        proxy.rules.slow_down = 3
        proxy.rules.drop = 2
        result = await run_store(settings, handle_signals=False)
    assert result.fatal is None and result.stats.counts["exported"] == 4
    assert result.stats.retries == 5  # every failure one retry of ours, none hidden


async def test_a_store_that_stays_down_ends_the_run_with_nothing_recorded_lost(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """The store goes down after a first run: the second run stops with a fatal store error,
    and the first run's objects and manifest lines are all still there."""
    todo = pairs(4)
    async with checking_proxy(moto_server) as proxy:
        settings = store_settings(server, proxy.url, bucket, write_sessions(tmp_path / "s", todo))
        await run_store(settings, handle_signals=False)
        before = latest(moto_server, bucket)
        more = store_settings(
            server,
            proxy.url,
            bucket,
            write_sessions(tmp_path / "t", pairs(8)),
            retry=RetryPolicy.immediate(max_attempts=3),
        )
        proxy.rules.fail_all = True
        result = await run_store(more, handle_signals=False)
    assert result.fatal is not None and "store" in result.fatal.message
    assert latest(moto_server, bucket) == before
    for app, sid in todo:
        assert body(moto_server, bucket, f"arch/{app}/{sid}.csv") == server.expected_body(app, sid)


async def test_a_store_going_down_mid_run_stops_it_and_a_rerun_completes(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """The store fails for good after some uploads: the run stops (fatal), and the next run
    against the healthy store ends with every unit stored and recorded."""
    todo = pairs(10)
    async with checking_proxy(moto_server) as proxy:
        settings = store_settings(
            server,
            proxy.url,
            bucket,
            write_sessions(tmp_path / "s", todo),
            retry=RetryPolicy.immediate(max_attempts=2),
            concurrency=1,
        )
        seen = 0

        def down_after_some(_: object) -> None:
            nonlocal seen
            seen += 1
            if seen == 3:
                proxy.rules.fail_all = True

        result = await run_store(settings, handle_signals=False, reporter=_Tap(down_after_some))
        assert result.fatal is not None
        proxy.rules.fail_all = False
        # The lock could not be released while the store was down; it names this very
        # process (alive), so stands in for its lease expiring.
        s3(moto_server).delete_object(Bucket=bucket, Key="arch/.rtk-export.lock")
        again = await run_store(settings, handle_signals=False)
    assert again.fatal is None
    last = latest(moto_server, bucket)
    assert {r["status"] for r in last.values()} <= {"exported", "skipped"} and len(last) == 10


async def test_refused_credentials_stop_the_run_before_any_api_request(
    server: StandinServer,
    moto_server: str,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An access key the store does not know: a fatal store error naming the credentials,
    and the API is never asked."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    async with checking_proxy(moto_server) as proxy:
        settings = store_settings(
            server, proxy.url, bucket, write_sessions(tmp_path / "s", pairs(2))
        )
        result = await run_store(settings, handle_signals=False)
    assert result.fatal is not None and "credentials" in result.fatal.message
    assert "AKIAUNKNOWNKEY000000" not in result.fatal.message
    assert server.state.records() == []


async def test_a_large_body_goes_multipart_with_content_md5_on_every_part(
    moto_server: str, bucket: str
) -> None:
    """A body over the part size is uploaded in parts, each with its Content-MD5, completed
    last; the object is whole and carries its SHA-256."""
    from exporter.config import Timeouts
    from exporter.objectstore.client import open_store
    from exporter.objectstore.target import parse_target
    from exporter.objectstore.upload import StoreSpool, make_temp_area

    data = bytes(range(256)) * (45 * 1024)  # 11.25 MiB
    async with checking_proxy(moto_server) as proxy:
        target = parse_target(f"s3://{bucket}/big", proxy.url, {"AWS_REGION": "us-east-1"})
        async with open_store(target, RetryPolicy.immediate(), Timeouts(), 4) as store:
            spool = StoreSpool(
                store, target.key("a/b.bin"), "a/b.bin", make_temp_area(), 5 * 1024 * 1024
            )
            for i in range(0, len(data), 100_000):
                await spool.write(data[i : i + 100_000])
            await spool.place()
    parts = [r for r in proxy.rules.seen if "partNumber=" in r["path"]]
    assert len(parts) == 3 and all("Content-MD5" in r["headers"] for r in parts)
    assert proxy.rules.refused == []
    got = s3(moto_server).get_object(Bucket=bucket, Key="big/a/b.bin")
    assert got["Body"].read() == data
    assert got["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert keys(moto_server, bucket, "big/") == ["big/a/b.bin"]


class _Tap:
    """A Reporter that calls `fn` for every manifest line recorded."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.fn = fn

    async def run(self, stats: object, pacer: object) -> None:
        await anyio.sleep_forever()

    def recorded(self, rec: object) -> None:
        self.fn(rec)
