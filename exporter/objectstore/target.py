"""Where an `s3://BUCKET/PREFIX` out points: bucket, prefix, endpoint and region, resolved
from the command line and the environment once, checked before any request (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from exporter.config import SCHEME, StoreTarget
from exporter.urls import private_transport

MANIFEST_FOLDER = "manifest/"  # PREFIX/manifest/*.jsonl: the manifest's objects
# S3's rules for new buckets (R2 and MinIO keep to them): 3-63 of [a-z0-9.-], alphanumeric ends.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def is_store_url(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_target(out: str, endpoint_arg: str | None, environ: Mapping[str, str]) -> StoreTarget:
    """`out` and the endpoint resolved, or ValueError with one clear line."""
    rest = out[len(SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"--out {out!r}: {bucket!r} is not a valid bucket name")
    for part in prefix.split("/") if prefix else ():
        if part in ("", ".", "..") or not _PREFIX_PART.match(part):
            raise ValueError(
                f"--out {out!r}: the prefix may hold only [A-Za-z0-9_.=+-] between slashes"
            )
    endpoint = (
        endpoint_arg
        or environ.get("AWS_ENDPOINT_URL_S3")
        or environ.get("AWS_ENDPOINT_URL")
        or None
    )
    if endpoint is not None:
        if problem := endpoint_problem(endpoint):
            raise ValueError(problem)
        endpoint = endpoint.rstrip("/")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if not region:
        region = "auto" if endpoint else "us-east-1"  # "auto": R2's name for it
    return StoreTarget(bucket=bucket, prefix=prefix, endpoint=endpoint, region=region)


def endpoint_problem(endpoint: str) -> str | None:
    """Why the storage endpoint must not be used, or None: https, or http to loopback."""
    try:
        parts = urlsplit(endpoint)
        _ = parts.port
    except ValueError:
        return "the storage endpoint is not a valid URL"
    if not parts.hostname:
        return "the storage endpoint has no host"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "the storage endpoint must be a plain URL (no user, query or fragment)"
    if parts.path not in ("", "/"):
        return "the storage endpoint must have no path (the bucket is addressed path-style)"
    if private_transport(parts.scheme, parts.hostname):
        return None
    if parts.scheme == "http":
        # Storage credentials would sign requests sent in clear text.
        return (
            f"the storage endpoint must be https (plain http only to a loopback address), "
            f"got http://{parts.hostname}"
        )
    return f"the storage endpoint must be an https URL, got scheme {parts.scheme!r}"


def store_options(
    args: Any, environ: Mapping[str, str], error: type[Exception] = ValueError
) -> tuple[StoreTarget | None, float]:
    """The command line's storage options (`--out`, `--manifest`, `--s3-endpoint`,
    `--lock-lease`): the target (None for a folder) and the lease in seconds; `error` with
    one clear line."""
    try:
        return _store_options(args, environ)
    except ValueError as exc:
        raise error(str(exc)) from None


def _store_options(args: Any, environ: Mapping[str, str]) -> tuple[StoreTarget | None, float]:
    from exporter.times import parse_span

    out, manifest, endpoint_arg, lease = args.out, args.manifest, args.s3_endpoint, args.lock_lease

    try:
        seconds = parse_span(lease)
    except ValueError as exc:
        raise ValueError(f"--lock-lease: {exc}") from None
    if not is_store_url(out):
        if endpoint_arg:
            raise ValueError("--s3-endpoint goes with an s3:// --out")
        return None, seconds
    if manifest:
        raise ValueError(
            "--manifest does not combine with an s3:// --out: the manifest lives under "
            "PREFIX/manifest/"
        )
    if seconds < 1:  # a renewal every third of it must have time to be answered
        raise ValueError("--lock-lease must be at least 1s")
    return parse_target(out, endpoint_arg, environ), seconds
