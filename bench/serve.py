"""serve's figures: deliveries acknowledged durably per second and the ack latency (p50/p99)
at fixed rates, for a folder and a bucket; units exported per second from webhooks against an
unpaced SESSIONS export of the same units, in the same invocation; serve's RSS over many
deliveries.

    python -m bench.serve [--units 2000] [--rss-deliveries 100000] [--no-bucket]

The stand-in runs in its own process, moto (for the bucket) in another, serve as a child;
the load comes from this process (aiohttp, loopback only), signed with a key made here, with
URLs the stand-in minted. Every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.common import (
    PY,
    TOKEN,
    env,
    export_command,
    load,
    machine,
    run_measured,
    standin_process,
    table,
)
from bench.s3 import _MOTO, BUCKET, storage_env

PHASE_LIMIT = 120.0  # seconds: no phase runs longer, whatever the machine does


class Key:
    def __init__(self, folder: Path) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = folder / "key.pem"
        self.pem.write_bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def headers(self, raw: bytes) -> dict[str, str]:
        sig = self.private.sign(raw, padding.PKCS1v15(), hashes.SHA256())
        return {
            "rtk-signature": base64.b64encode(sig).decode(),
            "rtk-uuid": str(uuid.uuid4()),
            "content-type": "application/json",
        }


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
                url = f"{base_url}/accounts/bench-account/realtime/kit/{app}/sessions/{sid}/chat"
                async with http.get(url) as resp:
                    data = (await resp.json())["data"]
            return data["chat_download_url"], data["chat_download_url_expiry"]

        return await asyncio.gather(*(one(a, s) for a, s in pairs))


class Serve:
    def __init__(self, out: str, key: Key, e: dict[str, str], *extra: str) -> None:
        cmd = [PY, "-m", "exporter", "serve", "--out", out, "--listen", "127.0.0.1:0"]
        cmd += ["--webhook-public-key", str(key.pem), "--rate", "1000000/1s", *extra]
        self.proc = subprocess.Popen(cmd, env=e, stderr=subprocess.PIPE, text=True)
        self.port = 0
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
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

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        return kb / 1024

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
        try:
            async with http.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit("serve never became ready")


async def deliver(
    url: str, bodies: list[bytes], key: Key, rate: float | None, inflight: int = 64
) -> dict[str, Any]:
    """Post every body, at `rate` a second (open loop) or as fast as `inflight` connections
    allow; latencies of the answers, and how many were 200."""
    signed = [(raw, key.headers(raw)) for raw in bodies]  # signing is not serve's cost
    latencies: list[float] = []
    ok = 0
    sem = asyncio.Semaphore(inflight)
    conn = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=conn) as http:
        await wait_ready(http, url)

        async def post(raw: bytes, headers: dict[str, str]) -> None:
            nonlocal ok
            async with sem:
                t = time.perf_counter()
                async with http.post(url + "/webhooks/realtimekit", data=raw, headers=headers) as r:
                    await r.read()
                    latencies.append(time.perf_counter() - t)
                    ok += r.status == 200

        start = time.perf_counter()
        tasks = []
        for i, (raw, headers) in enumerate(signed):
            if time.perf_counter() - start > PHASE_LIMIT:
                break
            if rate is not None:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(raw, headers)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "sent": len(tasks),
        "ok": ok,
        "per_second": ok / wall if wall else 0.0,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


def manifest_count(out: Path) -> int:
    path = out / "manifest.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def metrics_value(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=2000)
    p.add_argument("--rss-deliveries", type=int, default=100_000)
    p.add_argument("--no-bucket", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-serve-"))
    key = Key(work)
    moto = None
    try:
        with standin_process() as base_url:
            e = env(base_url)
            pairs = [(f"app{i % 20}", f"s-{i:06d}") for i in range(args.units)]
            links = asyncio.run(mint(base_url, pairs))
            minted = [(a, s, u, x) for (a, s), (u, x) in zip(pairs, links, strict=True)]
            bodies = [chat_synced(*m) for m in minted]
            print(f"{machine()}\n\n1. deliveries acknowledged durably", flush=True)
            targets = [("folder", str(work / "ack"), e)]
            if not args.no_bucket:
                moto = subprocess.Popen(
                    [PY, "-c", _MOTO], stdout=subprocess.PIPE, text=True, env=env()
                )
                assert moto.stdout is not None
                endpoint = moto.stdout.readline().strip()
                targets.append(("bucket", f"s3://{BUCKET}/ack", storage_env(base_url, endpoint)))
            ack_rows = []
            for name, out, te in targets:
                for label, rate, n in (
                    ("max", None, 3000),
                    ("200/s", 200.0, 2000),
                    ("1000/s", 1000.0, 3000),
                ):
                    srv = Serve(f"{out}-{label.replace('/', '')}", key, te)
                    try:
                        got = asyncio.run(deliver(srv.url, bodies[:n], key, rate))
                    finally:
                        srv.stop()
                    ack_rows.append(
                        [
                            name,
                            label,
                            got["sent"],
                            got["ok"],
                            got["per_second"],
                            got["p50_ms"],
                            got["p99_ms"],
                        ]
                    )
                    print(f"  {name} {label}: {got}; {load()}", flush=True)
            print(table(["archive", "rate", "sent", "200", "acks/s", "p50 ms", "p99 ms"], ack_rows))

            print(
                "\n2. units exported per second: webhooks against an unpaced SESSIONS export",
                flush=True,
            )
            out = work / "units"
            srv = Serve(str(out), key, e, "--concurrency", "16")
            try:
                start = time.perf_counter()
                asyncio.run(deliver(srv.url, bodies, key, None))
                deadline = time.monotonic() + PHASE_LIMIT
                while manifest_count(out) < len(bodies) and time.monotonic() < deadline:
                    time.sleep(0.02)
                hook_wall = time.perf_counter() - start
                api = asyncio.run(metrics_value(srv.url, "rtk_export_api_requests"))
            finally:
                srv.stop()
            done = manifest_count(out)
            sessions = work / "s.txt"
            sessions.write_text("".join(f"{a} {s}\n" for a, s in pairs))
            m = run_measured(
                export_command(sessions, work / "export", base_url, "--concurrency", "16"),
                environ=e,
            )
            exp_rate = len(pairs) / m.wall
            hook_rate = done / hook_wall
            print(
                table(
                    ["source", "units", "seconds", "units/s", "API requests"],
                    [
                        ["webhooks (serve)", done, hook_wall, hook_rate, api],
                        ["SESSIONS export", len(pairs), m.wall, exp_rate, len(pairs)],
                    ],
                )
            )
            print(f"ratio webhooks / export: {hook_rate / exp_rate:.3f}x")

            print(f"\n3. serve's RSS over {args.rss_deliveries} deliveries", flush=True)
            out = work / "rss"
            srv = Serve(str(out), key, e)
            samples = []
            try:
                one = bodies[0]
                step = max(1, args.rss_deliveries // 10)
                for i in range(0, args.rss_deliveries, step):
                    asyncio.run(deliver(srv.url, [one] * step, key, None))
                    samples.append((i + step, srv.rss_mb()))
                    print(f"  {i + step}: {samples[-1][1]:.1f} MB; {load()}", flush=True)
            finally:
                srv.stop()
            print(table(["deliveries", "RSS MB"], samples))
    finally:
        if moto is not None:
            moto.kill()
            moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
