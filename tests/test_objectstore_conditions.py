"""A store that accepts `If-None-Match` or `If-Match` and ignores it, behind the checking proxy
in front of moto: the run checks once, exits 2 with one line naming the endpoint and what was
ignored, before any API request; an honest store costs the check four requests and keeps
nothing of it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from exporter.config import RetryPolicy, Timeouts
from exporter.objectstore.client import PROBE_PREFIX, ConditionsIgnored, open_store
from exporter.objectstore.target import parse_target
from exporter.objectstore.verify import verify_store
from exporter.standin import StandinServer
from tests.helpers import ROOT, cli_env, pairs, write_sessions
from tests.s3fakes import ACCESS_KEY, SECRET_KEY, checking_proxy, store_env
from tests.s3helpers import keys, run_store, store_settings


def probe_requests(seen: list[dict[str, object]]) -> list[str]:
    """Method of each request the proxy saw for a probe object."""
    return [str(r["method"]) for r in seen if PROBE_PREFIX in str(r["path"])]


async def test_an_honest_store_passes_in_four_requests_and_keeps_nothing(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """A run on a store that honours conditions: the check is three PUTs and a DELETE, the
    probe is gone afterwards, and verify reports nothing untracked."""
    async with checking_proxy(moto_server) as proxy:
        settings = store_settings(
            server, proxy.url, bucket, write_sessions(tmp_path / "s", pairs(3))
        )
        result = await run_store(settings)
        assert result.fatal is None and result.stats.counts["exported"] == 3
        assert probe_requests(proxy.rules.seen) == ["PUT", "PUT", "PUT", "DELETE"]
        found = await verify_store(settings.store)
    assert found.ok and found.untracked == []
    assert [k for k in keys(moto_server, bucket) if PROBE_PREFIX in k] == []


async def test_concurrent_checks_on_one_prefix_do_not_disturb_each_other(
    moto_server: str, bucket: str
) -> None:
    """Eight checks at once on the same PREFIX all pass (each probes a key of its own) and
    leave no object behind."""
    target = parse_target(f"s3://{bucket}/same", moto_server, {"AWS_REGION": "us-east-1"})
    passed = 0
    async with open_store(target, RetryPolicy.immediate(), Timeouts(), 16) as store:

        async def check() -> None:
            nonlocal passed
            await store.check_conditions()
            passed += 1

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(check)
    assert passed == 8
    assert keys(moto_server, bucket, "same/") == []


@pytest.mark.parametrize(
    "stripped",
    [{"If-None-Match"}, {"If-Match"}, {"If-None-Match", "If-Match"}],
    ids=["if-none-match", "if-match", "both"],
)
async def test_a_store_ignoring_a_condition_stops_the_run_before_any_api_request(
    stripped: set[str], server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """The proxy drops the condition headers (moto then writes anyway): the run ends with
    ConditionsIgnored naming the endpoint and exactly the ignored conditions; the API is
    never asked, and neither the lock nor the probe is left in the bucket."""
    async with checking_proxy(moto_server) as proxy:
        proxy.rules.strip = frozenset(stripped)
        settings = store_settings(
            server, proxy.url, bucket, write_sessions(tmp_path / "s", pairs(2))
        )
        result = await run_store(settings)
    assert isinstance(result.fatal, ConditionsIgnored)
    message = result.fatal.message
    assert proxy.url in message and "\n" not in message
    for header in ("If-None-Match", "If-Match"):
        assert (f"ignores {header}" in message or f"and {header}" in message) == (
            header in stripped
        ), message
    assert server.state.records() == []
    assert keys(moto_server, bucket) == []


async def test_a_store_that_does_not_implement_conditions_is_named_too(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """A store answering 501 NotImplemented to If-None-Match: the same stop, saying so."""
    async with checking_proxy(moto_server) as proxy:
        proxy.rules.unimplemented = frozenset({"If-None-Match"})
        settings = store_settings(
            server, proxy.url, bucket, write_sessions(tmp_path / "s", pairs(1))
        )
        result = await run_store(settings)
    assert isinstance(result.fatal, ConditionsIgnored)
    assert proxy.url in result.fatal.message and "does not implement" in result.fatal.message
    assert server.state.records() == []
    assert keys(moto_server, bucket) == []


async def test_the_command_line_exits_2_with_one_line_and_no_secret(
    server: StandinServer, moto_server: str, bucket: str, tmp_path: Path
) -> None:
    """`rtk-export SESSIONS --out s3://...` against a store ignoring If-None-Match: exit 2,
    one stderr line naming the endpoint and the condition, no storage credential in it."""
    sessions = write_sessions(tmp_path / "s.txt", pairs(2))
    async with checking_proxy(moto_server) as proxy:
        proxy.rules.strip = frozenset({"If-None-Match"})
        env = cli_env(server.base_url, **store_env(proxy.url))
        got = await anyio.run_process(
            [sys.executable, "-m", "exporter", str(sessions), "--out", f"s3://{bucket}/c"],
            env=env,
            cwd=os.fspath(ROOT),
            check=False,
        )
    err = got.stderr.decode()
    assert got.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert proxy.url in lines[0] and "ignores If-None-Match on PUT" in lines[0]
    assert ACCESS_KEY not in err + got.stdout.decode() and SECRET_KEY not in err
    assert server.state.records() == []
