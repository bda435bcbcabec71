"""serve's figures: deliveries acknowledged durably per second and the ack latency (p50/p99)
at fixed offered rates, for a folder and a bucket, each beside the ceiling of its own storage
step measured here; units exported per second from webhooks against an unpaced SESSIONS export
of the same units, in the same invocation, with the API requests the stand-in counted; serve's
RSS at checkpoints over many deliveries.

    python -m bench.serve [--units 2000] [--ack-deliveries 3000] [--rss-deliveries 100000]
                          [--ceiling 2000] [--no-bucket]

The stand-in runs in its own process (counting requests, answering SIGUSR1 with its counts),
moto (for the bucket) in another, serve as a child; the load comes from this process (aiohttp,
loopback only), signed with a key made here, with URLs the stand-in minted. Every phase is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.common import (
    ACCOUNT,
    PY,
    ROOT,
    TOKEN,
    StandinProcess,
    cpu_seconds,
    env,
    export_command,
    load,
    machine,
    run_measured,
    standin_process,
    table,
)
from bench.s3 import _MOTO, BUCKET, storage_env

PHASE_LIMIT = 120.0  # seconds: no load loop sends for longer, whatever the machine does
ANSWER_LIMIT = 30.0  # seconds: the longest a delivery's answer is awaited
RSS_LIMIT = 900.0  # seconds: the RSS phase as a whole
INBOX = ".rtk-export-inbox"


class Key:
    def __init__(self, folder: Path) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = folder / "key.pem"
        self.pem.write_bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, raw: bytes) -> str:
        return base64.b64encode(
            self.private.sign(raw, padding.PKCS1v15(), hashes.SHA256())
        ).decode()


def chat_synced(app: str, sid: str, url: str, expiry: str) -> bytes:
    doc = {
        "event": "meeting.chatSynced",
        "meetingId": f"m-{sid}",
        "sessionId": sid,
        "chatDownloadUrl": url,
        "chatDownloadUrlExpiry": expiry,
        "organizedBy": {"id": app, "name": "bench"},
    }
    return json.dumps(doc).encode()


async def mint(base_url: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The chat URLs of `pairs`, as the stand-in's API mints them (the harness asks, not serve)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one(app: str, sid: str) -> tuple[str, str]:
            async with sem:
                url = f"{base_url}/accounts/{ACCOUNT}/realtime/kit/{app}/sessions/{sid}/chat"
                async with http.get(url) as resp:
                    data = (await resp.json())["data"]
            return data["chat_download_url"], data["chat_download_url_expiry"]

        return await asyncio.gather(*(one(a, s) for a, s in pairs))


class Serve:
    def __init__(self, out: str, key: Key, e: dict[str, str], *extra: str) -> None:
        cmd = [PY, "-m", "exporter", "serve", "--out", out, "--listen", "127.0.0.1:0"]
        cmd += ["--webhook-public-key", str(key.pem), "--rate", "1000000/1s", *extra]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=e, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.port = 0
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                if len(self.lines) < 1000:  # bounded: a failing serve may log every delivery
                    self.lines.append(line)
                if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                    self.port = int(m.group(1))
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30):
            self.proc.kill()
            raise SystemExit("serve did not start:\n" + "".join(self.lines[-20:]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM): resident now, and the peak so far, in MB."""
        found = {}
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) / 1024
        return found["VmRSS"], found["VmHWM"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with suppress(aiohttp.ClientError):
            async with http.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.02)
    raise SystemExit("serve never became ready")


