"""The object-storage issue's figures, against moto's S3 on loopback and the stand-in:

    python -m bench.s3 [--pairs 2000] [--runs 3] [--big-bytes 1073741824]

1. Direct: `rtk-export SESSIONS --out s3://bench/direct-N` against the moto server, versus
   `rtk-export SESSIONS --out DIR` then `rclone copy DIR moto:bench/rclone-N` (Debian's
   rclone): wall time of each whole path, and peak RSS of each process.
2. The same runs give pairs/s of the export to S3 against the export to DIR.
3. One body of --big-bytes (1 GB) exported to s3:// through multipart: MB/s and peak RSS.

moto runs in this process (a thread), the stand-in in its own, each contender as a child;
contenders alternate which goes first. Prints tables and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import (
    PY,
    Measured,
    env,
    load,
    machine,
    median,
    run_measured,
    standin_process,
    table,
    write_sessions,
)

KEY, SECRET, BUCKET = "AKIABENCHKEY00000000", "bench-storage-secret", "bench"
_MOTO = f"""
import logging, sys, time, boto3
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
client = boto3.client("s3", endpoint_url=f"http://{{host}}:{{port}}", region_name="us-east-1",
                      aws_access_key_id="{KEY}", aws_secret_access_key="{SECRET}")
client.create_bucket(Bucket="{BUCKET}")
print(f"http://{{host}}:{{port}}", flush=True)
while True:
    time.sleep(3600)
"""


def storage_env(base_url: str, endpoint: str) -> dict[str, str]:
    e = env(base_url)
    e.update(
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
        RCLONE_CONFIG_MOTO_TYPE="s3",
        RCLONE_CONFIG_MOTO_PROVIDER="Other",
        RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=KEY,
        RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=SECRET,
        RCLONE_CONFIG_MOTO_ENDPOINT=endpoint,
        RCLONE_CONFIG_MOTO_REGION="us-east-1",
    )
    return e


def export(sessions: Path, out: str, e: dict[str, str]) -> Measured:
    cmd = [PY, "-m", "exporter", str(sessions), "--out", out, "--rate", "1000000/1s"]
    cmd += ["--progress", "never", "--summary-json", "-"]
    m = run_measured(cmd, environ=e)
    if m.returncode != 0:
        raise SystemExit(f"export to {out} failed ({m.returncode}): {m.stderr[-2000:]}")
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--big-bytes", type=int, default=1 << 30, help="0: skip the big object")
    args = p.parse_args()
    rclone = shutil.which("rclone")
    if rclone is None:
        raise SystemExit("rclone is not installed (apt-get install rclone)")
    # moto in its own process: a child forked from a process holding moto would count the
    # parent's pages in its peak RSS (ru_maxrss survives exec).
    moto = subprocess.Popen([PY, "-c", _MOTO], stdout=subprocess.PIPE, text=True, env=env())
    assert moto.stdout is not None
    endpoint = moto.stdout.readline().strip()
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-s3-"))
    rows: dict[str, list[Measured]] = {"direct": [], "dir": [], "rclone": []}
    try:
        sessions = write_sessions(work / "s.txt", args.pairs)
        with standin_process() as base_url:
            e = storage_env(base_url, endpoint)
            for run in range(args.runs):
                order = ["direct", "dir"] if run % 2 == 0 else ["dir", "direct"]
                for name in order:
                    if name == "direct":
                        rows["direct"].append(export(sessions, f"s3://{BUCKET}/direct-{run}", e))
                        continue
                    out = work / f"dir-{run}"
                    rows["dir"].append(export(sessions, str(out), e))
                    m = run_measured(
                        [rclone, "copy", str(out), f"moto:{BUCKET}/rclone-{run}"],
                        # rclone's SDK refuses a CA bundle on a plain-http endpoint.
                        environ={k: v for k, v in e.items() if k != "AWS_CA_BUNDLE"},
                    )
                    if m.returncode != 0:
                        raise SystemExit(f"rclone failed: {m.stderr[-2000:]}")
                    rows["rclone"].append(m)
                    shutil.rmtree(out)
                d, f, r = rows["direct"][-1], rows["dir"][-1], rows["rclone"][-1]
                print(
                    f"run {run + 1}: direct {d.wall:.2f} s ({d.peak_rss_mb:.0f} MB); "
                    f"DIR {f.wall:.2f} s ({f.peak_rss_mb:.0f} MB) + rclone {r.wall:.2f} s "
                    f"({r.peak_rss_mb:.0f} MB); {load()}",
                    flush=True,
                )
        wall = {k: median([m.wall for m in v]) for k, v in rows.items()}
        rss = {k: median([m.peak_rss_mb for m in v]) for k, v in rows.items()}
        cpu = {k: median([m.cpu for m in v]) for k, v in rows.items()}
        print(f"\n{args.pairs} pairs, medians of {args.runs} runs; {machine()}")
        print(
            table(
                ["path", "wall s", "pairs/s", "peak RSS MB", "CPU s"],
                [
                    [
                        "rtk-export --out s3://",
                        wall["direct"],
                        args.pairs / wall["direct"],
                        rss["direct"],
                        cpu["direct"],
                    ],
                    [
                        "rtk-export --out DIR",
                        wall["dir"],
                        args.pairs / wall["dir"],
                        rss["dir"],
                        cpu["dir"],
                    ],
                    ["  then rclone copy", wall["rclone"], "", rss["rclone"], cpu["rclone"]],
                ],
            )
        )
        both = wall["dir"] + wall["rclone"]
        print(
            f"\nDIR + rclone / direct: {both / wall['direct']:.2f}x wall time (>1: direct faster)"
        )
        print(f"S3 / DIR: {wall['dir'] / wall['direct']:.2f}x pairs/s")
        if args.big_bytes:
            big(args.big_bytes, endpoint, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        moto.terminate()
        moto.wait(30)


def big(size: int, endpoint: str, work: Path) -> None:
    sessions = work / "big.txt"
    sessions.write_text("bigapp big-1\n")
    with standin_process("--chat-bytes", str(size)) as base_url:
        m = export(sessions, f"s3://{BUCKET}/big", storage_env(base_url, endpoint))
    summary = json.loads(m.stdout)
    ok = summary["bytes"] == size
    print(
        f"\none object of {size} bytes through multipart ({'ok' if ok else 'WRONG SIZE'}): "
        f"{m.wall:.1f} s, {size / m.wall / 1e6:.0f} MB/s, peak RSS {m.peak_rss_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
