"""Attachments and recordings over loopback, each against curl on the same URLs.

    python -m bench.media attachments [--count 200] [--concurrency 16] [--runs 3]
    python -m bench.media recording [--bytes 2147483648] [--runs 1]

attachments: one session whose chat lists `--count` attachments; rtk-export (--include
attachments: the chat's API request and download, then every attachment under the address
rules, hashed, fsynced, renamed) against `curl --parallel --parallel-max N` fetching the same
links. recording: one recording of `--bytes`; rtk-export (--include recordings: three API
requests, download, SHA-256, fsync, rename) against `curl -o`, MB/s and peak RSS; then a run
killed (SIGKILL) once its partial file holds half, and the rerun: how many bytes it asks for.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import (
    ACCOUNT,
    TOKEN,
    Measured,
    env,
    export_command,
    load,
    machine,
    median,
    run_measured,
    standin_process,
    table,
)
from exporter.attachments import iter_attachments

CURL = shutil.which("curl") or "/usr/bin/curl"
RATE = "1000/1s"  # below any budget the stand-in enforces; these exports are few requests


def attachments(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-att-"))
    results: dict[str, list[Measured]] = {"curl --parallel": [], "rtk-export": []}
    conc = str(args.concurrency)
    try:
        with standin_process(
            "--attachments", str(args.count), "--chat-rows", "1", "--attachment-bytes", "65536"
        ) as base_url:
            for run in range(args.runs):
                sessions = work / "one.txt"
                sessions.write_text(f"attapp att-{run}\n")
                out = work / "out"
                m = run_measured(
                    export_command(
                        sessions,
                        out,
                        base_url,
                        "--include",
                        "attachments",
                        "--attachment-allow-host",
                        "127.0.0.1",
                        "--concurrency",
                        conc,
                        rate=RATE,
                    )
                )
                assert m.returncode == 0, m.stderr[-3000:]
                stored = list((out / "attapp" / f"att-{run}.attachments").iterdir())
                csv_bytes = (out / "attapp" / f"att-{run}.csv").read_bytes()
                links = [
                    a.payload.link
                    for a in iter_attachments("attapp", f"att-{run}", io.BytesIO(csv_bytes))
                    if a.payload.link
                ]
                results["rtk-export"].append(m)
                print(
                    f"run {run + 1} rtk-export: rc {m.returncode}, {len(stored)} files, "
                    f"{m.wall:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB; {load()}",
                    flush=True,
                )
                shutil.rmtree(out)
                target = work / "curl"
                target.mkdir()
                cmd = [CURL, "-sS", "--parallel", "--parallel-max", conc]
                for i, link in enumerate(links):
                    cmd += ["-o", str(target / f"{i}"), link]
                m = run_measured(cmd)
                results["curl --parallel"].append(m)
                print(
                    f"run {run + 1} curl: rc {m.returncode}, {len(list(target.iterdir()))} "
                    f"files, {m.wall:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB",
                    flush=True,
                )
                shutil.rmtree(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {
        k: (median([m.wall for m in v]), median([m.peak_rss_mb for m in v]))
        for k, v in results.items()
    }
    print(f"\n{args.count} attachment rows (64 KiB each), concurrency {conc}; {machine()}")
    print(
        table(
            ["contender", "wall s", "peak RSS MB"],
            [[k, f"{v[0]:.2f}", f"{v[1]:.1f}"] for k, v in med.items()],
        )
    )
    print(f"\nrtk-export / curl wall time: {med['rtk-export'][0] / med['curl --parallel'][0]:.2f}x")


def fresh_recording_url(base_url: str, app: str, sid: str) -> tuple[str, int]:
    def get(url: str) -> dict[str, object]:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req) as resp:
            doc: dict[str, object] = json.load(resp)
        return doc

    kit = f"{base_url}/accounts/{ACCOUNT}/realtime/kit/{app}"
    get(f"{kit}/sessions/{sid}")  # the stand-in makes a session's recordings on first sight
    listed = get(f"{kit}/recordings?per_page=100")["data"]
    assert isinstance(listed, list)
    rec = next(r for r in listed if r["session_id"] == sid)
    return str(rec["download_url"]), int(rec["file_size"])


def recording(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-rec-"))
    results: dict[str, list[Measured]] = {"curl -o": [], "rtk-export": []}
    size = args.bytes
    try:
        with standin_process(
            "--recordings", "UPLOADED", "--recording-bytes", str(size)
        ) as base_url:
            for run in range(args.runs):
                url, _ = fresh_recording_url(base_url, "recapp", f"curl-{run}")
                target = work / "curl.mp4"
                m = run_measured([CURL, "-sS", "-o", str(target), url])
                ok = target.stat().st_size == size
                target.unlink()
                results["curl -o"].append(m)
                print(
                    f"run {run + 1} curl -o: rc {m.returncode} {'ok' if ok else 'WRONG'}, "
                    f"{m.wall:.2f} s, {size / m.wall / 1e6:.0f} MB/s, peak RSS "
                    f"{m.peak_rss_mb:.0f} MB; {load()}",
                    flush=True,
                )
                sessions = work / "one.txt"
                sessions.write_text(f"recapp rtk-{run}\n")
                out = work / "out"
                m = run_measured(
                    export_command(sessions, out, base_url, "--include", "recordings", rate=RATE)
                )
                got = sum(p.stat().st_size for p in out.rglob("*.mp4"))
                results["rtk-export"].append(m)
                print(
                    f"run {run + 1} rtk-export: rc {m.returncode} "
                    f"{'ok' if got == size else 'WRONG'}, {m.wall:.2f} s, "
                    f"{size / m.wall / 1e6:.0f} MB/s, peak RSS {m.peak_rss_mb:.0f} MB; {load()}",
                    flush=True,
                )
                shutil.rmtree(out)
            rerun_share = killed_at_half(work, base_url, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {
        k: (median([size / m.wall / 1e6 for m in v]), median([m.peak_rss_mb for m in v]))
        for k, v in results.items()
    }
    print(f"\none recording of {size} bytes over loopback, medians of {args.runs}; {machine()}")
    print(
        table(
            ["contender", "MB/s", "peak RSS MB"],
            [[k, f"{v[0]:.0f}", f"{v[1]:.1f}"] for k, v in med.items()],
        )
    )
    print(f"\nrtk-export / curl: {med['rtk-export'][0] / med['curl -o'][0]:.2f}x throughput")
    print(f"kill -9 at 50%, then a rerun: the rerun downloaded {rerun_share:.1%} of the file")


def killed_at_half(work: Path, base_url: str, size: int) -> float:
    """Share of the file the rerun asks for after a SIGKILL once the partial holds half."""
    sessions = work / "kill.txt"
    sessions.write_text("recapp killed\n")
    out = work / "out"
    e = env(base_url)
    proc = subprocess.Popen(
        export_command(sessions, out, base_url, "--include", "recordings", rate=RATE),
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(out.rglob("*.partial"))
        if partial and partial[0].stat().st_size >= size // 2:
            break
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    if proc.wait() != -signal.SIGKILL:
        print("the export finished before it could be killed at 50%: file too small")
        shutil.rmtree(out)
        return 0.0
    (record,) = out.rglob("*.resume.json")
    held = int(json.loads(record.read_text())["held"])
    rerun = run_measured(
        export_command(sessions, out, base_url, "--include", "recordings", rate=RATE)
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    asked = size - held  # the rerun's Range starts at the bytes the record vouches for
    print(f"killed with {held} bytes vouched for; rerun {rerun.wall:.2f} s, asked {asked} bytes")
    shutil.rmtree(out)
    return asked / size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("attachments")
    a.add_argument("--count", type=int, default=200)
    a.add_argument("--concurrency", type=int, default=16)
    a.add_argument("--runs", type=int, default=3)
    r = sub.add_parser("recording")
    r.add_argument("--bytes", type=int, default=2 << 30)
    r.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    attachments(args) if args.what == "attachments" else recording(args)


if __name__ == "__main__":
    main()
