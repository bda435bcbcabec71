"""The stand-in's media routes, asked directly: the recordings endpoints and the recording file
route's Range, If-Range and 416, and the command line that configures them."""

from __future__ import annotations

import aiohttp

from exporter.standin import config_from_args
from tests.helpers import ACCOUNT, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_recording_routes_speak_range_and_if_range(standin) -> None:
    """The list filters by meeting id; one recording carries a fresh URL; its file answers a
    Range with 206 and Content-Range, a stale If-Range with the whole file, a start past the
    end with 416, and with the switch on, every Range with 200."""
    async with standin(recording_statuses=("UPLOADED", "ERRORED"), recording_bytes=5000) as srv:
        kit = f"{srv.base_url}/accounts/{ACCOUNT}/realtime/kit/app1"
        async with aiohttp.ClientSession(headers=AUTH) as api, aiohttp.ClientSession() as dl:
            async with api.get(f"{kit}/sessions/s1") as resp:
                meeting = (await resp.json())["data"]["associated_id"]
            async with api.get(f"{kit}/sessions/s2") as resp:
                assert resp.status == 200
            async with api.get(f"{kit}/recordings", params={"meeting_id": meeting}) as resp:
                doc = await resp.json()
            assert doc["paging"]["total_count"] == 2
            assert {r["session_id"] for r in doc["data"]} == {"s1"}
            up = next(r for r in doc["data"] if r["status"] == "UPLOADED")
            assert all("download_url" not in r for r in doc["data"] if r is not up)
            async with api.get(f"{kit}/recordings/{up['id']}") as resp:
                url = (await resp.json())["data"]["download_url"]
            whole = srv.state.media.body(up["id"])
            etag = srv.state.media.recordings[up["id"]].etag
            async with dl.get(url, headers={"Range": "bytes=1000-", "If-Range": etag}) as resp:
                assert (
                    resp.status == 206 and resp.headers["Content-Range"] == "bytes 1000-4999/5000"
                )
                assert await resp.read() == whole[1000:]
            async with dl.get(url, headers={"Range": "bytes=1000-", "If-Range": '"old"'}) as resp:
                assert resp.status == 200 and await resp.read() == whole
            async with dl.get(url, headers={"Range": "bytes=5000-"}) as resp:
                assert resp.status == 416
            srv.state.media.ignore_range = True
            async with dl.get(url, headers={"Range": "bytes=1000-"}) as resp:
                assert resp.status == 200 and await resp.read() == whole
            async with dl.get(url.replace("Signature=", "Signature=0")) as resp:
                assert resp.status == 403


def test_media_options_on_the_command_line() -> None:
    """--attachments, --recordings, --recording-bytes and --ignore-range land in the config."""
    config, _, _ = config_from_args(
        ["--attachments", "7", "--attachment-odd-ids", "--recordings", "UPLOADED,PAUSED",
         "--recording-bytes", "1234", "--ignore-range", "--recordings-ignore-filter"]
    )  # fmt: skip
    assert config.attachments == 7 and config.attachment_odd_ids
    assert config.recording_statuses == ("UPLOADED", "PAUSED")
    assert config.recording_bytes == 1234 and config.ignore_range
    assert config.recordings_ignore_filter


async def test_real_media_recordings_are_the_packaged_webm_served_by_range(standin) -> None:
    """With recording_media, the uploaded recording is the packaged WebM (EBML magic), named
    .webm and typed video/webm, its size the file's; a Range is honoured as for seeded bytes."""
    async with standin(recording_statuses=("UPLOADED",), recording_media=True) as srv:
        kit = f"{srv.base_url}/accounts/{ACCOUNT}/realtime/kit/app1"
        async with aiohttp.ClientSession(headers=AUTH) as api, aiohttp.ClientSession() as dl:
            async with api.get(f"{kit}/sessions/s1") as resp:
                meeting = (await resp.json())["data"]["associated_id"]
            async with api.get(f"{kit}/recordings", params={"meeting_id": meeting}) as resp:
                (rec,) = (await resp.json())["data"]
            assert rec["output_file_name"] == f"{rec['id']}.webm"
            async with dl.get(rec["download_url"]) as resp:
                whole = await resp.read()
                assert resp.headers["Content-Type"] == "video/webm"
            assert whole.startswith(b"\x1a\x45\xdf\xa3") and len(whole) == rec["file_size"]
            async with dl.get(rec["download_url"], headers={"Range": "bytes=100-"}) as resp:
                assert resp.status == 206 and await resp.read() == whole[100:]
