"""Shared pieces of the benchmarks: the stand-in process, measured child runs, tables."""

from __future__ import annotations

import compileall
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TOKEN = "bench-token"
ACCOUNT = "bench-account"


def env(base_url: str | None = None) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["CLOUDFLARE_API_TOKEN"] = TOKEN
    e["CLOUDFLARE_ACCOUNT_ID"] = ACCOUNT
    if base_url:
        e["CLOUDFLARE_BASE_URL"] = base_url
    return e


def compiled_tree(into: Path, rev: str | None = None) -> Path:
    """A copy of exporter/ (of git revision `rev`, else of the working tree) under `into`,
    compiled to bytecode: the form a user runs after `pip install`.

    These machines set PYTHONDONTWRITEBYTECODE=1, so a child run from the source tree
    compiles every module it imports, every run: start-up work an installed copy never does,
    and more of it for the tree with more code. Put `into` first on the child's PYTHONPATH.
    """
    into.mkdir(parents=True)
    if rev is None:
        shutil.copytree(
            ROOT / "exporter", into / "exporter", ignore=shutil.ignore_patterns("__pycache__")
        )
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "exporter"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    if not compileall.compile_dir(str(into / "exporter"), quiet=1):
        raise RuntimeError(f"exporter/ of {rev or 'the working tree'} does not compile")
    return into


def export_command(
    sessions: Path | str,
    out: Path | str,
    base_url: str,
    *extra: str,
    rate: str = "1000000/1s",
) -> list[str]:
    """The export every benchmark times: `python -m exporter SESSIONS --out OUT --base-url URL
    --rate RATE --progress never`, then `extra`."""
    return [
        PY,
        "-m",
        "exporter",
        str(sessions),
        "--out",
        str(out),
        "--base-url",
        base_url,
        "--rate",
        rate,
        "--progress",
        "never",
        *extra,
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StandinProcess(str):
    """The stand-in's base URL, its pid (to read its CPU time) and its process."""

    pid: int
    proc: subprocess.Popen[str]

    def counts(self) -> tuple[int, int]:
        """(API requests, download requests) the stand-in has answered so far (SIGUSR1)."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        if not ready:
            raise SystemExit("the stand-in did not answer SIGUSR1")
        api, downloads = self.proc.stdout.readline().split()
        return int(api), int(downloads)


@contextmanager
def standin_process(*args: str) -> Iterator[StandinProcess]:
    """`bench.standin_proc` in its own process; yields its base URL; SIGTERM at the end."""
    cmd = [PY, "-m", "bench.standin_proc", "--token", TOKEN, "--account-id", ACCOUNT, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("RTK_STANDIN_URL="):
            raise RuntimeError(f"stand-in did not start: {line!r}")
        url = StandinProcess(line.split("=", 1)[1])
        url.pid, url.proc = proc.pid, proc
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Measured:
    wall: float
    cpu: float  # user + system seconds of the child
    peak_rss_mb: float
    returncode: int
    stdout: str = ""
    stderr: str = ""
    user: float = 0.0  # the two parts of `cpu`: the child's own code, and the kernel's work
    sys: float = 0.0  # for it (file creation and fsync dominate here, and vary run to run)


def run_measured(
    cmd: Sequence[str],
    *,
    environ: dict[str, str] | None = None,
    timeout: float = 1800,
    cwd: Path = ROOT,
) -> Measured:
    """Run `cmd` as a child; its wall time, CPU seconds and peak RSS (ru_maxrss of wait4)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.time_ns()}"
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=environ or env(), cwd=cwd)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.01)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        so, se = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    for suffix in (".out", ".err"):
        os.unlink(f"{out_path}{suffix}")
    return Measured(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        proc.returncode,
        so,
        se,
        usage.ru_utime,
        usage.ru_stime,
    )


def write_sessions(path: Path, n: int, *, apps: int = 20, tag: str = "s") -> Path:
    """n distinct pairs over `apps` app ids."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(f"app{i % apps:04d} {tag}-{i:09d}\n")
    return path


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def machine() -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"{os.cpu_count()} cores (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {when}"
    )


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
