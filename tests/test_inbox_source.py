"""The folder inbox and the inbox as a source, against interleavings that a live serve hits
only now and then: each is forced here, so that a unit is never taken or kept twice."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from exporter import archive
from exporter.archive import INBOX_NAME, remove_stale_temps
from exporter.webhooks import inbox as inbox_module
from exporter.webhooks.inbox import DONE, FolderInbox, Item
from exporter.webhooks.source import InboxSource
from tests.webhooks import chat_synced

URL = "https://files.example.invalid/chat.csv?X-Amz-Signature=s"  # never fetched here


def _item(delivery: str, session: str = "s1") -> Item:
    body = chat_synced(session, URL, "2030-01-01T00:00:00.000Z")
    return Item(delivery, time.time(), None, body, "app0", "meeting.chatSynced")


async def _inbox(tmp_path: Path) -> FolderInbox:
    inbox = FolderInbox(tmp_path)
    await inbox.open()
    return inbox


class ListsOnce(FolderInbox):
    """A folder inbox whose first listing is the only one, and whose reading of an item lets
    the server's notify() for that same item in (the order a live serve sometimes has)."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir)
        self.source: InboxSource | None = None
        self.listed = False
        self.reads: list[str] = []

    async def pending(self) -> list[str]:
        if self.listed:
            return []
        self.listed = True
        return await super().pending()

    async def read(self, name: str) -> Item | None:
        self.reads.append(name)
        assert self.source is not None
        self.source.notify(name)  # the receiver's notify, after the listing queued the item
        await anyio.sleep(0)
        return await super().read(name)


async def test_a_notify_after_a_listing_queued_the_item_does_not_take_it_again(
    tmp_path: Path,
) -> None:
    """A listing finds the item, then the server's notify() for it arrives while it is being
    read: the next unit is the next item, never the same one again."""
    inbox = ListsOnce(tmp_path)
    await inbox.open()
    assert await inbox.put(_item("d-a", "s-a"))
    source = InboxSource(inbox, frozenset({"chat"}), poll=60)
    inbox.source = source
    units = source.units()
    with anyio.fail_after(10):
        first = await anext(units)
        assert first.delivery_id == "d-a"
        assert await inbox.put(_item("d-b", "s-b"))
        source.notify("d-b")
        second = await anext(units)
    assert second.delivery_id == "d-b"
    assert inbox.reads == ["d-a", "d-b"]
    source.stop()
    await units.aclose()


async def test_a_replay_that_lands_as_its_item_is_done_is_not_kept_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The item leaves for done/ between the replay's check of done/ and its link: the
    replay is a duplicate, and the inbox holds nothing to export again."""
    inbox = await _inbox(tmp_path)
    assert await inbox.put(_item("d-1"))
    real = inbox_module._write_new

    def done_meanwhile(folder: Path, name: str, data: bytes) -> bool:
        inbox._done("d-1")  # the worker finishes the first copy right now
        return real(folder, name, data)

    monkeypatch.setattr(inbox_module, "_write_new", done_meanwhile)
    assert await inbox.put(_item("d-1")) is False
    assert await inbox.pending() == []
    assert (tmp_path / INBOX_NAME / DONE / "d-1.json").exists()


async def test_a_run_starting_leaves_the_inbox_temporary_files_to_serve(tmp_path: Path) -> None:
    """An export run's sweep passes the inbox by (a delivery may be half written right now);
    serve's own start, before it listens, removes what a killed serve left there."""
    inbox = await _inbox(tmp_path)
    in_flight = tmp_path / INBOX_NAME / archive.temp_name("d-9.json")
    in_flight.write_bytes(b"{")
    (tmp_path / "app0").mkdir()
    stale = tmp_path / "app0" / archive.temp_name("s1.csv")
    stale.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 1
    assert not stale.exists() and in_flight.exists()
    await inbox.prune()
    assert not in_flight.exists()
