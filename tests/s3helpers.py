"""Helpers for the object-storage tests: settings for an s3:// out, and a plain boto3 client
to look into the bucket from outside the program."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3

from exporter.objectstore.target import parse_target
from exporter.standin import StandinServer
from tests.helpers import make_settings
from tests.s3fakes import ACCESS_KEY, REGION, SECRET_KEY


def store_settings(
    server: StandinServer,
    endpoint: str,
    bucket: str,
    sessions: Path,
    prefix: str = "arch",
    **kw: Any,
) -> Any:
    target = parse_target(f"s3://{bucket}/{prefix}", endpoint, {"AWS_REGION": REGION})
    return make_settings(server, Path(f"s3://{bucket}/{prefix}"), sessions, store=target, **kw)


def s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in (
        s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    ):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def body(endpoint: str, bucket: str, key: str) -> bytes:
    return s3(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()


def manifest_records(endpoint: str, bucket: str, prefix: str = "arch") -> list[dict[str, Any]]:
    """Every manifest line, in key order of the manifest objects."""
    import json

    lines = []
    for key in sorted(keys(endpoint, bucket, f"{prefix}/manifest/")):
        lines += [json.loads(x) for x in body(endpoint, bucket, key).splitlines() if x]
    return lines


def latest(
    endpoint: str, bucket: str, prefix: str = "arch"
) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (r["app_id"], r["session_id"], r["kind"]): r
        for r in manifest_records(endpoint, bucket, prefix)
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def run_store(settings: Any, **kw: Any) -> Any:
    """A run to the bucket as the command line makes it, without signal handlers."""
    from exporter.objectstore.run import export_to_store
    from exporter.pipeline import Run

    kw.setdefault("handle_signals", False)
    return await export_to_store(settings, make_run=Run, **kw)
