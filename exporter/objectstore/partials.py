"""Where recordings on their way to a bucket wait while they download: a private folder per
target on this host that outlives the run, so that the next run continues with `Range`."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from contextlib import suppress

from exporter.config import StoreTarget

log = logging.getLogger("exporter.objectstore")
AREA_PREFIX = "rtk-export-partials-"  # not rtk-export-<pid>-: no run's temporary area


def partials_area(target: StoreTarget, fallback: str) -> str:
    """`$TMPDIR/rtk-export-partials-<uid>/<hash of endpoint, bucket, prefix>`, or `fallback`
    (the run's own temporary area) when that folder cannot be ours alone.

    Why not the run's temporary area: it is removed when the run ends, so a recording longer
    to download than `--max-duration` would start from zero in every run and never finish.
    Runs on one PREFIX hold its lock one at a time, so one folder per target is never shared
    by two live runs; the 7-day clean-up (`remove_old_partials`) keeps it from growing. A
    fixed name in a shared /tmp could be planted by another user: it must be a real folder
    of ours, closed to everyone else, or it is not used.
    """
    uid = os.getuid()
    base = os.path.join(tempfile.gettempdir(), f"{AREA_PREFIX}{uid}")
    name = "\n".join((target.endpoint or "", target.bucket, target.prefix))
    area = os.path.join(base, hashlib.sha256(name.encode()).hexdigest()[:24])
    try:
        with suppress(FileExistsError):
            os.mkdir(base, 0o700)
        st = os.lstat(base)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
            log.warning("%s is not a private folder of ours: partials kept for this run only", base)
            return fallback
        os.makedirs(area, mode=0o700, exist_ok=True)
    except OSError as exc:
        log.warning("cannot use %s (%s): partials kept for this run only", base, exc.strerror)
        return fallback
    return area


def remove_empty_folders(area: str) -> None:
    """The app and media folders left empty under `area` by finished recordings (blocking;
    at start-up, before any download)."""
    for folder, _, _ in os.walk(area, topdown=False):
        if folder != area:
            with suppress(OSError):  # not empty: kept
                os.rmdir(folder)
