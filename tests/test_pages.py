"""The client's pages of a session listing, against the stand-in over real HTTP: followed to
the end, per_page a parameter, and a server that ignores page_no stopped, not looped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.client import ApiClient, Page
from exporter.config import RetryPolicy
from exporter.errors import PermanentError
from exporter.ratelimit import Pacer
from exporter.standin import CannedResponse, SessionSpec, StandinServer
from exporter.stats import Stats
from tests.helpers import make_settings

START = datetime(2026, 11, 20, tzinfo=UTC)


def sessions(n: int) -> tuple[SessionSpec, ...]:
    return tuple(SessionSpec("app1", f"s{i:03d}", START + timedelta(minutes=i)) for i in range(n))


async def collect(server: StandinServer, tmp_path: Path, per_page: int) -> tuple[list[Page], Stats]:
    settings = make_settings(server, tmp_path)
    stats = Stats()
    got: list[Page] = []
    async with ApiClient(settings, Pacer(settings.rate), stats) as api:
        async for page in api.pages("app1", {}, per_page=per_page):
            got.append(page)
    return got, stats


async def test_pages_are_followed_to_the_end_at_the_asked_size(standin, tmp_path: Path) -> None:
    """12 sessions at 5 a page: pages 1, 2, 3, each asked with per_page=5, nothing more."""
    async with standin(sessions=sessions(12)) as server:
        pages, stats = await collect(server, tmp_path, per_page=5)
        queries = [r.query for r in server.state.records("api")]
    assert [p.number for p in pages] == [1, 2, 3]
    assert [len(p.items) for p in pages] == [5, 5, 2]
    assert [(q["page_no"], q["per_page"]) for q in queries] == [("1", "5"), ("2", "5"), ("3", "5")]
    assert stats.api_requests == 3


async def test_a_server_ignoring_page_no_is_an_error_not_a_loop(standin, tmp_path: Path) -> None:
    """The same full page again and again: the first page is given, then a PermanentError
    saying the server ignores page_no; two requests in all."""
    page = {
        "success": True,
        "paging": {"total_count": 50},
        "data": {"sessions": [s.to_json("org") for s in sessions(2)]},
    }
    async with standin(sessions=sessions(2)) as server:
        server.script(server.api_path("app1"), *[CannedResponse(200, body=page)] * 5)
        settings = make_settings(server, tmp_path)
        got = []
        async with ApiClient(settings, Pacer(settings.rate), Stats()) as api:
            with pytest.raises(PermanentError, match="ignore page_no"):
                async for p in api.pages("app1", {}, per_page=2):
                    got.append(p.number)
        assert len(server.state.records("api")) == 2
    assert got == [1]


async def test_a_short_first_page_repeated_means_it_held_everything(
    standin, tmp_path: Path
) -> None:
    """Without paging fields, a short page 1 repeated by page 2 was the whole listing."""
    page = {"success": True, "data": {"sessions": [s.to_json("org") for s in sessions(2)]}}
    async with standin(sessions=sessions(2)) as server:
        server.script(server.api_path("app1"), *[CannedResponse(200, body=page)] * 3)
        pages, stats = await collect(server, tmp_path, per_page=5)
    assert [len(p.items) for p in pages] == [2] and stats.api_requests == 2


async def test_each_page_has_its_own_attempts(standin, tmp_path: Path) -> None:
    """A 503 before page 1 and another before page 2, with two attempts allowed per request:
    both pages come (the failures of one page do not count against the next)."""
    specs = sessions(4)

    def page(part: tuple[SessionSpec, ...]) -> dict[str, object]:
        data = {"sessions": [s.to_json("org") for s in part]}
        return {"success": True, "paging": {"total_count": 4}, "data": data}

    busy = CannedResponse(503, body={"success": False, "errors": [{"code": 1, "message": "x"}]})
    async with standin(sessions=specs) as server:
        server.script(
            server.api_path("app1"),
            busy,
            CannedResponse(200, body=page(specs[:2])),
            busy,
            CannedResponse(200, body=page(specs[2:])),
        )
        settings = make_settings(server, tmp_path, retry=RetryPolicy.immediate(max_attempts=2))
        got = []
        async with ApiClient(settings, Pacer(settings.rate), Stats()) as api:
            async for p in api.pages("app1", {}, per_page=2):
                got.append([s["id"] for s in p.items])
        assert len(server.state.records("api")) == 4
    assert got == [["s000", "s001"], ["s002", "s003"]]
