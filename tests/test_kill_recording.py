"""A recording download cut by `kill -9` or SIGTERM at several points, then a rerun: the rerun
continues from what the first run kept, so the bytes served across both runs stay within the
size plus one retry's worth, and the file is whole and right."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.resume import BATCH, SYNC_EVERY
from exporter.standin import StandinServer, standin_in_thread
from tests.helpers import (
    ACCOUNT,
    TOKEN,
    cli_env,
    leftovers,
    run_cli,
    standin_config,
    write_sessions,
)

SIZE = 24 << 20
# What a cut may cost again: the bytes written since the last sync of the resume record
# (kill -9 only), and what sat in socket buffers when the connection died.
IN_FLIGHT = 8 << 20
RETRY_WORTH = SYNC_EVERY + BATCH + IN_FLIGHT


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    config = standin_config(
        recording_statuses=("UPLOADED",), recording_bytes=SIZE, recording_chunk_delay=0.001
    )
    assert (config.token, config.account_id) == (TOKEN, ACCOUNT)
    with standin_in_thread(config) as srv:
        yield srv


def args_for(tmp_path: Path, session: str) -> tuple[list[str], Path]:
    sessions = write_sessions(tmp_path / "s.txt", [("app1", session)])
    out = tmp_path / "out"
    return [str(sessions), "--out", str(out), "--include", "recordings"], out


def held(folder: Path) -> int:
    """The bytes the resume record vouches for (0 if the kill came before it was written)."""
    records = list(folder.glob("*.resume.json"))
    return int(json.loads(records[0].read_text())["held"]) if records else 0


def rerun_and_check(
    server: StandinServer, args: list[str], out: Path, session: str, kept: int
) -> None:
    """The rerun ends with the recording whole and right, asking only for what was not kept."""
    served_before = server.state.media.recording_bytes_served
    rerun = run_cli(args, cli_env(server.base_url))
    assert rerun.returncode == 0, rerun.stderr
    (rec,) = server.state.media.recordings_of("app1", session)
    final = out / "app1" / f"{session}.recordings" / f"{rec.id}.mp4"
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines() if x]
    assert lines[-1]["status"] == "exported"
    assert lines[-1]["sha256"] == server.state.media.digest(rec.id)[1]
    assert final.stat().st_size == SIZE
    assert not [p for p in final.parent.iterdir() if p.name != final.name]  # no partial left
    assert leftovers(out) == []
    assert server.state.media.recording_bytes_served - served_before == SIZE - kept


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_kill_9_mid_recording_then_rerun_continues(
    server: StandinServer, tmp_path: Path, fraction: float
) -> None:
    """SIGKILL after `fraction` of a recording was written: the partial and its record stay
    (never under the final name), the rerun asks a fresh URL and continues with Range."""
    session = f"k9-{int(fraction * 100)}"
    args, out = args_for(tmp_path, session)
    start = server.state.media.recording_bytes_served
    killed = subprocess.run(
        [sys.executable, "-m", "tests.kill_harness", *args],
        env=cli_env(server.base_url, RTK_KILL_AT=f"recording-at:{int(SIZE * fraction)}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    folder = out / "app1" / f"{session}.recordings"
    assert [p.suffix for p in folder.iterdir() if p.suffix != ".json"] == [".partial"]
    kept = held(folder)
    assert kept >= SIZE * fraction - SYNC_EVERY - BATCH
    rerun_and_check(server, args, out, session, kept)
    assert server.state.media.recording_bytes_served - start <= SIZE + RETRY_WORTH


@pytest.mark.parametrize("fraction", [0.2, 0.6])
def test_sigterm_mid_recording_keeps_every_byte_for_the_rerun(
    server: StandinServer, tmp_path: Path, fraction: float
) -> None:
    """SIGTERM while a recording streams: exit 143, the record names exactly the bytes kept,
    and the rerun asks only for the rest."""
    session = f"term-{int(fraction * 100)}"
    args, out = args_for(tmp_path, session)
    start = server.state.media.recording_bytes_served
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        env=cli_env(server.base_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = out / "app1" / f"{session}.recordings"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bounded: the download takes about a second
        partial = [p for p in folder.glob("*.partial")] if folder.exists() else []
        if partial and partial[0].stat().st_size >= SIZE * fraction:
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("the recording never reached the point of the signal")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    (partial,) = folder.glob("*.partial")
    kept = held(folder)
    assert kept == partial.stat().st_size >= SIZE * fraction
    rerun_and_check(server, args, out, session, kept)
    assert server.state.media.recording_bytes_served - start <= SIZE + IN_FLIGHT
