"""`--out s3://...` and the storage endpoint resolved as pure functions: bucket and prefix
rules, endpoint precedence, region defaults, https only (http to loopback alone)."""

from __future__ import annotations

import argparse

import pytest

from exporter.objectstore.target import endpoint_problem, parse_target, store_options


def test_bucket_prefix_and_keys() -> None:
    """The prefix loses its slashes at either end; keys and the root are joined under it."""
    t = parse_target("s3://my-bucket/a/b/", None, {})
    assert (t.bucket, t.prefix, t.root, t.key("x/y.csv")) == (
        "my-bucket",
        "a/b",
        "a/b/",
        "a/b/x/y.csv",
    )
    bare = parse_target("s3://my-bucket", None, {})
    assert (bare.prefix, bare.key("x.csv"), str(bare)) == ("", "x.csv", "s3://my-bucket")


@pytest.mark.parametrize(
    "url",
    ["s3://AB/p", "s3://a/p", "s3://bad_name/p", "s3://b..x/p", "s3://ok-b/../p", "s3://ok-b/a b"],
)
def test_bad_buckets_and_prefixes_are_refused(url: str) -> None:
    """Names S3 would refuse, and prefixes with '..' or spaces, are a ValueError."""
    with pytest.raises(ValueError, match="--out"):
        parse_target(url, None, {})


def test_endpoint_precedence_and_region_defaults() -> None:
    """--s3-endpoint beats AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL; the region is
    AWS_REGION, else AWS_DEFAULT_REGION, else auto (custom endpoint) or us-east-1 (AWS)."""
    env = {"AWS_ENDPOINT_URL_S3": "https://s3.example", "AWS_ENDPOINT_URL": "https://all.example"}
    assert parse_target("s3://bkt", "https://arg.example/", env).endpoint == "https://arg.example"
    assert parse_target("s3://bkt", None, env).endpoint == "https://s3.example"
    assert (
        parse_target("s3://bkt", None, {"AWS_ENDPOINT_URL": "https://all.example"}).endpoint
        == "https://all.example"
    )
    assert parse_target("s3://bkt", None, env).region == "auto"
    assert parse_target("s3://bkt", None, {}).region == "us-east-1"
    assert parse_target("s3://bkt", None, {"AWS_DEFAULT_REGION": "eu-west-1"}).region == "eu-west-1"
    assert (
        parse_target("s3://bkt", None, {"AWS_REGION": "weur", "AWS_DEFAULT_REGION": "x"}).region
        == "weur"
    )


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("https://acct.r2.cloudflarestorage.com", True),
        ("http://127.0.0.1:9000", True),
        ("http://[::1]:9000", True),
        ("http://localhost:9000", True),
        ("http://minio.internal:9000", False),
        ("http://10.0.0.5:9000", False),
        ("ftp://127.0.0.1", False),
        ("https://user:pw@s3.example", False),
        ("https://s3.example/bucket", False),
        ("https://s3.example?x=1", False),
    ],
)
def test_only_https_or_loopback_http_endpoints(endpoint: str, ok: bool) -> None:
    """Storage credentials never sign a request sent in clear text off this host."""
    assert (endpoint_problem(endpoint) is None) is ok


def test_manifest_and_endpoint_options_are_checked() -> None:
    """--manifest with s3:// and --s3-endpoint without it are refused; the lease is parsed."""

    def ns(
        out: str, manifest: str | None = None, endpoint: str | None = None, lease: str = "2m"
    ) -> argparse.Namespace:
        return argparse.Namespace(
            out=out, manifest=manifest, s3_endpoint=endpoint, lock_lease=lease
        )

    assert store_options(ns("/tmp/x"), {}) == (None, 120.0)
    with pytest.raises(ValueError, match="--manifest"):
        store_options(ns("s3://bkt/p", manifest="m.jsonl"), {})
    with pytest.raises(ValueError, match="--s3-endpoint"):
        store_options(ns("/tmp/x", endpoint="https://s3.example"), {})
    with pytest.raises(ValueError, match="at least"):
        store_options(ns("s3://bkt/p", lease="0.5s"), {})
    assert store_options(ns("s3://bkt/p", lease="3s"), {})[1] == 3.0  # short, as tests use
    target, lease = store_options(ns("s3://bkt/p", lease="10m"), {})
    assert target is not None and lease == 600.0
