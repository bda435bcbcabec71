"""Transcripts and summaries: each (pair, kind) one unit of work, against the stand-in."""

from __future__ import annotations

from pathlib import Path

from exporter.standin import CannedResponse, SessionSpec
from tests.helpers import export, make_settings, manifest_lines, write_sessions
from tests.test_discovery import NOW, discover

KINDS = ("chat", "transcript", "summary")
CATALOGUE = (
    SessionSpec("a1", "full", NOW),
    SessionSpec("a1", "bare", NOW, has_transcript=False, has_summary=False),
    SessionSpec("a1", "talk", NOW, has_summary=False),
)
PAIRS = [("a1", "full"), ("a1", "bare"), ("a1", "talk")]


def latest(out: Path) -> dict[tuple[str, str], dict[str, object]]:
    return {(x["session_id"], x["kind"]): x for x in manifest_lines(out / "manifest.jsonl")}


async def test_each_kind_lands_under_its_name_and_missing_ones_are_unavailable(
    standin, tmp_path: Path
) -> None:
    """Transcript (as VTT) and summary land beside the chat; a 404 for one is `unavailable`
    with the API's message, asked once, and leaves the exit code at 0."""
    out = tmp_path / "out"
    sessions = write_sessions(tmp_path / "s.txt", PAIRS)
    async with standin(sessions=CATALOGUE, accept_any=False) as server:
        result = await export(
            make_settings(server, out, sessions, kinds=KINDS, transcript_format="vtt")
        )
        api = server.state.records("api")
        for sid, kind, name in [
            ("full", "chat", "full.csv"),
            ("full", "transcript", "full.transcript.vtt"),
            ("full", "summary", "full.summary.txt"),
            ("talk", "transcript", "talk.transcript.vtt"),
        ]:
            fmt = name.rsplit(".", 1)[1]
            assert (out / "a1" / name).read_bytes() == server.expected_body("a1", sid, kind, fmt)
    assert result.stats.counts == {"exported": 6, "unavailable": 3}
    lines = latest(out)
    assert len(lines) == 9
    gone = lines[("bare", "transcript")]
    assert gone["status"] == "unavailable" and gone["path"] is None and gone["attempts"] == 1
    assert gone["error"]["http_status"] == 404
    assert "Transcript not found" in gone["error"]["message"]
    assert lines[("talk", "summary")]["status"] == "unavailable"
    transcript_asks = [r for r in api if r.path.endswith("/transcript")]
    assert len(transcript_asks) == 3 and {r.query["format"] for r in transcript_asks} == {"VTT"}
    assert len(api) == 9  # one request per unit: nothing retried


async def test_resume_and_skip_are_per_kind(standin, tmp_path: Path) -> None:
    """A rerun skips each intact (pair, kind) with no request, re-asks only the unavailable,
    and re-exports only the one kind whose file was deleted."""
    out = tmp_path / "out"
    sessions = write_sessions(tmp_path / "s.txt", PAIRS)
    async with standin(sessions=CATALOGUE, accept_any=False) as server:
        await export(make_settings(server, out, sessions, kinds=KINDS))
        (out / "a1" / "full.transcript.csv").unlink()
        before = len(server.state.records("api"))
        result = await export(make_settings(server, out, sessions, kinds=KINDS))
        asked = [r.path.split("/sessions/")[1] for r in server.state.records("api")[before:]]
    assert result.stats.counts == {"exported": 1, "skipped": 5, "unavailable": 3}
    assert sorted(asked) == ["bare/summary", "bare/transcript", "full/transcript", "talk/summary"]
    assert latest(out)[("full", "transcript")]["status"] == "exported"


async def test_transcripts_and_summaries_are_retried_and_refreshed_like_chat(
    standin, tmp_path: Path
) -> None:
    """A 503 on a transcript URL request is retried; an expired summary URL is refreshed."""
    out = tmp_path / "out"
    sessions = write_sessions(tmp_path / "s.txt", [("a1", "full")])
    async with standin(sessions=CATALOGUE, accept_any=False) as server:
        server.script(server.api_path("a1", "full", "transcript"), CannedResponse(503))
        server.script(
            "/downloads/a1/full/summary.txt",
            CannedResponse(
                403,
                body="<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
                "</Error>",
                headers={"Content-Type": "application/xml"},
            ),
        )
        result = await export(make_settings(server, out, sessions, kinds=("transcript", "summary")))
    assert result.stats.counts == {"exported": 2}
    assert result.stats.retries == 2 and result.stats.url_refreshes == 1
    lines = latest(out)
    assert set(lines) == {("full", "transcript"), ("full", "summary")}  # --include replaces chat
    assert lines[("full", "transcript")]["attempts"] == 3
    assert lines[("full", "summary")]["attempts"] == 4


async def test_discovery_exports_every_included_kind(standin, tmp_path: Path) -> None:
    """Discovered pairs get every --include kind too; unavailable ones keep exit 0."""
    out = tmp_path / "out"
    async with standin(sessions=CATALOGUE, accept_any=False) as server:
        result, _, code = await discover(
            server,
            out,
            apps=("a1",),
            kinds=KINDS,
            until=(NOW.replace(year=NOW.year + 1)).isoformat(),
        )
    assert code == 0 and result is not None
    assert result.stats.counts == {"exported": 6, "unavailable": 3}
