"""Every fault at once, over real HTTP: nothing is lost, nothing is corrupted, the server's
limits are respected. The long sweep over many seeds is bench/chaos_sweep.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.ratelimit import Pacer
from tests.chaos import chaos_run


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder in RAM where there is one: 2,000 fsyncs on this machine's disk take longer than
    the whole export, and durability is not what these tests look at."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and shm.stat().st_mode & 0o002):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="rtk-chaos-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_chaos_run_loses_and_corrupts_nothing(fast_dir: Path, seed: int) -> None:
    """2,000 pairs under 5xx, drops, 429s, short bodies, expired URLs, slow answers and a server
    rate limit all at once: every pair `exported`, every file as served, no limit broken."""
    report = await chaos_run(seed, 2000, fast_dir)
    assert report.lost == [] and report.corrupt == []
    assert report.leftovers == [] and report.strays == []
    assert report.statuses == {"exported": 2000}
    assert report.rate_violations == 0 and report.early_after_retry_after == 0
    assert report.client_early == 0
    # The faults really happened (the stand-in counted them), each kind many times.
    for kind in (
        "api_5xx",
        "api_drop",
        "api_429",
        "download_5xx",
        "download_drop",
        "download_drop_mid_body",
        "download_truncate",
        "download_expired",
    ):
        assert report.faults[kind] >= 20, (kind, report.faults)


async def test_retry_after_is_honoured_under_chaos(fast_dir: Path) -> None:
    """With a real 250 ms Retry-After on one API answer in ten, no API request arrives while
    one runs, except those already on their way when the 429 was sent (150 ms of grace)."""
    report = await chaos_run(4, 150, fast_dir, retry_after=0.25, retry_after_grace=0.15)
    assert report.faults["api_429"] >= 5
    assert report.lost == [] and report.corrupt == [] and report.leftovers == []
    assert report.early_after_retry_after == 0 and report.rate_violations == 0
    assert report.client_early == 0


async def test_the_early_counter_catches_a_client_that_ignores_retry_after(
    fast_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks above can fail: with the pacer's pause switched off, the server counts early
    requests and the audit of the client's own starts finds them too."""
    monkeypatch.setattr(Pacer, "pause", lambda self, seconds: None)
    report = await chaos_run(4, 150, fast_dir, retry_after=0.25, retry_after_grace=0.15)
    assert report.early_after_retry_after > 0
    assert report.client_early > 0
