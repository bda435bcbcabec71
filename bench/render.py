"""`rtk-export render` at scale: full render time, pages per second and peak RSS, then a rerun
after one session changed (and one after nothing changed), as ratios of the full render.

    python -m bench.render --sessions 10000 --messages 200
    python -m bench.render --sessions 1000,10000 --messages 200     # memory against size

Archives are generated locally (chat CSVs and a manifest with their real SHA-256s) under a
temporary folder; each render runs as `python -m exporter render DIR` in a subprocess whose
peak RSS is read with wait4().
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "id", "participantId", "sessionId", "meetingId", "displayName",
    "pinned", "isEdited", "payloadType", "payload", "createdAt",
)  # fmt: skip


def _vocabulary(rng: random.Random, n: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(n)]


def chat(rng: random.Random, words: list[str], sid: str, messages: int, start: int) -> bytes:
    people = [f"Person {rng.randrange(500)}" for _ in range(rng.randint(2, 8))]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(HEADER)
    for i in range(messages):
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 9 * i))
        text = " ".join(rng.choices(words, k=rng.randint(3, 20)))
        if i % 17 == 0:
            text += '\nsecond line, "quoted"'
        w.writerow(
            (f"{sid}-{i}", "p", sid, "m", rng.choice(people), str(i % 50 == 0).lower(),
             "false", "TEXT_MESSAGE", text, f"{when}.000Z")
        )  # fmt: skip
    return out.getvalue().encode()


def manifest_line(app: str, sid: str, body: bytes) -> str:
    return json.dumps(
        {
            "app_id": app,
            "session_id": sid,
            "kind": "chat",
            "status": "exported",
            "path": f"{app}/{sid}.csv",
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "attempts": 1,
            "error": None,
            "finished_at": "2026-11-20T10:00:00Z",
            "run_id": "bench",
        }
    )


def build(out: Path, sessions: int, messages: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    words = _vocabulary(rng)
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as manifest:
        for i in range(sessions):
            app = f"app{i % 5}"
            sid = f"sess-{i:07d}"
            body = chat(rng, words, sid, messages, 1_767_225_600 + rng.randrange(86_400 * 300))
            (out / app).mkdir(exist_ok=True)
            (out / app / f"{sid}.csv").write_bytes(body)
            manifest.write(manifest_line(app, sid, body) + "\n")


def change_one(out: Path, messages: int) -> None:
    """Session 0 gets a new export (another CSV, a new manifest line), as a later run would."""
    rng = random.Random(99)
    body = chat(rng, _vocabulary(rng, 300), "sess-0000000", messages, 1_790_000_000)
    (out / "app0" / "sess-0000000.csv").write_bytes(body)
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as fh:
        fh.write(manifest_line("app0", "sess-0000000", body) + "\n")


def render(out: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, the summary line) of one `rtk-export render DIR`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "render", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"render failed: {err}")
    return seconds, usage.ru_maxrss / 1024, err.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", default="10000", help="comma-separated sizes (default 10000)")
    p.add_argument("--messages", type=int, default=200)
    args = p.parse_args()
    for n in (int(x) for x in args.sessions.split(",")):
        with tempfile.TemporaryDirectory(prefix="rtk-render-bench-") as tmp:
            out = Path(tmp)
            t0 = time.monotonic()
            build(out, n, args.messages)
            print(f"{n} sessions x {args.messages} messages built in {time.monotonic() - t0:.1f} s")
            full, rss, line = render(out)
            pages = n + -(-n // 1000)
            print(f"  full render: {full:.1f} s, {pages / full:.0f} pages/s, peak RSS {rss:.1f} MB")
            print(f"    {line}")
            same, rss2, line = render(out)
            print(f"  rerun, nothing changed: {same:.2f} s = {same / full:.2%} of the full render,"
                  f" peak RSS {rss2:.1f} MB")  # fmt: skip
            print(f"    {line}")
            change_one(out, args.messages)
            one, rss3, line = render(out)
            print(f"  rerun, one session changed: {one:.2f} s = {one / full:.2%} of the full"
                  f" render, peak RSS {rss3:.1f} MB")  # fmt: skip
            print(f"    {line}")


if __name__ == "__main__":
    main()
