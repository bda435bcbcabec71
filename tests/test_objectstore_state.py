"""The manifest objects' compaction and a concurrent reader, the discovery state in the bucket
replaced with If-Match, and discovery, transcripts and --dry-run with an s3:// out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.config import RetryPolicy, Timeouts
from exporter.objectstore import manifest as m
from exporter.objectstore.client import Store, open_store
from exporter.objectstore.state import StoreState
from exporter.objectstore.target import parse_target
from exporter.runstate import AppState
from exporter.standin import SessionSpec, StandinServer
from tests.helpers import make_settings, pairs, write_sessions
from tests.s3helpers import keys, latest, run_store, s3, store_settings

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@asynccontextmanager
async def opened(endpoint: str, bucket: str, prefix: str = "arch") -> AsyncIterator[Store]:
    target = parse_target(f"s3://{bucket}/{prefix}", endpoint, {"AWS_REGION": "us-east-1"})
    async with open_store(target, RetryPolicy.immediate(), Timeouts(), 4) as store:
        yield store


async def test_many_manifest_objects_are_compacted_and_nothing_is_lost(
    server: StandinServer,
    moto_server: str,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs that leave many manifest objects: the next run merges them into one `~` object
    written after them, deletes the old ones, and every unit's latest line survives."""
    monkeypatch.setattr(m, "FLUSH_LINES", 3)
    for i in range(3):
        todo = [*pairs(9)[i * 3 : i * 3 + 3], pairs(9)[0]]
        settings = store_settings(
            server, moto_server, bucket, write_sessions(tmp_path / f"s{i}", todo), concurrency=1
        )
        await run_store(settings, handle_signals=False)
    before = latest(moto_server, bucket)
    assert len(keys(moto_server, bucket, "arch/manifest/")) >= 4
    monkeypatch.setattr(m, "COMPACT_AT", 2)
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "x", []))
    await run_store(settings, handle_signals=False)
    names = keys(moto_server, bucket, "arch/manifest/")
    assert len(names) == 1 and "~0001" in names[0]
    assert latest(moto_server, bucket) == before
    lines = s3(moto_server).get_object(Bucket=bucket, Key=names[0])["Body"].read().splitlines()
    assert len(lines) == len(before)  # one line per unit: the latest


def test_a_compacted_name_sorts_after_what_it_merges_and_before_anything_newer() -> None:
    """Names: object < its compaction < its next compaction < any later object."""
    a = m.object_name("r1", 7, now=1_000.0)
    b = m.object_name("r2", 1, now=1_000.001)
    c1 = m.compacted_name(a)
    c2 = m.compacted_name(c1)
    assert a < c1 < c2 < b
    assert sorted([b, c2, a, c1]) == [a, c1, c2, b]


async def test_a_reader_whose_listed_object_was_compacted_away_reads_again(
    moto_server: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader lists the objects; a compaction replaces them before its first GET; the
    reader starts over and reads every line exactly as the compaction left them."""
    client = s3(moto_server)
    for i in range(3):
        line = {
            "app_id": "a",
            "session_id": f"s{i}",
            "kind": "chat",
            "status": "failed",
            "run_id": "r",
        }
        client.put_object(
            Bucket=bucket,
            Key=f"arch/manifest/{m.object_name('r', i, now=1000 + i)}",
            Body=json.dumps(line) + "\n",
        )
    async with opened(moto_server, bucket) as store:
        writer = m.StoreManifest(store, tmp_path / "w.jsonl")
        await writer.fetch()
        writer.load()
        reader = m.StoreManifest(store, tmp_path / "r.jsonl")
        real_copy = m.StoreManifest._copy
        compacted = False

        async def copy(self: m.StoreManifest, key: str, out: object) -> None:
            nonlocal compacted
            if not compacted:
                compacted = True
                await writer.compact(str(tmp_path))
            await real_copy(self, key, out)

        monkeypatch.setattr(m.StoreManifest, "_copy", copy)
        await reader.fetch()
        reader.load()
        got = {r.session_id for r in reader.iter_latest()}
        writer.close()
        reader.close()
    assert compacted and got == {"s0", "s1", "s2"}
    assert len(reader.loaded) == 1


async def test_the_state_is_replaced_only_over_the_version_read(
    moto_server: str, bucket: str
) -> None:
    """Two writers read the state; the second to write gets a 412, reads the other's version
    and writes its own apps over it: both apps' entries survive."""
    async with opened(moto_server, bucket) as store:
        one = await StoreState.read(store)
        two = await StoreState.read(store)
        one.app("app1").last_run = NOW
        await one.write(store)
        two.app("app2").live = {"live-1"}
        await two.write(store)
        final = await StoreState.read(store)
    assert final.apps["app1"].last_run == NOW
    assert final.apps["app2"] == AppState(last_run=None, live={"live-1"})
    doc = json.loads(
        s3(moto_server).get_object(Bucket=bucket, Key="arch/.rtk-export-state.json")["Body"].read()
    )
    assert set(doc["apps"]) == {"app1", "app2"}


async def test_discovery_keeps_its_state_in_the_bucket(
    standin,
    moto_server: str,
    bucket: str,  # type: ignore[no-untyped-def]
) -> None:
    """A discovery run exports ENDED sessions, remembers a LIVE one in the bucket's state
    and moves last-run; the next run looks the LIVE one up again and exports it once ended."""
    sessions = [SessionSpec("app1", f"s{i}", NOW - timedelta(hours=5 - i)) for i in range(3)]
    live = SessionSpec("app1", "live-1", NOW - timedelta(hours=1), status="LIVE")
    async with standin(sessions=(*sessions, live)) as server:
        target = parse_target(f"s3://{bucket}/disc", moto_server, {"AWS_REGION": "us-east-1"})
        settings = make_settings(server, Path("unused"), apps=("app1",), now=NOW, store=target)
        first = await run_store(settings, handle_signals=False)
        assert first.fatal is None and first.stats.counts["exported"] == 3
        doc = json.loads(
            s3(moto_server)
            .get_object(Bucket=bucket, Key="disc/.rtk-export-state.json")["Body"]
            .read()
        )
        assert doc["apps"]["app1"]["live"] == ["live-1"] and doc["apps"]["app1"]["last_run"]
        server.state.catalogue[("app1", "live-1")].status = "ENDED"
        second = await run_store(settings, handle_signals=False)
    assert second.stats.counts["exported"] == 1
    assert ("app1", "live-1", "chat") in latest(moto_server, bucket, "disc")
    assert not Path("unused").exists()


async def test_dry_run_and_more_kinds_work_the_same(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """--dry-run plans and stores nothing; --include chat,transcript,summary stores each kind
    under its own key."""
    sessions = write_sessions(tmp_path / "s", pairs(2))
    dry = store_settings(server, moto_server, bucket, sessions, dry_run=True)
    planned = await run_store(dry, handle_signals=False)
    assert planned.plan.get("export") == 2
    assert keys(moto_server, bucket, "arch/") == []
    kinds = store_settings(
        server, moto_server, bucket, sessions, kinds=("chat", "transcript", "summary")
    )
    result = await run_store(kinds, handle_signals=False)
    assert result.stats.counts["exported"] == 6
    stored = set(keys(moto_server, bucket, "arch/app0/"))
    assert stored == {
        "arch/app0/sess-00000.csv",
        "arch/app0/sess-00000.transcript.csv",
        "arch/app0/sess-00000.summary.txt",
    }
