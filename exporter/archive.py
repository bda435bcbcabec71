"""The archive in a folder: every name and byte the program keeps in DIR (final and temporary
names, "is it ours", stale clean-up, atomic placing, folder sync, the write probe, and the
names of the manifest, the state and the lock).

The seam the pipeline sees, `Archive`, is drawn in seam.py; `FolderArchive` (folder.py) is
DIR, and the object-storage one lives in exporter/objectstore/.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import secrets
import tempfile
from contextlib import suppress
from pathlib import Path

from exporter.errors import DiskError, PermanentError

OURS = ".rtk-export"  # every file of the program's own in DIR starts so
TMP_PREFIX = f"{OURS}-"
TMP_SUFFIX = ".part"
MANIFEST_NAME = "manifest.jsonl"
STATE_NAME = f"{OURS}-state.json"
LOCK_NAME = f"{OURS}.lock"
PROBE_NAME = f"{OURS}-probe-"  # + a random tag: the object store's check of its conditions
SITE_RECORD_NAME = f"{OURS}-site.sqlite"  # render's record, in SITE: marks a site folder
# `serve`: its lock (one serve per folder), the per-unit locks it shares with export runs,
# and its inbox folder (one item per delivery; `done/`, `rejected/`, `unroutable/` inside).
SERVE_LOCK_NAME = f"{OURS}-serve.lock"
UNITS_LOCK_NAME = f"{OURS}-units.lock"
INBOX_NAME = f"{OURS}-inbox"
WEBHOOKS_NAME = f"{OURS}-webhooks.json"  # `webhooks register`: webhook id -> app, for serve
SEARCH_INDEX_NAME = f"{OURS}-search.sqlite"  # search's index, in DIR (verify passes it over)

# Errors that mean the disk, not the unit, is the problem: retrying other units cannot help.
_DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
}

# Unique per process and file without a getrandom() call per file: a random tag drawn once,
# then a counter.
_TAG = secrets.token_hex(4)
_SERIAL = itertools.count()


def relative_path(app_id: str, session_id: str, kind: str, transcript_format: str) -> str:
    """Where a unit's file lives, relative to DIR (the spec's layout)."""
    name = {
        "chat": f"{session_id}.csv",
        "transcript": f"{session_id}.transcript.{transcript_format}",
        "summary": f"{session_id}.summary.txt",
    }[kind]
    return f"{app_id}/{name}"


def temp_name(final: str) -> str:
    folder, name = os.path.split(final)
    return os.path.join(folder, f"{TMP_PREFIX}{name}.{_TAG}{next(_SERIAL):x}{TMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def is_ours(name: str) -> bool:
    """A file of the program's own (lock, state, temporary files), not an archived one."""
    return name.startswith(OURS)


def remove_stale_temps(out_dir: Path) -> int:
    """Remove temporary files a killed run left in DIR, its app folders and their media
    folders (attachments, recordings), not in our own folders (the inbox); how many.
    Recording partials are not temporary files: they wait to be resumed
    (see `remove_old_partials`)."""
    removed = 0
    if not out_dir.is_dir():
        return 0
    for top in os.scandir(out_dir):
        entries = [top]
        if is_ours(top.name) and top.is_dir(follow_symlinks=False):
            continue  # serve's inbox: its writes are in flight while a run starts; it sweeps itself
        if top.is_dir(follow_symlinks=False):
            entries = list(os.scandir(top.path))
            entries += [e for d in list(entries) if _is_media_dir(d) for e in os.scandir(d.path)]
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and is_temp_name(entry.name):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


MEDIA_DIRS = (".attachments", ".recordings")
PARTIAL_SUFFIX = ".partial"
SIDECAR_SUFFIX = ".resume.json"


def _is_media_dir(entry: os.DirEntry[str]) -> bool:
    return entry.name.endswith(MEDIA_DIRS) and entry.is_dir(follow_symlinks=False)


def partial_names(final: str) -> tuple[str, str]:
    """(partial file, its resume record) of a resumable download to `final`: fixed names, so
    that a later run finds them, never the final name."""
    folder, name = os.path.split(final)
    stem = os.path.join(folder, f"{TMP_PREFIX}{name}")
    return stem + PARTIAL_SUFFIX, stem + SIDECAR_SUFFIX


def remove_old_partials(out_dir: Path, max_age: float, now: float) -> int:
    """Remove recording partials (and their records) not resumed for `max_age` seconds."""
    removed = 0
    if not out_dir.is_dir():
        return 0
    for app in os.scandir(out_dir):
        if not app.is_dir(follow_symlinks=False):
            continue
        for media in os.scandir(app.path):
            if not _is_media_dir(media):
                continue
            for entry in os.scandir(media.path):
                name = entry.name
                if name.startswith(TMP_PREFIX) and name.endswith((PARTIAL_SUFFIX, SIDECAR_SUFFIX)):
                    with suppress(FileNotFoundError):
                        if now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                            os.unlink(entry.path)
                            removed += 1
    return removed


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text`, whole or not at all (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named like a download's temporary file, so that one left in DIR by a kill is removed by
    # the next run and ignored by verify.
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def writable_problem(out_dir: Path, manifest: Path) -> str | None:
    """Why DIR or the manifest cannot be written, or None: checked before any request.

    By writing, not by asking os.access(): that says yes to root whatever the modes, and
    knows nothing of read-only bind mounts or file systems that refuse new files.
    """
    for folder in dict.fromkeys((out_dir, manifest.parent)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {folder}: {exc.strerror}"
        try:
            # Named like a temporary file, so a run killed right here leaves nothing the next
            # run does not clean up.
            fd, probe = tempfile.mkstemp(
                prefix=f"{TMP_PREFIX}probe-", suffix=TMP_SUFFIX, dir=folder
            )
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"cannot write to {folder}: {exc.strerror}"
    if manifest.is_dir():
        return f"the manifest {manifest} is a directory"
    if manifest.exists():
        try:
            open(manifest, "ab").close()
        except OSError as exc:
            return f"cannot write the manifest {manifest}: {exc.strerror}"
    return None


def file_matches(path: Path | str, size: object, sha256: object) -> bool:
    """The file is there with exactly the recorded size and SHA-256 (blocking: use a thread)."""
    if not isinstance(size, int) or not isinstance(sha256, str):
        return False
    try:
        if os.stat(path).st_size != size:
            return False
        # file_digest reads into one reused buffer: a fresh 1 MiB read() per small file left
        # the allocator fragmented enough to grow RSS with the number of files verified.
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256")
    except OSError:
        return False
    return digest.hexdigest() == sha256


def write_error(exc: OSError, name: str | Path) -> DiskError | PermanentError:
    """What an OSError of writing `name` means: the disk's (a DiskError, the run stops: every
    other unit would fail alike) or this unit's alone (a PermanentError); both name the file."""
    if exc.errno in _DISK_ERRNOS:
        return DiskError(f"cannot write {name}: {os.strerror(exc.errno or 0)}")
    return PermanentError(f"cannot write {name}: {exc.strerror or exc}")
