"""The manifest: append and flush, the latest line per unit, and damaged lines passed over."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.errors import PermanentError
from exporter.manifest import Manifest, Record, record
from exporter.times import rfc3339_utc


def rec(app: str, sid: str, status: str = "exported", kind: str = "chat") -> Record:
    return record(
        app_id=app,
        session_id=sid,
        kind=kind,
        status=status,
        run_id="r1",
        attempts=2,
        path=f"{app}/{sid}.csv",
        size=10,
        sha256="ab" * 32,
    )


def test_lines_are_flushed_as_appended(tmp_path: Path) -> None:
    """Each appended line is on disk before close (a crash loses only units in flight)."""
    m = Manifest(tmp_path / "m.jsonl")
    m.open_for_append()
    m.append(rec("a", "s1"))
    on_disk = (tmp_path / "m.jsonl").read_text()
    m.close()
    assert json.loads(on_disk)["session_id"] == "s1"


def test_the_last_line_of_a_unit_wins(tmp_path: Path) -> None:
    """latest() returns the unit's last line; kinds are separate units."""
    path = tmp_path / "m.jsonl"
    m = Manifest(path)
    m.open_for_append()
    m.append(rec("a", "s1", "failed"))
    m.append(rec("a", "s1", "exported"))
    m.append(rec("a", "s1", "unavailable", kind="summary"))
    m.close()
    loaded = Manifest(path)
    loaded.load()
    assert loaded.latest("a", "s1", "chat").status == "exported"
    assert loaded.latest("a", "s1", "summary").status == "unavailable"
    assert loaded.latest("a", "s2", "chat") is None
    loaded.close()


def test_a_torn_last_line_is_ignored_and_not_glued_to_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A line cut by kill -9 is reported with its number; the next run starts a fresh line."""
    path = tmp_path / "m.jsonl"
    good = json.dumps(rec("a", "s1").to_json())
    path.write_text(good + "\n" + good[:40])
    m = Manifest(path)
    with caplog.at_level(logging.WARNING):
        m.load()
    assert "line 2 is incomplete" in caplog.text
    m.open_for_append()
    m.append(rec("a", "s2"))
    m.close()
    lines = path.read_text().splitlines()
    assert lines[1] == good[:40] and json.loads(lines[2])["session_id"] == "s2"


def test_garbage_and_unknown_status_are_reported_by_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A garbage line and an unknown status are named by line number; the run goes on."""
    path = tmp_path / "m.jsonl"
    odd = dict(rec("a", "s2").to_json(), status="archived?")
    path.write_text(
        "\n".join(
            [
                json.dumps(rec("a", "s1").to_json()),
                "{not json",
                json.dumps(odd),
                json.dumps({"hello": 1}),
            ]
        )
        + "\n"
    )
    m = Manifest(path)
    with caplog.at_level(logging.WARNING):
        m.load()
    assert "line 2 is not valid JSON" in caplog.text
    assert "line 3 has unknown status 'archived?'" in caplog.text
    assert "line 4 has no app_id/session_id" in caplog.text
    assert m.damaged_lines == 3
    assert m.latest("a", "s1", "chat") is not None
    # Passed over, as the README says: with no other line for it, the unit is exported again.
    assert m.latest("a", "s2", "chat") is None
    m.close()


def test_error_records_hold_kind_message_and_status(tmp_path: Path) -> None:
    """A failed unit's `error` is {kind, message, http_status}."""
    r = record(
        app_id="a",
        session_id="s",
        kind="chat",
        status="failed",
        run_id="r",
        error=PermanentError("HTTP 404: Session not found", http_status=404),
    )
    assert r.error == {
        "kind": "permanent",
        "message": "HTTP 404: Session not found",
        "http_status": 404,
    }
    assert r.path is None and r.bytes is None and r.sha256 is None


@given(st.lists(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False), max_size=20))
def test_timestamps_are_rfc3339_utc_to_the_millisecond(times: list[float]) -> None:
    """rfc3339_utc agrees with datetime for any sequence of
    times, repeated seconds and jumps back included."""
    for when in [*times, *times]:
        expected = datetime.fromtimestamp(when, UTC)
        expected = expected.replace(microsecond=expected.microsecond // 1000 * 1000)
        text = rfc3339_utc(when)
        assert text.endswith("Z") and len(text) == 24
        got = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # Floating point: the millisecond may come out one below datetime's rounding.
        assert 0 <= (expected - got).total_seconds() <= 0.001


def test_recent_failures_come_from_the_loading_pass(tmp_path: Path) -> None:
    """The failed units are collected while the index is built: asking for them reads the
    file no more (it may be gone), and a later line of the unit cancels its failure."""
    path = tmp_path / "m.jsonl"
    lines = [
        rec("a", "s1", "failed"),
        rec("a", "s2", "failed"),
        rec("a", "s2", "exported"),
        rec("b", "s3", "failed"),
    ]
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in lines))
    m = Manifest(path)
    m.load()
    path.unlink()
    got = m.recent_failures(frozenset({"a", "b"}), datetime(2000, 1, 1, tzinfo=UTC))
    assert sorted((p.app_id, p.session_id) for p in got) == [("a", "s1"), ("b", "s3")]
    assert m.recent_failures(frozenset({"a"}), datetime(2999, 1, 1, tzinfo=UTC)) == []
