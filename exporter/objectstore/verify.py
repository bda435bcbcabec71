"""`rtk-export verify s3://BUCKET[/PREFIX]`: stream every object whose last manifest line is
`exported` or `skipped` (or names a stored copy), re-hash it, and report missing, corrupt and
untracked objects. Needs storage credentials only; memory flat in the archive's size."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from exporter.config import RetryPolicy, StoreTarget, Timeouts
from exporter.keyset import KeySet, key_of
from exporter.objectstore.archive import list_archived
from exporter.objectstore.client import NotFound, Store, open_store
from exporter.objectstore.manifest import StoreManifest
from exporter.objectstore.upload import make_temp_area
from exporter.verify import Findings, report


async def verify_store(target: StoreTarget, policy: RetryPolicy | None = None) -> Findings:
    async with open_store(target, policy or RetryPolicy(), Timeouts(), 8) as store:
        await store.check_bucket()
        tmp = make_temp_area()
        try:
            return await _verify(store, Path(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


async def _verify(store: Store, tmp: Path) -> Findings:
    import anyio

    manifest = StoreManifest(store, tmp / "manifest.read.jsonl")
    await manifest.fetch()
    await anyio.to_thread.run_sync(manifest.load)
    found = Findings()
    named = KeySet()
    try:
        for rec in manifest.iter_lines():
            if rec.path is not None:
                named.add(key_of(rec.path))
        for rec in manifest.iter_latest():
            if rec.path is None or not rec.sha256:
                continue
            found.checked += 1
            match await _rehash(store, store.target.key(rec.path)):
                case None:
                    found.missing.append(rec.path)
                case (size, digest) if size == rec.bytes and digest == rec.sha256:
                    found.intact += 1
                case _:
                    found.corrupt.append(rec.path)
    finally:
        manifest.close()
    async for rel, _ in list_archived(store):
        if key_of(rel) not in named:
            found.untracked.append(rel)
    return found


async def _rehash(store: Store, key: str) -> tuple[int, str] | None:
    """The object's size and SHA-256, streamed; None if it is not there."""

    async def get() -> tuple[int, str]:
        resp = await store.client.get_object(Bucket=store.bucket, Key=key)
        digest, size = hashlib.sha256(), 0
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    try:
        return await store.call(f"GET {key}", get)
    except NotFound:
        return None


def main(argv: Sequence[str]) -> int:
    """`rtk-export verify ...`: an s3:// archive here, a folder by exporter.verify."""
    import os

    if not any(a.startswith("s3://") for a in argv):
        from exporter.verify import main as verify_folder

        return verify_folder(argv)
    import argparse

    p = argparse.ArgumentParser(
        prog="rtk-export verify", description="Re-hash every exported object against the manifest."
    )
    p.add_argument("url", metavar="s3://BUCKET[/PREFIX]")
    p.add_argument("--manifest", metavar="PATH", help="(not with s3://)")
    p.add_argument("--s3-endpoint", metavar="URL", help="else env AWS_ENDPOINT_URL_S3, ...")
    args = p.parse_args(list(argv))
    from exporter import logs

    logs.setup()
    return verify_url(args.url, args.manifest, args.s3_endpoint, os.environ)


def verify_url(
    url: str, manifest: str | None, endpoint: str | None, environ: Mapping[str, str]
) -> int:
    """Verify the archive at `url`; the exit code."""
    import sys

    import anyio

    from exporter.errors import FatalError
    from exporter.objectstore.target import parse_target

    if manifest:
        print("rtk-export verify: --manifest does not combine with s3://", file=sys.stderr)
        return 2
    try:
        target = parse_target(url, endpoint, environ)
        found = anyio.run(verify_store, target, backend="asyncio")
    except ValueError as exc:
        print(f"rtk-export verify: {exc}", file=sys.stderr)
        return 2
    except FatalError as exc:
        print(f"rtk-export verify: {exc.message}", file=sys.stderr)
        return 2
    return report(found, "objects")