def quantiles_ms(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        return (latencies[0] * 1000,) * 2 if latencies else (0.0, 0.0)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000


async def deliver(
    url: str,
    bodies: list[tuple[bytes, str]],
    count: int,
    rate: float | None,
    inflight: int = 64,
) -> dict[str, Any]:
    """Post `count` deliveries (the signed bodies in turn, each with a fresh rtk-uuid).

    With `rate`, open loop: delivery i is due at start + i/rate, and its latency runs from
    then (a late client or a full connection pool counts against serve, as a sender's clock
    would see it). Without, as fast as `inflight` connections allow, latency from the send."""
    latencies: list[float] = []
    status: dict[int, int] = {}
    errors = 0
    sem = asyncio.Semaphore(inflight)
    conn = aiohttp.TCPConnector(limit=inflight)
    timeout = aiohttp.ClientTimeout(total=ANSWER_LIMIT)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as http:
        await wait_ready(http, url)

        async def post(raw: bytes, sig: str, due: float | None) -> None:
            nonlocal errors
            headers = {
                "rtk-signature": sig,
                "rtk-uuid": str(uuid.uuid4()),
                "content-type": "application/json",
            }
            async with sem:
                t = time.perf_counter() if due is None else due
                try:
                    async with http.post(
                        url + "/webhooks/realtimekit", data=raw, headers=headers
                    ) as r:
                        await r.read()
                        status[r.status] = status.get(r.status, 0) + 1
                        if r.status == 200:
                            latencies.append(time.perf_counter() - t)
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1

        start = time.perf_counter()
        tasks = []
        for i in range(count):
            now = time.perf_counter()
            if now - start > PHASE_LIMIT:
                break
            due = None
            if rate is not None:
                due = start + i / rate
                if due > now:
                    await asyncio.sleep(due - now)
            raw, sig = bodies[i % len(bodies)]
            tasks.append(asyncio.create_task(post(raw, sig, due)))
            if i % 64 == 63:
                await asyncio.sleep(0)  # let answers in while sending
        sent_wall = time.perf_counter() - start
        await asyncio.wait(tasks, timeout=ANSWER_LIMIT + 5)
        wall = time.perf_counter() - start
    p50, p99 = quantiles_ms(latencies)
    ok = status.get(200, 0)
    return {
        "sent": len(tasks),
        "offered_per_s": len(tasks) / sent_wall if sent_wall else 0.0,
        "ok": ok,
        "other": {k: v for k, v in status.items() if k != 200},
        "errors": errors,
        "acks_per_s": ok / wall if wall else 0.0,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max(latencies, default=0.0) * 1000,
    }


def manifest_count(out: Path) -> int:
    path = out / "manifest.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def folder_kept(out: Path) -> int:
    """Deliveries kept in a folder's inbox: waiting or done."""
    root = out / INBOX
    n = 0
    for where in (root, root / "done"):
        with suppress(FileNotFoundError):
            n += sum(1 for e in os.scandir(where) if e.name.endswith(".json") and e.is_file())
    return n


def bucket_kept(endpoint: str, prefix: str) -> int:
    """Deliveries kept in a bucket's inbox: waiting or done (claims and aside not counted)."""
    import boto3

    from bench.s3 import KEY, SECRET

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    n = 0
    root = f"{prefix}/{INBOX}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=root):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(root) :]
            if rel.endswith(".json") and (rel.count("/") == 0 or rel.startswith("done/")):
                n += 1
    return n


async def metrics_value(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


# -- the ceilings: the storage step alone, no HTTP, no serve ---------------------------------


def fsync_ceiling(folder: Path, n: int, threads: int) -> float:
    """Deliveries/s of the folder inbox's own durable write (exporter.webhooks.inbox's, the
    very function: temporary file, fsync, link, folder fsync) from `threads` threads."""
    from exporter.webhooks.inbox import _write_new

    folder.mkdir(parents=True)
    data = b"x" * 600  # about a chatSynced item's size
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: _write_new(folder, f"{i}.json", data), range(n)))
    wall = time.perf_counter() - start
    shutil.rmtree(folder)
    return n / wall


def bucket_ceiling(endpoint: str, prefix: str, n: int, inflight: int) -> float:
    """Deliveries/s of the bucket inbox's own requests (HEAD of done/, conditional PUT), from
    exporter's store client, `inflight` at a time: moto's and the client's ceiling."""
    from exporter.config import RetryPolicy, Timeouts
    from exporter.objectstore.client import open_store
    from exporter.objectstore.target import parse_target

    storage = storage_env("", endpoint)
    # botocore's chain reads this process's environment: moto's made-up keys, as serve gets.
    os.environ.update({k: v for k, v in storage.items() if k.startswith("AWS_")})
    target = parse_target(f"s3://{BUCKET}/{prefix}", endpoint, storage)

    async def run() -> float:
        async with open_store(target, RetryPolicy(), Timeouts(), inflight) as store:
            sem = asyncio.Semaphore(inflight)
            body = b"x" * 600

            async def one(i: int) -> None:
                async with sem:
                    with suppress(Exception):
                        await store.client.head_object(Bucket=BUCKET, Key=target.key(f"done/{i}"))
                    await store.put(target.key(f"{i}.json"), body, IfNoneMatch="*")

            start = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), PHASE_LIMIT)
            return n / (time.perf_counter() - start)

    return asyncio.run(run())


# -- the phases ------------------------------------------------------------------------------


