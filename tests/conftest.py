"""Shared fixtures: the package's own stand-in over real HTTP, and settings that never wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Rate, RetryPolicy, Settings, Timeouts
from exporter.pipeline import Run, RunResult
from exporter.standin import StandinConfig, StandinServer, run_standin

TOKEN = "test-token-5f0c2a9e7b1d4c3a8e6f"
ACCOUNT = "acct0123456789abcdef0123456789ab"
ROOT = Path(__file__).resolve().parent.parent


def standin_config(**kw: Any) -> StandinConfig:
    kw.setdefault("token", TOKEN)
    kw.setdefault("account_id", ACCOUNT)
    return StandinConfig(**kw)


@pytest.fixture
def standin() -> Callable[..., AbstractAsyncContextManager[StandinServer]]:
    """`async with standin(**config) as server:` starts the stand-in on 127.0.0.1:0."""
    return lambda **kw: run_standin(standin_config(**kw))


@pytest.fixture
async def server() -> AsyncIterator[StandinServer]:
    async with run_standin(standin_config()) as srv:
        yield srv


def make_settings(server: StandinServer, out: Path, sessions: Path | None = None,
                  **kw: Any) -> Settings:
    kw.setdefault("retry", RetryPolicy.immediate())
    kw.setdefault("rate", Rate(1_000_000, 1.0))
    kw.setdefault("concurrency", 8)
    kw.setdefault("timeouts", Timeouts(connect=5, api=10, read=10))
    return Settings(token=TOKEN, account_id=ACCOUNT, out_dir=out,
                    manifest_path=kw.pop("manifest_path", out / "manifest.jsonl"),
                    sessions=str(sessions) if sessions else None, base_url=server.base_url,
                    **kw)


def write_sessions(path: Path, pairs: list[tuple[str, str]], header: bool = False) -> Path:
    lines = (["app_id,session_id"] if header else []) + [f"{a} {s}" for a, s in pairs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pairs(n: int, apps: int = 2) -> list[tuple[str, str]]:
    return [(f"app{i % apps}", f"sess-{i:05d}") for i in range(n)]


async def export(settings: Settings, **kw: Any) -> RunResult:
    return await Run(settings, handle_signals=False, **kw).run()


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def leftovers(out: Path) -> list[Path]:
    """Temporary files anywhere under DIR."""
    return [p for p in out.rglob("*") if p.name.endswith(".part")]


def cli_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env.update(CLOUDFLARE_API_TOKEN=TOKEN, CLOUDFLARE_ACCOUNT_ID=ACCOUNT,
               CLOUDFLARE_BASE_URL=base_url, PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False, **kw)
