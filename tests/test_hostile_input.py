"""Hostile SESSIONS files end to end through the pipeline: each bad line a clear `invalid` with
its number, the good ones exported, nothing written or requested outside DIR."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from exporter.standin import StandinServer
from tests.helpers import export, make_settings, manifest_lines

ESCAPES = [
    "../.. s1",
    "a1 ../../etc/passwd",
    "a1 ..",
    "a1 .",
    ".. s1",
    "a1/.. s1",
    "a1 s1/../../x",
    "/etc s1",
    "a1 /etc/passwd",
    "a1 %2e%2e",
    "%2e%2e%2f s1",
    "a1 ..\\..\\windows",
    "a1 s1%00",
    "CON s1",
    "a1 nul",
    "a1 COM1",
    "LPT9 s1",
    "a1 aux",
    "a1 ~root",
    "a1 s1:stream",
]


async def run(
    server: StandinServer,
    tmp_path: Path,
    data: bytes,
    caplog: pytest.LogCaptureFixture | None = None,
) -> tuple[dict[str, int], Path]:
    sessions = tmp_path / "s.txt"
    sessions.write_bytes(data)
    out = tmp_path / "out"
    if caplog is not None:
        caplog.set_level(logging.WARNING, logger="exporter")
    result = await export(make_settings(server, out, sessions))
    return dict(result.stats.counts), out


def files_under(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


async def test_bom_and_crlf_are_read_as_plain_lines(server: StandinServer, tmp_path: Path) -> None:
    """A UTF-8 BOM before a CSV header, CRLF line ends, and no final newline: all pairs read."""
    counts, out = await run(
        server, tmp_path, b"\xef\xbb\xbfapp_id,session_id\r\na1,s1\r\na1 s2\r\n\r\na2,s3"
    )
    assert counts == {"exported": 3}
    assert files_under(out) == {"manifest.jsonl", "a1/s1.csv", "a1/s2.csv", "a2/s3.csv"}


async def test_nul_bytes_and_invalid_utf8_are_invalid_lines(
    server: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL byte and bytes that are not UTF-8 make their lines `invalid`, named by number."""
    counts, out = await run(
        server, tmp_path, b"a1 s1\na1 s\x002\na1 s\xff\xfe3\n\x00\x00\x00\na1 s4\n", caplog
    )
    assert counts == {"exported": 2, "invalid": 3}
    bad = {
        x["line"]: x["error"]["message"]
        for x in manifest_lines(out / "manifest.jsonl")
        if x["status"] == "invalid"
    }
    assert sorted(bad) == [2, 3, 4]
    assert "NUL byte" in bad[2] and "not valid UTF-8" in bad[3]
    assert all(f"SESSIONS line {n}:" in caplog.text for n in (2, 3, 4))
    assert files_under(out) == {"manifest.jsonl", "a1/s1.csv", "a1/s4.csv"}


async def test_a_50_mb_line_is_one_invalid_line(server: StandinServer, tmp_path: Path) -> None:
    """A single 50 MB line (a binary dropped in by mistake) is one `invalid` line, skipped in
    bounded pieces; the pairs before and after it are exported."""
    counts, out = await run(server, tmp_path, b"a1 s1\n" + b"x" * (50 << 20) + b"\na1 s2\n")
    assert counts == {"exported": 2, "invalid": 1}
    bad = [x for x in manifest_lines(out / "manifest.jsonl") if x["status"] == "invalid"]
    assert bad[0]["line"] == 2 and "longer than 8192 bytes" in bad[0]["error"]["message"]
    assert len((out / "manifest.jsonl").read_bytes()) < 4096  # none of it was copied along


async def test_100000_duplicate_lines_are_one_export(server: StandinServer, tmp_path: Path) -> None:
    """The same pair 100,000 times (in both spellings) costs one API request and one line."""
    counts, out = await run(server, tmp_path, b"a1 s1\na1,s1\n" * 50_000)
    assert counts == {"exported": 1}
    assert len(server.state.records("api")) == 1
    assert len(manifest_lines(out / "manifest.jsonl")) == 1


async def test_ids_that_try_to_leave_dir_are_refused(server: StandinServer, tmp_path: Path) -> None:
    """`..`, `/`, `%2e%2e`, backslashes, Windows device names...: each line `invalid`, no
    request for it, and nothing written anywhere but DIR/a1/ok.csv and the manifest."""
    data = "\n".join(["a1 ok", *ESCAPES]).encode() + b"\n"
    counts, out = await run(server, tmp_path, data)
    assert counts == {"exported": 1, "invalid": len(ESCAPES)}
    lines = manifest_lines(out / "manifest.jsonl")
    assert sorted(x["line"] for x in lines if x["status"] == "invalid") == list(
        range(2, len(ESCAPES) + 2)
    )
    assert all(x["path"] is None for x in lines if x["status"] == "invalid")
    assert [r.path for r in server.state.records("api")] == [server.api_path("a1", "ok", "chat")]
    assert files_under(out) == {"manifest.jsonl", "a1/ok.csv"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.txt"]
