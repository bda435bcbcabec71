"""Fixtures: the package's own stand-in over real HTTP on 127.0.0.1 (helpers: tests/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager

import pytest

from exporter.standin import StandinServer, run_standin
from tests.helpers import standin_config


@pytest.fixture
def standin() -> Callable[..., AbstractAsyncContextManager[StandinServer]]:
    """`async with standin(**config) as server:` starts the stand-in on 127.0.0.1:0."""
    return lambda **kw: run_standin(standin_config(**kw))


@pytest.fixture
async def server() -> AsyncIterator[StandinServer]:
    async with run_standin(standin_config()) as srv:
        yield srv


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 in server mode on 127.0.0.1, once per session: its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the moto server; the storage environment set for it."""
    import boto3

    from tests.s3fakes import ACCESS_KEY, REGION, SECRET_KEY, new_bucket_name, store_env

    for key, value in store_env(moto_server).items():
        monkeypatch.setenv(key, value)
    name = new_bucket_name()
    boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    ).create_bucket(Bucket=name)
    return name
