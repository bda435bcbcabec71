"""Attachments and recordings with an s3:// --out, against moto's S3 on loopback: objects under
PREFIX with their SHA-256, verify, reruns that skip, recordings cut off that resume from a
partial kept on this host, and the whole of it through the checking proxy."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exporter.attachments import iter_attachments
from exporter.config import RetryPolicy
from exporter.objectstore.partials import partials_area
from exporter.objectstore.verify import verify_store
from exporter.standin import StandinServer
from tests.helpers import write_sessions
from tests.s3fakes import checking_proxy
from tests.s3helpers import body, keys, manifest_records, run_store, s3, sha256, store_settings

LOCAL = frozenset({"127.0.0.1"})
SIZE = 600_000


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The run's temporary area and the partials area in this test's own folder."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Parts of 64 KiB, which moto (in this process) is told to take: S3's own minimum,
    5 MiB, would need recordings ten times larger for the same number of parts."""
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 1024)
    return {"part_size": 64 * 1024}


def media_lines(endpoint: str, bucket: str, kind: str) -> list[dict[str, Any]]:
    """The latest line of each item of `kind`, by (session, item id)."""
    item = "message_id" if kind == "attachment" else "recording_id"
    latest = {
        (r["session_id"], r[item]): r
        for r in manifest_records(endpoint, bucket)
        if r["kind"] == kind
    }
    return list(latest.values())


def partial_files(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.rglob("*") if p.is_file() and ".rtk-export-" in p.name)


def recording_settings(server: StandinServer, endpoint: str, bucket: str, tmp_path: Path, **kw):
    sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1")])
    return store_settings(server, endpoint, bucket, sessions, kinds=("recording",), **kw)


def check_object(endpoint: str, bucket: str, line: dict[str, Any], expected: bytes) -> None:
    """The object the line names holds `expected`, with its SHA-256 in the metadata."""
    got = s3(endpoint).get_object(Bucket=bucket, Key=f"arch/{line['path']}")
    data = got["Body"].read()
    assert data == expected and line["bytes"] == len(data)
    assert got["Metadata"]["sha256"] == line["sha256"] == sha256(data)


