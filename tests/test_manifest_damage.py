"""A manifest edited or damaged by hand: a warning naming the line, the run goes on, and the
pair of the damaged line is checked again (against an earlier line and its file, or exported)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from exporter.standin import StandinServer
from tests.helpers import export, make_settings, manifest_lines, pairs, write_sessions


async def first_run(server: StandinServer, tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    sessions = write_sessions(tmp_path / "s.txt", pairs(n))
    out = tmp_path / "out"
    result = await export(make_settings(server, out, sessions))
    assert result.stats.counts == {"exported": n}
    return sessions, out


async def rerun(
    server: StandinServer, sessions: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, int], list[str]]:
    caplog.set_level(logging.WARNING, logger="exporter")
    seen = len(server.state.records("download"))
    result = await export(make_settings(server, out, sessions))
    downloaded = [r.path.split("/")[3] for r in server.state.records("download")[seen:]]
    return dict(result.stats.counts), downloaded


def rewrite(manifest: Path, edit: object) -> None:
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join(edit(lines)))


async def test_a_garbage_line_in_the_middle_is_named_and_passed_over(
    server: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage between two lines: a warning with its line number; every pair still skipped."""
    sessions, out = await first_run(server, tmp_path)
    rewrite(out / "manifest.jsonl", lambda ls: [*ls[:3], b"<<<<<<< HEAD\x00garbage\n", *ls[3:]])
    counts, downloaded = await rerun(server, sessions, out, caplog)
    assert "manifest.jsonl line 4 is not valid JSON" in caplog.text
    assert counts == {"skipped": 6} and downloaded == []


async def test_a_truncated_line_gets_its_pair_exported_again(
    server: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A line cut short (in the middle of the file, or the last one without its newline) is
    named; its pair has no other line, so it is downloaded again and recorded."""
    sessions, out = await first_run(server, tmp_path)
    damaged = sorted(x["session_id"] for x in manifest_lines(out / "manifest.jsonl")[2::3])
    rewrite(out / "manifest.jsonl", lambda ls: [*ls[:2], ls[2][:40] + b"\n", *ls[3:5], ls[5][:-30]])
    counts, downloaded = await rerun(server, sessions, out, caplog)
    assert "manifest.jsonl line 3 is not valid JSON" in caplog.text
    assert "manifest.jsonl line 6 is incomplete" in caplog.text
    assert counts == {"skipped": 4, "exported": 2}
    assert sorted(downloaded) == damaged
    last = {x["session_id"]: x for x in manifest_lines_tolerant(out / "manifest.jsonl")}
    assert all(x["status"] in ("exported", "skipped") for x in last.values()) and len(last) == 6


async def test_an_unknown_status_is_named_and_the_earlier_line_rechecked(
    server: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A later line with a mistyped status is passed over: the pair's earlier `exported` line
    is checked against the file (intact: skipped); with no earlier line it is exported again."""
    sessions, out = await first_run(server, tmp_path)
    manifest = out / "manifest.jsonl"
    lines = manifest_lines(manifest)
    edited = dict(lines[1], status="exportd")
    alone = dict(lines[4], status="DONE")
    rewrite(
        manifest,
        lambda ls: [
            *ls[:4],
            *ls[5:],
            json.dumps(edited).encode() + b"\n",
            json.dumps(alone).encode() + b"\n",
        ],
    )
    # The pair of the old line 5 now has only the unknown-status line 7; that of line 2 has both.
    counts, downloaded = await rerun(server, sessions, out, caplog)
    assert "manifest.jsonl line 6 has unknown status 'exportd'" in caplog.text
    assert "manifest.jsonl line 7 has unknown status 'DONE'" in caplog.text
    assert counts == {"skipped": 5, "exported": 1} and downloaded == [alone["session_id"]]


@pytest.mark.parametrize(
    "line",
    [
        b'{"app_id": "app0", "session_id": "sess-00000", "kind": 5, "status": "exported"}\n',
        b'{"app_id": "app0", "session_id": "sess-00000", "kind": null}\n',
        b'{"app_id": ["app0"], "session_id": "sess-00000", "status": "exported"}\n',
        b'["app0", "sess-00000"]\n',
        b'{"app_id": "app0", "session_id": "sess-00000", "status": "exported", "bytes": true, '
        b'"sha256": 7}\n',
        b"\xff\xfe\xfd\n",
        b"\x00" * 300 + b"\n",
    ],
)
async def test_odd_lines_never_stop_the_run(
    server: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, line: bytes
) -> None:
    """Lines of the wrong shape or types are named and passed over; the run goes on."""
    sessions, out = await first_run(server, tmp_path)
    (out / "manifest.jsonl").write_bytes((out / "manifest.jsonl").read_bytes() + line)
    counts, _ = await rerun(server, sessions, out, caplog)
    assert "manifest.jsonl line 7" in caplog.text
    assert counts.get("skipped", 0) + counts.get("exported", 0) == 6


def manifest_lines_tolerant(path: Path) -> list[dict[str, object]]:
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out
