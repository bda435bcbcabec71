"""`python -m tests.s3_kill_harness ARGS...`: the real command line with an s3:// --out, a
SIGKILL planted at the n-th pass through one point named by RTK_KILL_AT=point:n (test-only),
and small sizes so that a few small CSVs make multipart uploads and many manifest objects.

Points: mid-part (a multipart upload begun, its n-th part stored, not completed), after-put
(an object stored, its manifest line not yet in any manifest object), mid-compaction (the
compacted manifest object written, the n-th old one about to be deleted), none (no kill).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from exporter import cli
from exporter.objectstore import client, manifest, upload

POINTS = ("mid-part", "after-put", "mid-compaction", "none")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def plant(point: str, n: int) -> None:
    upload.PART_SIZE = int(os.environ.get("RTK_PART_SIZE", upload.PART_SIZE))
    manifest.FLUSH_LINES = 5
    manifest.COMPACT_AT = 2
    left = [n]

    def hit() -> bool:
        left[0] -= 1
        return left[0] == 0

    if point == "mid-part":
        real_call = client.Store.call

        async def call(self: client.Store, what: str, fn: Any) -> Any:
            out = await real_call(self, what, fn)
            if what.startswith("part ") and hit():
                _die()
            return out

        client.Store.call = call  # type: ignore[method-assign]
    elif point == "after-put":
        real_put = client.Store.put

        async def put(self: client.Store, key: str, body: bytes, **kw: Any) -> str:
            etag = await real_put(self, key, body, **kw)
            if "/manifest/" not in key and ".rtk-export" not in key and hit():
                _die()
            return etag

        client.Store.put = put  # type: ignore[method-assign]
    elif point == "mid-compaction":
        real_delete = client.Store.delete

        async def delete(self: client.Store, key: str) -> None:
            if "/manifest/" in key and hit():
                _die()
            await real_delete(self, key)

        client.Store.delete = delete  # type: ignore[method-assign]
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}; one of {', '.join(POINTS)}")


if __name__ == "__main__":
    where, _, count = os.environ["RTK_KILL_AT"].partition(":")
    plant(where, int(count or 0))
    sys.exit(cli.main(sys.argv[1:]))
