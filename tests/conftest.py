"""Fixtures: the package's own stand-in over real HTTP on 127.0.0.1 (helpers: tests/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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