async def test_attachments_land_as_objects_verify_intact_and_a_rerun_skips_them(
    standin, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """Each linked file of a chat stored in the bucket is an object under
    PREFIX/<app>/<session>.attachments/ as served, with x-amz-meta-sha256 and its manifest
    line; verify finds every object intact; a rerun skips them all with no download."""
    sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1"), ("app1", "s2")])
    async with standin(attachments=12) as server:
        settings = store_settings(
            server,
            moto_server,
            bucket,
            sessions,
            kinds=("chat", "attachment"),
            attachment_allow_hosts=LOCAL,
        )
        first = await run_store(settings)
        lines = {
            (x["session_id"], x["message_id"]): x
            for x in media_lines(moto_server, bucket, "attachment")
        }
        listed = [
            a
            for sid in ("s1", "s2")
            for a in iter_attachments(
                "app1", sid, io.BytesIO(body(moto_server, bucket, f"arch/app1/{sid}.csv"))
            )
        ]
        assert len(listed) == len(lines) >= 24
        exported = 0
        for att in listed:
            line = lines[(att.session_id, att.message_id)]
            if att.payload.link is None:
                assert line["status"] == "unavailable"
                continue
            assert line["status"] == "exported", line
            assert str(line["path"]).startswith(f"app1/{att.session_id}.attachments/")
            name = urlsplit(att.payload.link).path.rsplit("/", 1)[1]
            served = server.state.media.attachment_body("app1", att.session_id, name)
            check_object(moto_server, bucket, line, served)
            exported += 1
        assert exported == first.stats.counts["exported"] - 2  # and the two chats
        found = await verify_store(settings.store)
        assert found.ok and found.intact == found.checked == exported + 2
        assert found.untracked == []
        downloads = len(server.state.records("attachment"))
        again = await run_store(settings)
        assert len(server.state.records("attachment")) == downloads
        assert again.stats.counts["skipped"] == first.stats.counts["exported"]
    assert not [k for k in keys(moto_server, bucket) if ".rtk-export-" in k]


async def test_uploaded_recordings_become_objects_and_a_rerun_skips_them(
    standin,
    moto_server: str,
    bucket: str,
    tmp_path: Path,
    private_tmp: Path,
    small_parts: dict[str, int],
) -> None:
    """An UPLOADED recording is an object (here a multipart upload) under
    PREFIX/<app>/<session>.recordings/<id>.mp4 as served, with its SHA-256; one still
    recording is unavailable; a rerun skips the first without downloading it again."""
    async with standin(
        recording_statuses=("UPLOADED", "RECORDING"), recording_bytes=SIZE
    ) as server:
        media = server.state.media
        settings = recording_settings(server, moto_server, bucket, tmp_path)
        first = await run_store(settings, archive_options=small_parts)
        done, busy = media.recordings_of("app1", "s1")
        lines = {x["recording_id"]: x for x in media_lines(moto_server, bucket, "recording")}
        assert lines[done.id]["path"] == f"app1/s1.recordings/{done.id}.mp4"
        check_object(moto_server, bucket, lines[done.id], media.body(done.id))
        assert lines[done.id]["sha256"] == media.digest(done.id)[1]
        assert lines[busy.id]["status"] == "unavailable"
        assert first.stats.counts == {"exported": 1, "unavailable": 1}
        asked = len(server.state.records("recording"))
        again = await run_store(settings, archive_options=small_parts)
        assert again.stats.counts == {"skipped": 1, "unavailable": 1}
        assert len(server.state.records("recording")) == asked
        assert (await verify_store(settings.store)).ok
    assert partial_files(private_tmp) == []


async def test_a_recording_cut_off_resumes_in_the_same_run(
    standin,
    moto_server: str,
    bucket: str,
    tmp_path: Path,
    private_tmp: Path,
    small_parts: dict[str, int],
) -> None:
    """Cut off mid-body, the retry continues the local partial with Range, and the object
    uploaded once whole has the SHA-256 of every byte; no partial is left anywhere."""
    async with standin(recording_statuses=("UPLOADED",), recording_bytes=SIZE) as server:
        media = server.state.media
        media.cut_next.append(250_000)
        result = await run_store(
            recording_settings(server, moto_server, bucket, tmp_path),
            archive_options=small_parts,
        )
        (rec,) = media.recordings_of("app1", "s1")
        asks = server.state.records("recording")
        assert len(asks) == 2 and asks[1].status == 206
        held = int(asks[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
        assert 0 < held <= 250_000 and media.recording_bytes_served <= SIZE + 64 * 1024
    (line,) = media_lines(moto_server, bucket, "recording")
    assert line["status"] == "exported" and result.stats.retries == 1
    assert line["sha256"] == media.digest(rec.id)[1]
    check_object(moto_server, bucket, line, media.body(rec.id))
    assert partial_files(private_tmp) == []
    assert not [k for k in keys(moto_server, bucket) if ".rtk-export-" in k]


async def test_a_partial_outlives_its_run_and_the_next_run_resumes_it(
    standin, moto_server: str, bucket: str, tmp_path: Path, private_tmp: Path
) -> None:
    """A run that gives up keeps the partial and its record on this host (not in the bucket);
    the next run on the same PREFIX continues it with Range, and the object is whole."""
    async with standin(recording_statuses=("UPLOADED",), recording_bytes=SIZE) as server:
        media = server.state.media
        (rec,) = media.recordings_of("app1", "s1")
        once = recording_settings(
            server, moto_server, bucket, tmp_path, retry=RetryPolicy.immediate(max_attempts=1)
        )
        media.cut_next.append(300_000)
        first = await run_store(once)
        assert first.stats.counts == {"failed": 1}
        assert partial_files(private_tmp) == [
            f".rtk-export-{rec.id}.mp4.partial",
            f".rtk-export-{rec.id}.mp4.resume.json",
        ]
        assert not [k for k in keys(moto_server, bucket, "arch/app1/") if rec.id in k]
        second = await run_store(once)
        ask = server.state.records("recording")[-1]
        assert ask.status == 206 and ask.headers["Range"] != "bytes=0-"
    assert second.stats.counts == {"exported": 1}
    (line,) = [x for x in media_lines(moto_server, bucket, "recording")]
    check_object(moto_server, bucket, line, media.body(rec.id))
    assert line["sha256"] == media.digest(rec.id)[1] and partial_files(private_tmp) == []


async def test_a_whole_partial_left_unplaced_is_uploaded_without_downloading_again(
    standin, moto_server: str, bucket: str, tmp_path: Path, private_tmp: Path
) -> None:
    """A partial that holds the whole recording (its upload failed, or the run died before
    it) is answered 416 from its end and uploaded as it is: no body byte is served again."""
    async with standin(recording_statuses=("UPLOADED",), recording_bytes=SIZE) as server:
        media = server.state.media
        (rec,) = media.recordings_of("app1", "s1")
        settings = recording_settings(server, moto_server, bucket, tmp_path)
        folder = Path(partials_area(settings.store, "unused")) / "app1" / "s1.recordings"
        folder.mkdir(parents=True)
        (folder / f".rtk-export-{rec.id}.mp4.partial").write_bytes(media.body(rec.id))
        record = {"recording_id": rec.id, "size": SIZE, "etag": rec.etag, "held": SIZE}
        (folder / f".rtk-export-{rec.id}.mp4.resume.json").write_text(
            json.dumps({**record, "updated": time.time()})
        )
        result = await run_store(settings)
        assert server.state.records("recording")[-1].status == 416
        assert media.recording_bytes_served == 0
    assert result.stats.counts == {"exported": 1}
    (line,) = media_lines(moto_server, bucket, "recording")
    check_object(moto_server, bucket, line, media.body(rec.id))
    assert partial_files(private_tmp) == []


async def test_partials_of_a_bucket_are_removed_after_a_week(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """Start-up removes a bucket's partials (and records) not resumed for 7 days and the
    folders left empty, and keeps a fresh one."""
    settings = store_settings(server, moto_server, bucket, write_sessions(tmp_path / "s", []))
    folder = Path(partials_area(settings.store, "unused")) / "app9" / "s9.recordings"
    folder.mkdir(parents=True)
    old = [folder / ".rtk-export-r1.mp4.partial", folder / ".rtk-export-r1.mp4.resume.json"]
    fresh = folder / ".rtk-export-r2.mp4.partial"
    for path in (*old, fresh):
        path.write_bytes(b"x")
    eight_days = time.time() - 8 * 86400
    for path in old:
        os.utime(path, (eight_days, eight_days))
    finished = folder.parent.parent / "app8" / "s8.recordings"  # a recording's, once uploaded
    finished.mkdir(parents=True)
    await run_store(settings)
    assert sorted(p.name for p in folder.iterdir()) == [fresh.name]
    assert not finished.parent.exists()


def test_a_partials_folder_open_to_others_is_not_used(private_tmp: Path) -> None:
    """A partials folder another user could write to (planted in a shared /tmp) is refused:
    the run keeps its partials in its own temporary area instead."""
    from exporter.objectstore.target import parse_target

    target = parse_target("s3://bkt/p", "http://127.0.0.1:9", {"AWS_REGION": "us-east-1"})
    mine = partials_area(target, "fallback")
    assert mine != "fallback" and Path(mine).is_dir()
    base = Path(mine).parent
    base.chmod(0o777)
    assert partials_area(target, "fallback") == "fallback"
    base.chmod(0o700)
    assert partials_area(target, "fallback") == mine


async def test_media_through_an_r2_like_store(
    standin, moto_server: str, bucket: str, tmp_path: Path, small_parts: dict[str, int]
) -> None:
    """Through the checking proxy, attachments and a recording cut off and resumed (as a
    multipart upload) go through with nothing refused: Content-MD5 on every PUT and part,
    no aws-chunked body, and the recording's object holds every byte."""
    sessions = write_sessions(tmp_path / "s.txt", [("app1", "s1")])
    async with (
        standin(attachments=6, recording_statuses=("UPLOADED",), recording_bytes=SIZE) as server,
        checking_proxy(moto_server) as proxy,
    ):
        media = server.state.media
        media.cut_next.append(200_000)
        settings = store_settings(
            server,
            proxy.url,
            bucket,
            sessions,
            kinds=("chat", "attachment", "recording"),
            attachment_allow_hosts=LOCAL,
        )
        result = await run_store(settings, archive_options=small_parts)
        (rec,) = media.recordings_of("app1", "s1")
    assert proxy.rules.refused == [] and result.fatal is None
    counts = result.stats.counts
    assert set(counts) == {"exported", "unavailable"} and counts["exported"] >= 1 + 5 + 1
    puts = [r for r in proxy.rules.seen if r["method"] == "PUT" and "/arch/app1/" in r["path"]]
    parts = [r for r in puts if "partNumber=" in r["path"]]
    assert len(parts) == 10 and all("Content-MD5" in r["headers"] for r in puts)
    (line,) = media_lines(moto_server, bucket, "recording")
    check_object(moto_server, bucket, line, media.body(rec.id))