def acks(
    args: argparse.Namespace,
    work: Path,
    key: Key,
    signed: list[tuple[bytes, str]],
    e: dict[str, str],
    endpoint: str | None,
) -> None:
    print("\n1. deliveries acknowledged durably (serve exports them meanwhile, as it would)")
    n_fsync = args.ceiling
    ceilings = [
        ["folder", "write+fsync+link+dir fsync, 1 thread", fsync_ceiling(work / "c1", n_fsync, 1)],
        ["folder", "the same, 40 threads", fsync_ceiling(work / "c40", n_fsync, 40)],
    ]
    targets: list[tuple[str, str, dict[str, str]]] = [("folder", str(work / "ack"), e)]
    if endpoint is not None:
        ceilings.append(
            [
                "bucket",
                "HEAD + conditional PUT, 24 in flight",
                bucket_ceiling(endpoint, "ceil", n_fsync, 24),
            ]
        )
        targets.append(
            ("bucket", f"s3://{BUCKET}/ack", storage_env(e["CLOUDFLARE_BASE_URL"], endpoint))
        )
    print(table(["archive", "the storage step alone", "per second"], ceilings), flush=True)
    n = args.ack_deliveries
    rows = []
    for name, out, te in targets:
        for label, rate, count in (
            ("max", None, n),
            ("200/s", 200.0, max(2, n * 2 // 3)),
            ("1000/s", 1000.0, n),
        ):
            dest = f"{out}-{label.replace('/', '')}"
            srv = Serve(dest, key, te)
            try:
                cpu0 = cpu_seconds(srv.proc.pid)
                got = asyncio.run(deliver(srv.url, signed, count, rate))
                cpu = cpu_seconds(srv.proc.pid) - cpu0  # receiving, and exporting meanwhile
            finally:
                srv.stop()
            if name == "folder":
                kept = folder_kept(Path(dest))
            else:
                assert endpoint is not None
                kept = bucket_kept(endpoint, dest.split("/", 3)[3])
            rows.append(
                [
                    name,
                    label,
                    got["sent"],
                    got["offered_per_s"],
                    got["ok"],
                    kept,
                    got["acks_per_s"],
                    got["p50_ms"],
                    got["p99_ms"],
                    got["max_ms"],
                    cpu * 1000 / max(got["ok"], 1),
                ]
            )
            print(f"  {name} {label}: {got}; kept {kept}; {load()}", flush=True)
            if got["ok"] < got["sent"]:
                print(f"  !! {got['sent'] - got['ok']} deliveries were not acknowledged")
            if kept < got["ok"]:
                print(f"  !! {got['ok'] - kept} acknowledged deliveries are not in the inbox")
    print(
        table(
            [
                "archive",
                "rate",
                "sent",
                "offered/s",
                "200",
                "kept",
                "acks/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "serve CPU ms/ack",
            ],
            rows,
        )
    )


def units(
    work: Path,
    key: Key,
    signed: list[tuple[bytes, str]],
    pairs: list[tuple[str, str]],
    e: dict[str, str],
    si: StandinProcess,
) -> None:
    print("\n2. units exported per second: webhooks against an unpaced SESSIONS export", flush=True)
    n = len(signed)
    rows = []
    # a) deliveries sent as fast as 64 connections go, serve exporting them as they come.
    out = work / "units"
    api0, dl0 = si.counts()
    srv = Serve(str(out), key, e, "--concurrency", "16")
    try:
        listening = time.perf_counter()
        got = asyncio.run(deliver(srv.url, signed, n, None))
        end = wait_lines(out, n)
        cpu = cpu_seconds(srv.proc.pid)
        served_api = asyncio.run(metrics_value(srv.url, "rtk_export_api_requests"))
    finally:
        srv.stop()
    api1, dl1 = si.counts()
    done = manifest_count(out)
    print(f"  deliveries: {got}")
    # Process start to the last manifest line, like the export's wall time; and from the
    # "listening" line (then /readyz, the deliveries).
    rows.append(["webhooks, from serve's start", done, end - srv.started, cpu, api1 - api0])
    rows.append(["webhooks, from serve listening", done, end - listening, "", ""])
    hook_rate = done / (end - srv.started)
    # b) the same units already in the inbox (as serve keeps them) when serve starts: the
    # drain alone, without receiving.
    out = work / "drain"
    prefill(out, signed, pairs)
    srv = Serve(str(out), key, e, "--concurrency", "16")
    try:
        listening = time.perf_counter()
        end = wait_lines(out, n)
        cpu = cpu_seconds(srv.proc.pid)
    finally:
        srv.stop()
    api2, dl2 = si.counts()
    drained = manifest_count(out)
    rows.append(
        ["inbox drain alone, from serve's start", drained, end - srv.started, cpu, api2 - api1]
    )
    rows.append(["inbox drain alone, from serve listening", drained, end - listening, "", ""])
    # c) the export of the same units, as a SESSIONS file.
    sessions = work / "s.txt"
    sessions.write_text("".join(f"{a} {s}\n" for a, s in pairs))
    m = run_measured(
        export_command(sessions, work / "export", si, "--concurrency", "16"), environ=e
    )
    api3, dl3 = si.counts()
    if m.returncode != 0:
        print(f"  !! the export exited {m.returncode}: {m.stderr[-1000:]}")
    exp_done = manifest_count(work / "export")
    exp_rate = exp_done / m.wall
    rows.append(["SESSIONS export (process)", exp_done, m.wall, m.cpu, api3 - api2])
    print(
        table(
            ["source", "units", "seconds", "units/s", "CPU s", "API requests (stand-in)"],
            [[r[0], r[1], r[2], r[1] / r[2], r[3], r[4]] for r in rows],
        )
    )
    print(
        f"downloads (stand-in): webhooks {dl1 - dl0}, drain {dl2 - dl1}, export {dl3 - dl2}; "
        f"serve's own metric of its API requests: {served_api:.0f}"
    )
    print(
        f"ratio webhooks / export: {hook_rate / exp_rate:.3f}x (both from process start); "
        f"API requests serve made: {api1 - api0}; {load()}"
    )


def wait_lines(out: Path, n: int) -> float:
    """When `n` manifest lines are in `out` (or PHASE_LIMIT has passed)."""
    deadline = time.monotonic() + PHASE_LIMIT
    while manifest_count(out) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return time.perf_counter()


def prefill(out: Path, signed: list[tuple[bytes, str]], pairs: list[tuple[str, str]]) -> None:
    """The deliveries in a folder's inbox as serve keeps them (exporter.webhooks.inbox)."""
    from exporter.webhooks.inbox import Item

    root = out / INBOX
    root.mkdir(parents=True)
    for (raw, _), (app, _) in zip(signed, pairs, strict=True):
        item = Item(str(uuid.uuid4()), time.time(), None, raw, app, "meeting.chatSynced")
        (root / f"{item.delivery_id}.json").write_bytes(item.encode())


def rss(
    args: argparse.Namespace,
    work: Path,
    key: Key,
    signed: list[tuple[bytes, str]],
    e: dict[str, str],
) -> None:
    total = args.rss_deliveries
    print(f"\n3. serve's memory over {total} deliveries (a folder)", flush=True)
    srv = Serve(str(work / "rss"), key, e)
    samples = []
    try:
        samples.append([0, *srv.memory_mb(), "", ""])
        step = max(1, total // 10)
        start = time.monotonic()
        sent = 0
        while sent < total and time.monotonic() - start < RSS_LIMIT:
            got = asyncio.run(deliver(srv.url, signed, min(step, total - sent), None))
            sent += got["sent"]
            samples.append([sent, *srv.memory_mb(), got["acks_per_s"], got["ok"]])
            print(f"  {samples[-1]}; {load()}", flush=True)
        # The export behind the intake: how far it got (skipped lines count: the same units
        # arrive again and again under new delivery ids).
        lines = manifest_count(work / "rss")
    finally:
        srv.stop()
    print(table(["deliveries", "VmRSS MB", "VmHWM (peak) MB", "acks/s", "200s"], samples))
    print(f"manifest lines written meanwhile: {lines}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=2000, help="distinct chat units (sessions)")
    p.add_argument("--ack-deliveries", type=int, default=3000, help="per ack run (200/s: 2/3)")
    p.add_argument("--rss-deliveries", type=int, default=100_000)
    p.add_argument("--ceiling", type=int, default=2000, help="writes per storage ceiling run")
    p.add_argument("--no-bucket", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-serve-"))
    key = Key(work)
    moto = None
    endpoint = None
    try:
        with standin_process("--url-lifetime", "7200") as si:  # URLs outlive every phase
            e = env(si)
            pairs = [(f"app{i % 20}", f"s-{i:06d}") for i in range(args.units)]
            links = asyncio.run(mint(si, pairs))
            bodies = [chat_synced(a, s, u, x) for (a, s), (u, x) in zip(pairs, links, strict=True)]
            # The signature covers the body alone: each is signed once, here, not in the loops.
            signed = [(raw, key.sign(raw)) for raw in bodies]
            print(f"{machine()}; {load()}", flush=True)
            if not args.no_bucket:
                moto = subprocess.Popen(
                    [PY, "-c", _MOTO], stdout=subprocess.PIPE, text=True, env=env()
                )
                assert moto.stdout is not None
                endpoint = moto.stdout.readline().strip()
            acks(args, work, key, signed, e, endpoint)
            units(work, key, signed, pairs, e, si)
            if args.rss_deliveries:
                rss(args, work, key, signed, e)
    finally:
        if moto is not None:
            moto.kill()
            moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
