"""The one retry hook: every retry scheduled leaves a `retry_scheduled` log line with its error
kind and wait, and is counted by kind in the summary, the JSON summary and the metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.config import Rate, RetryPolicy
from exporter.ratelimit import Pacer
from exporter.report import Output, report_end, summary_dict, summary_text
from exporter.retry import RetryDetails
from exporter.standin import CannedResponse, StandinServer
from tests.fakes import FakeClock
from tests.helpers import export, make_settings, write_sessions


async def test_each_retry_is_logged_and_counted_by_kind(
    server: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two 503s and a 429: three retries, three log lines naming the unit, counted as
    transient 2 and rate_limited 1; the 429's pause is counted in seconds."""
    server.script(
        server.api_path("a1", "s1", "chat"),
        CannedResponse(503),
        CannedResponse(503),
        CannedResponse(429, headers={"Retry-After": "2"}),
    )
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "s1"), ("a1", "s2")])
    clock = FakeClock()
    rate = Rate(1_000_000, 1.0)
    with caplog.at_level(logging.INFO):
        result = await export(
            make_settings(
                server,
                tmp_path / "out",
                sessions,
                rate=rate,
                retry=RetryPolicy.immediate(max_attempts=5),
            ),
            pacer=Pacer(rate, clock=clock, sleep=clock.sleep),
        )
    assert result.stats.counts == {"exported": 2}
    scheduled = [r for r in caplog.records if getattr(r, "event", None) == "retry_scheduled"]
    assert [getattr(r, "kind", None) for r in scheduled] == [
        "transient",
        "transient",
        "rate_limited",
    ]
    assert all("a1/s1 chat" in r.getMessage() for r in scheduled)
    assert all(getattr(r, "wait", None) == 0.0 for r in scheduled)  # an immediate policy
    assert result.stats.retries == 3
    assert result.stats.retries_by_kind == {"transient": 2, "rate_limited": 1}
    # The 429's Retry-After paused every request for 2 s of the pacer's clock.
    assert result.stats.paused_seconds == pytest.approx(2.0)
    doc = summary_dict(result, 0)
    assert doc["retries_by_kind"] == {"rate_limited": 1, "transient": 2}
    assert doc["paused_seconds"] == pytest.approx(2.0)
    assert "(rate_limited 1, transient 2)" in summary_text(result)
    metrics = tmp_path / "m.prom"
    report_end(Output(metrics_file=str(metrics)), result, 0)
    text = metrics.read_text()
    assert 'rtk_export_retries{kind="transient"} 2.0' in text
    assert 'rtk_export_retries{kind="rate_limited"} 1.0' in text
    assert "rtk_export_paused_seconds 2.0" in text


async def test_a_listing_retry_goes_through_the_same_hook(
    standin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A listing request answered 502 is retried and counted like a unit's retry."""
    async with standin() as server:
        server.script(server.api_path("app1"), CannedResponse(502))
        with caplog.at_level(logging.INFO):
            result = await export(make_settings(server, tmp_path / "out", apps=("app1",)))
    scheduled = [r for r in caplog.records if getattr(r, "event", None) == "retry_scheduled"]
    assert len(scheduled) == 1 and "listing app1" in scheduled[0].getMessage()
    assert result.stats.retries_by_kind == {"transient": 1}


def test_a_retry_names_its_pair_when_it_has_one() -> None:
    """A retry of a unit or a session lookup carries `app_id` and `session_id` for the JSON
    log; one of a listing or a store request carries neither."""

    def details(what: str) -> RetryDetails:
        return RetryDetails(what=what, kind="transient", message="m", retry_number=1, wait=0.0)

    pair = {"app_id": "app1", "session_id": "s-1_x"}
    assert details("app1/s-1_x chat").pair == pair
    assert details("app1/s-1_x attachment msg-1").pair == pair
    assert details("session app1/s-1_x").pair == pair
    assert details("listing app1").pair == {}
    assert details("PUT nightly/app1/s1.csv").pair == {}
