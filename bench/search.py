"""`rtk-export search` at scale: the index build (time, peak RSS), query latency p50/p95 warm,
the same queries with `rg -i` over the archive (the ratio, same invocation), and the update
after one session changed, as a fraction of the build.

    python -m bench.search                                  # 10,000 sessions x 200 messages
    python -m bench.search --sessions 20 --messages 10      # a smoke run

The archive is written directly in the export's format (chat CSVs, a transcript for every
tenth session in CSV, JSON, VTT or SRT, a manifest with their real SHA-256s). The build and the
update run as `python -m exporter search DIR QUERY` in a child, whose peak RSS is its
ru_maxrss (wait4). Query latency is measured in one child that opens the index once and runs
each query `--runs` times as the command does after start-up: the manifest check, then the
search.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import shutil
import statistics
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
# Words the queries look for, mixed into a generated vocabulary (Zipf-distributed, so that
# some words are in a tenth of all messages and most in a handful).
PLANTED = ["meeting", "résumé", "budget", "deadline", "quarterly", "Köln", "naïve", "Zürich"]
# (label, search query, options, rg pattern(s): each further pattern filters the lines
# the previous one found, as a user would pipe rg into rg for words in any order)
QUERIES: list[tuple[str, str, list[str], list[str]]] = [
    ("common word", "meeting", [], ["meeting"]),
    ("rare word", "zurich", [], ["zürich"]),
    ("accented, typed plain", "resume", [], ["résumé"]),
    ("two words", "budget deadline", [], ["budget", "deadline"]),
    ("phrase", '"quarterly budget"', [], ["quarterly budget"]),
    ("prefix", "quart*", [], [r"\bquart\w*"]),
    ("word + --app", "koln", ["--app", "app3"], ["köln"]),
    ("word + --from", "deadline", ["--from", "ana"], ["deadline"]),
    ("word + --since", "naive", ["--since", "2026-09-01"], ["naïve"]),
    ("no hit", "xylophone", [], ["xylophone"]),
]
_FORMATS = ("csv", "json", "vtt", "srt")


def _vocabulary(rng: random.Random, n: int = 20000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyzéüö"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(n)]
    for rank, w in zip((20, 100, 300, 600, 1000, 3000, 8000, 19000), PLANTED, strict=True):
        words.insert(rank, w)  # from a word in 5% of the messages to one in a few hundred
    return words


def _pool(rng: random.Random, words: list[str], size: int = 1 << 20) -> list[str]:
    weights = [1 / (rank + 1) for rank in range(len(words))]
    return rng.choices(words, weights=weights, k=size)


def _names(rng: random.Random) -> list[str]:
    first = ["Ana", "José", "Zoë", "Łukasz", "Mia", "Noah", "Aylin", "Chen", "Olu", "Søren"]
    last = ["Pérez", "Ångström", "Brown", "Kowalski", "Müller", "Okafor", "Öztürk", "Li"]
    return [f"{rng.choice(first)} {rng.choice(last)}" for _ in range(400)]


def chat(
    rng: random.Random, pool: list[str], names: list[str], sid: str, n: int, start: int
) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(HEADER)
    people = rng.sample(names, rng.randint(2, 8))
    for i in range(n):
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 9 * i))
        j = rng.randrange(len(pool) - 20)
        text = " ".join(pool[j : j + rng.randint(3, 20)])
        if i % 499 == 0:
            text += " the quarterly budget review"  # a phrase to find, in 0.2% of messages
        w.writerow(
            (f"{sid}-{i}", "p", sid, "m", rng.choice(people), "false", "false",
             "TEXT_MESSAGE", text, f"{when}.{i % 1000:03d}Z")
        )  # fmt: skip
    return out.getvalue().encode()


def transcript(rng: random.Random, pool: list[str], names: list[str], fmt: str) -> bytes:
    said = []
    for i in range(50):
        j = rng.randrange(len(pool) - 20)
        said.append((i * 6.0, rng.choice(names), " ".join(pool[j : j + rng.randint(5, 20)])))

    def clock(s: float, sep: str) -> str:
        return f"{int(s) // 3600:02d}:{int(s) // 60 % 60:02d}:{int(s) % 60:02d}{sep}000"

    if fmt == "json":
        return json.dumps(
            [{"start": t, "end": t + 5, "name": n, "text": x} for t, n, x in said]
        ).encode()
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(("startTime", "endTime", "displayName", "transcript"))
        w.writerows((t, t + 5, n, x) for t, n, x in said)
        return out.getvalue().encode()
    if fmt == "srt":
        return "".join(
            f"{i + 1}\n{clock(t, ',')} --> {clock(t + 5, ',')}\n{n}: {x}\n\n"
            for i, (t, n, x) in enumerate(said)
        ).encode()
    return ("WEBVTT\n\n" + "".join(
        f"{clock(t, '.')} --> {clock(t + 5, '.')}\n<v {n}>{x}\n\n" for t, n, x in said
    )).encode()  # fmt: skip


def manifest_line(app: str, sid: str, kind: str, rel: str, body: bytes) -> str:
    return json.dumps(
        {"app_id": app, "session_id": sid, "kind": kind, "status": "exported", "path": rel,
         "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "attempts": 1,
         "error": None, "finished_at": "2026-11-20T10:00:00Z", "run_id": "bench"}
    )  # fmt: skip


def build(out: Path, sessions: int, messages: int, seed: int = 7) -> int:
    """Write the archive; its size in bytes."""
    rng = random.Random(seed)
    pool, names = _pool(rng, _vocabulary(rng)), _names(rng)
    total = 0
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as manifest:
        for i in range(sessions):
            app, sid = f"app{i % 5}", f"sess-{i:07d}"
            (out / app).mkdir(exist_ok=True)
            start = 1_767_225_600 + rng.randrange(86_400 * 300)
            body = chat(rng, pool, names, sid, messages, start)
            (out / app / f"{sid}.csv").write_bytes(body)
            manifest.write(manifest_line(app, sid, "chat", f"{app}/{sid}.csv", body) + "\n")
            total += len(body)
            if i % 10 == 0:
                fmt = _FORMATS[(i // 10) % 4]
                rel = f"{app}/{sid}.transcript.{fmt}"
                body = transcript(rng, pool, names, fmt)
                (out / rel).write_bytes(body)
                manifest.write(manifest_line(app, sid, "transcript", rel, body) + "\n")
                total += len(body)
    return total


def change_one(out: Path, messages: int) -> None:
    """Session 0 gets a new export (another CSV, a new manifest line), as a later run would."""
    rng = random.Random(99)
    pool, names = _pool(rng, _vocabulary(rng, 300), 4096), _names(rng)
    body = chat(rng, pool, names, "sess-0000000", messages, 1_790_000_000)
    (out / "app0" / "sess-0000000.csv").write_bytes(body)
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as fh:
        fh.write(
            manifest_line("app0", "sess-0000000", "chat", "app0/sess-0000000.csv", body) + "\n"
        )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def child(args: list[str]) -> tuple[float, float, str, str]:
    """(seconds, peak RSS in MB, stdout, stderr) of one `python ARGS` child; its RSS is its
    own ru_maxrss, from wait4 (RUSAGE_CHILDREN would keep the largest child so far)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed ({code}): {stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout, stderr


def search_child(out: Path, query: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stderr) of `python -m exporter search DIR QUERY`."""
    seconds, rss, _, err = child(["-m", "exporter", "search", str(out), query, "--limit", "1"])
    return seconds, rss, err.strip()


def measure_queries(out: Path, runs: int) -> None:
    """In a child: each query `runs` times warm, as the command runs it; JSON on stdout."""
    from datetime import UTC, datetime

    from exporter.search.command import build_parser, request_from
    from exporter.search.index import SearchIndex
    from exporter.search.show import new_marks
    from exporter.search.update import update_folder

    index = SearchIndex(out / ".rtk-export-search.sqlite")
    result = {}
    for label, query, options, _ in QUERIES:
        args = build_parser().parse_args([str(out), query, *options])
        times, hits = [], 0
        for n in range(runs + 1):
            t0 = time.perf_counter()
            request = request_from(args, datetime.now(UTC))
            update_folder(index, out, out / "manifest.jsonl")
            hits = len(index.search(request.match, request.filters, new_marks()))
            if n:  # the first run warms the page cache
                times.append(time.perf_counter() - t0)
        result[label] = {"times": times, "hits": hits}
    index.close()
    print(json.dumps(result))


def rg_time(out: Path, patterns: list[str], runs: int) -> tuple[float, int]:
    """(median seconds, lines found) of `rg -i P1 DIR | rg -i P2 | ...`, piped process to
    process and counted here a chunk at a time (this process stays small: a child forked
    from a large parent starts with the parent's resident pages, which its peak would count)."""
    times, lines = [], 0
    for n in range(runs + 1):
        t0 = time.perf_counter()
        procs = [subprocess.Popen(["rg", "-i", "--no-heading", "-e", patterns[0], str(out)],
                                  stdout=subprocess.PIPE)]  # fmt: skip
        for pattern in patterns[1:]:
            prev = procs[-1].stdout
            procs.append(subprocess.Popen(["rg", "-i", "-e", pattern], stdin=prev,
                                          stdout=subprocess.PIPE))  # fmt: skip
            assert prev is not None
            prev.close()
        last = procs[-1].stdout
        assert last is not None
        lines = 0
        while chunk := last.read(1 << 20):
            lines += chunk.count(b"\n")
        last.close()
        for proc in procs:
            proc.wait()
        if n:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), lines


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=10000)
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--runs", type=int, default=20, help="runs of each query (default 20)")
    p.add_argument("--measure-queries", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_queries:
        measure_queries(Path(args.measure_queries), args.runs)
        return
    if shutil.which("rg") is None:
        raise SystemExit("bench.search needs ripgrep (rg): apt-get install ripgrep")
    with tempfile.TemporaryDirectory(prefix="rtk-search-bench-") as tmp:
        out = Path(tmp)
        t0 = time.monotonic()
        size = build(out, args.sessions, args.messages)
        print(f"{args.sessions} sessions x {args.messages} messages ({size / 1e6:.0f} MB) "
              f"written in {time.monotonic() - t0:.1f} s")  # fmt: skip
        build_s, build_rss, err = search_child(out, "meeting")
        index_mb = (out / ".rtk-export-search.sqlite").stat().st_size / 1e6
        print(f"index build: {build_s:.1f} s, peak RSS {build_rss:.0f} MB, "
              f"index {index_mb:.0f} MB ({size / 1e6 / build_s:.1f} MB of archive/s)")  # fmt: skip
        print(f"  {err.splitlines()[-1] if err else ''}")
        cli = [search_child(out, "meeting")[0] for _ in range(3)]
        print(f"whole command, nothing changed (start-up included): median "
              f"{statistics.median(cli) * 1e3:.0f} ms")  # fmt: skip
        change_one(out, args.messages)
        upd_s, upd_rss, err = search_child(out, "meeting")
        work = upd_s - statistics.median(cli)
        print(f"update after one session changed: {upd_s:.2f} s = {upd_s / build_s:.2%} of the "
              f"build (start-up included; {work:.2f} s = {work / build_s:.2%} without the "
              f"unchanged run's time), peak RSS {upd_rss:.0f} MB")  # fmt: skip
        print(f"  {err.splitlines()[-1] if err else ''}")
        _, _, stdout, _ = child(
            ["-m", "bench.search", "--measure-queries", str(out), "--runs", str(args.runs)]
        )
        ours = json.loads(stdout)
        all_times: list[float] = []
        ratios = []
        print(f"{'query':<24} {'hits':>5} {'p50 ms':>8} {'p95 ms':>8} {'rg -i ms':>9} "
              f"{'rg lines':>9} {'rg/ours':>8}")  # fmt: skip
        rg_runs = max(1, min(5, args.runs))
        for label, _, _, patterns in QUERIES:
            times = ours[label]["times"]
            all_times += times
            p50 = statistics.median(times)
            rg_s, rg_lines = rg_time(out, patterns, rg_runs)
            ratios.append(rg_s / p50)
            print(f"{label:<24} {ours[label]['hits']:>5} {p50 * 1e3:>8.2f} "
                  f"{_p95(times) * 1e3:>8.2f} {rg_s * 1e3:>9.0f} {rg_lines:>9} "
                  f"{rg_s / p50:>7.0f}x")  # fmt: skip
        print(f"all queries: p50 {statistics.median(all_times) * 1e3:.2f} ms, "
              f"p95 {_p95(all_times) * 1e3:.2f} ms; rg -i / search: median "
              f"{statistics.median(ratios):.0f}x, lowest {min(ratios):.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
