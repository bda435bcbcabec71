"""The twenty-line script a user could write with Cloudflare's official Python SDK.

    CLOUDFLARE_API_TOKEN=... python bench/baseline_sdk.py SESSIONS OUT_DIR \
        --account-id A --base-url URL [--concurrency 16]

Written plainly, as a user would: one task per pair gathered at once, an asyncio.Semaphore
for the concurrency, the SDK for the chat URL, httpx streaming the CSV to disk. No resume, no
manifest, no pacing, no atomic rename: it is the yardstick, not a rival product.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import httpx
from cloudflare import AsyncCloudflare


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("sessions")
    p.add_argument("out")
    p.add_argument("--account-id", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()

    cf = AsyncCloudflare(api_token=os.environ["CLOUDFLARE_API_TOKEN"], base_url=args.base_url)
    sem = asyncio.Semaphore(args.concurrency)
    out = Path(args.out)
    failed = 0

    async with httpx.AsyncClient(timeout=60) as http:

        async def one(app_id: str, session_id: str) -> None:
            nonlocal failed
            async with sem:
                try:
                    chat = await cf.realtime_kit.sessions.get_session_chat(
                        session_id, account_id=args.account_id, app_id=app_id
                    )
                    assert chat.data is not None
                    path = out / app_id / f"{session_id}.csv"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    async with http.stream("GET", chat.data.chat_download_url) as resp:
                        resp.raise_for_status()
                        with open(path, "wb") as fh:  # noqa: ASYNC230 - as a user writes it
                            async for chunk in resp.aiter_bytes():
                                fh.write(chunk)
                except Exception as exc:
                    failed += 1
                    print(f"{app_id}/{session_id}: {exc}")

        with open(args.sessions, encoding="utf-8") as fh:  # noqa: ASYNC230
            pairs = [line.split() for line in fh if line.strip() and not line.startswith("#")]
        await asyncio.gather(*(one(a, s) for a, s in pairs))
    await cf.close()
    print(f"{len(pairs) - failed} exported, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
