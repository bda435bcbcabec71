"""`python -m tests.kill_harness ARGS...`: the real command line, with a SIGKILL planted at the
n-th pass through one point named by RTK_KILL_AT=point:n (test-only; the product has no hook).

Points: mid-download (half of a body's bytes written to its temporary file), before-rename
(temporary file complete and fsynced), after-rename (file in place, manifest line not written),
mid-manifest-line (half a manifest line written), after-manifest-line, recording-at (the
n-th byte of recordings written to a partial file: RTK_KILL_AT=recording-at:BYTES). And one
that is not a kill: bug-in-client (an unexpected exception quoting the request, as aiohttp's
RequestInfo repr does, headers and presigned URL included).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from exporter import cli, writer
from exporter.manifest import Manifest, Record

POINTS = (
    "mid-download",
    "before-rename",
    "after-rename",
    "mid-manifest-line",
    "after-manifest-line",
    "recording-at",
    "bug-in-client",
)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Countdown:
    def __init__(self, n: int) -> None:
        self.left = n

    def hit(self) -> bool:
        self.left -= 1
        return self.left == 0


def plant(point: str, n: int) -> None:
    countdown = _Countdown(n)
    if point == "mid-download":
        real_write_all = writer.write_all

        def write_all(fd: int, data: bytes) -> None:
            if countdown.hit():
                real_write_all(fd, data[: len(data) // 2])
                _die()
            real_write_all(fd, data)

        # Every body is written by a thread of the writer's, held ones and spilled ones alike.
        writer.write_all = write_all
    elif point in ("before-rename", "after-rename"):
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            hit = countdown.hit()
            if hit and point == "before-rename":
                _die()
            real_replace(src, dst)
            if hit:
                _die()

        os.replace = replace  # the writer's threads rename
    elif point in ("mid-manifest-line", "after-manifest-line"):
        real_append = Manifest.append

        def append(self: Manifest, rec: Record) -> None:
            if countdown.hit():
                if point == "mid-manifest-line":
                    assert self._out is not None
                    self._out.write(b'{"app_id":"' + (rec.app_id or "").encode() + b'","sess')
                    self._out.flush()
                    _die()
                real_append(self, rec)
                _die()
            real_append(self, rec)

        Manifest.append = append
    elif point == "recording-at":
        from exporter import resume

        real_write = resume._write
        written = [0]

        def write(fd: int, data: bytes) -> None:
            real_write(fd, data)
            written[0] += len(data)
            if written[0] >= n:
                _die()

        resume._write = write
    elif point == "bug-in-client":
        from exporter import client

        def link_from_answer(kind: str, body: bytes) -> Any:
            if countdown.hit():
                url = json.loads(body)["data"]["chat_download_url"]
                token = os.environ["CLOUDFLARE_API_TOKEN"]
                raise RuntimeError(
                    f"RequestInfo(url=URL('{url}'), method='GET', headers=<CIMultiDictProxy("
                    f"'Authorization': 'Bearer {token}')>, real_url=URL('{url}'))"
                )
            return real_link(kind, body)

        real_link = client.link_from_answer
        client.link_from_answer = link_from_answer
    else:
        raise SystemExit(f"unknown kill point {point!r}; one of {', '.join(POINTS)}")


if __name__ == "__main__":
    where, _, count = os.environ["RTK_KILL_AT"].partition(":")
    plant(where, int(count))
    sys.exit(cli.main(sys.argv[1:]))
