"""Helpers shared by the tests: settings that never wait, SESSIONS files, the manifest read
back, and the command line run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from exporter.config import Rate, RetryPolicy, Settings, Timeouts
from exporter.pipeline import export as pipeline_export
from exporter.standin import StandinConfig, StandinServer
from exporter.stats import RunResult

TOKEN = "test-token-5f0c2a9e7b1d4c3a8e6f"
ACCOUNT = "acct0123456789abcdef0123456789ab"
ROOT = Path(__file__).resolve().parent.parent


def standin_config(**kw: Any) -> StandinConfig:
    kw.setdefault("token", TOKEN)
    kw.setdefault("account_id", ACCOUNT)
    return StandinConfig(**kw)


def make_settings(
    server: StandinServer, out: Path, sessions: Path | None = None, **kw: Any
) -> Settings:
    kw.setdefault("retry", RetryPolicy.immediate())
    kw.setdefault("rate", Rate(1_000_000, 1.0))
    kw.setdefault("concurrency", 8)
    kw.setdefault("timeouts", Timeouts(connect=5, api=10, read=10))
    return Settings(
        token=TOKEN,
        account_id=ACCOUNT,
        out_dir=out,
        manifest_path=kw.pop("manifest_path", out / "manifest.jsonl"),
        sessions=str(sessions) if sessions else None,
        base_url=server.base_url,
        **kw,
    )


def write_sessions(path: Path, pairs: list[tuple[str, str]], header: bool = False) -> Path:
    lines = (["app_id,session_id"] if header else []) + [f"{a} {s}" for a, s in pairs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pairs(n: int, apps: int = 2) -> list[tuple[str, str]]:
    return [(f"app{i % apps}", f"sess-{i:05d}") for i in range(n)]


async def export(settings: Settings, **kw: Any) -> RunResult:
    """The run as the command line makes it (pipeline.export), without signal handlers."""
    return await pipeline_export(settings, handle_signals=False, **kw)


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def leftovers(out: Path) -> list[Path]:
    """Temporary files anywhere under DIR."""
    return [p for p in out.rglob("*") if p.name.endswith(".part")]


def cli_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env.update(
        CLOUDFLARE_API_TOKEN=TOKEN,
        CLOUDFLARE_ACCOUNT_ID=ACCOUNT,
        CLOUDFLARE_BASE_URL=base_url,
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
        **kw,
    )
