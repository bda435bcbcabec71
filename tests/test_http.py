"""The aiohttp boundary: one mapping of transport failures to the error tree, one check of a
body's announced length, and the switch that turns off aiohttp's silent re-send, which must
fail loudly where it is missing."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import pytest

from exporter.config import Timeouts
from exporter.errors import IncompleteDownload, TransientError
from exporter.http import (
    HiddenRetriesNotDisabled,
    api_session,
    check_length,
    download_session,
    no_hidden_retries,
    transport_errors,
)


def _connector_error() -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="127.0.0.1", port=9, ssl=False)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("raised", "expected", "words"),
    [
        (
            aiohttp.ClientPayloadError("cut"),
            IncompleteDownload,
            "download failed: connection broke while reading the body",
        ),
        (TimeoutError(), TransientError, "download failed: timed out"),
        (aiohttp.ServerDisconnectedError(), TransientError, "server closed the connection"),
        (_connector_error(), TransientError, "cannot connect to 127.0.0.1:9 (Connection refused)"),
        (aiohttp.ClientOSError(104, "reset"), TransientError, "download failed: ClientOSError"),
    ],
)
def test_transport_failures_map_to_the_error_tree(
    raised: BaseException, expected: type[Exception], words: str
) -> None:
    """Each aiohttp failure becomes one ExportError, its message naming no URL."""
    with pytest.raises(expected) as caught, transport_errors("download failed"):
        raise raised
    assert type(caught.value) is expected
    assert words in caught.value.message and "http" not in caught.value.message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_other_exceptions_pass_through_untouched() -> None:
    """A bug is not a transport failure: it is not turned into a retried error."""
    with pytest.raises(KeyError), transport_errors("API request failed"):
        raise KeyError("bug")


@pytest.mark.parametrize(("received", "announced"), [(1000, 4000), (0, 1), (4001, 4000)])
def test_a_body_of_other_than_its_announced_length_is_an_incomplete_download(
    received: int, announced: int
) -> None:
    """Shorter or longer than Content-Length: an IncompleteDownload (retried, kind
    incomplete_download) whichever fetcher read it, the message saying both numbers."""
    with pytest.raises(IncompleteDownload) as caught:
        check_length("attachment", received, announced)
    assert type(caught.value) is IncompleteDownload
    assert caught.value.message == (
        f"attachment had {received} bytes, the server announced {announced}"
    )


@pytest.mark.parametrize(("received", "announced"), [(4000, 4000), (0, 0), (123, None)])
def test_a_body_of_its_announced_length_or_with_none_announced_passes(
    received: int, announced: int | None
) -> None:
    """As announced, or no Content-Length to hold it to (a chunked body): no error."""
    check_length("download", received, announced)


async def test_real_sessions_have_the_silent_resend_turned_off() -> None:
    """Both sessions of a run have aiohttp's re-send of a GET on a closed keep-alive off."""
    for session in (api_session("t", Timeouts(), 4), download_session(Timeouts(), 4)):
        async with session:
            assert session._retry_connection is False


def test_an_aiohttp_without_the_switch_fails_loudly() -> None:
    """If a future aiohttp drops the private switch, the program refuses to run, saying why,
    rather than pacing requests it cannot see."""

    future_session = SimpleNamespace(close=None)  # a session object without the switch
    with pytest.raises(HiddenRetriesNotDisabled, match=r"cannot turn off .* aiohttp<4"):
        no_hidden_retries(future_session)
