"""The inbox as a source of units for the pipeline: items drained oldest first (claimed when
replicas share a bucket), each turned back into the unit its event names, with the URL it came
with; an item leaves the inbox once its unit's manifest line is written."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio

from exporter.manifest import Record
from exporter.sessions import Minted
from exporter.urls import Link
from exporter.webhooks.events import Rejected, WebhookUnit, parse_event
from exporter.webhooks.inbox import REJECTED, Item

if TYPE_CHECKING:
    from exporter.manifest import Manifest
    from exporter.seam import Archive

log = logging.getLogger("exporter.serve")

QUEUE_ROOM = 10_000  # names kept in memory; beyond it, the inbox is listed again


class Inbox(Protocol):
    """Where deliveries are kept: a folder (webhooks.inbox) or a bucket (objectstore.inbox)."""

    async def put(self, item: Item) -> bool: ...

    async def put_aside(self, item: Item, where: str) -> bool: ...

    async def pending(self) -> list[str]: ...

    async def read(self, name: str) -> Item | None: ...

    async def claim(self, name: str) -> bool: ...

    async def release(self, name: str) -> None: ...

    async def done(self, name: str) -> None: ...

    async def set_aside(self, name: str, where: str, reason: str) -> None: ...

    async def writable(self) -> bool: ...

    async def stats(self) -> tuple[int, float]: ...

    async def prune(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Destination:
    inbox: Inbox
    make_archive: Callable[[], Archive]  # a fresh one for every run serve makes
    make_manifest: Callable[[Archive], Manifest | None]  # None: the folder's own manifest
    routes: Callable[[], Awaitable[Mapping[str, str]]]  # webhook id -> app, as registered
    poll: float  # seconds between listings of the inbox (other replicas' items)


def minted(item: Item, unit: WebhookUnit) -> Minted:
    assert item.app_id is not None
    return Minted(
        app_id=item.app_id,
        session_id=unit.session_id,
        kind=unit.kind,
        link=Link(unit.url, unit.expiry),
        delivery_id=item.delivery_id,
        recording_id=unit.recording_id,
        output_file_name=unit.output_file_name,
        file_size=unit.file_size,
    )


class InboxSource:
    """`units()` until `stop()`; `notify(name)` when the server has kept a new item."""

    def __init__(self, inbox: Inbox, kinds: frozenset[str], poll: float = 5.0) -> None:
        self._inbox = inbox
        self._kinds = kinds
        self._poll = poll  # how often the inbox is listed again (other replicas' items)
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._busy: dict[str, int] = {}  # name -> units of it in flight
        # Names finished lately: a notify() that comes after its item was listed and done
        # must not take it again (bounded: older ones are gone from the inbox anyway).
        self._finished: deque[str] = deque(maxlen=QUEUE_ROOM)
        self._finished_set: set[str] = set()
        self._wake = anyio.Event()
        self._stopped = False
        self._relist = True

    def notify(self, name: str) -> None:
        if len(self._queue) < QUEUE_ROOM:
            self._enqueue(name)
        else:
            self._relist = True
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _enqueue(self, name: str) -> None:
        if name not in self._queued and name not in self._busy and name not in self._finished_set:
            self._queued.add(name)
            self._queue.append(name)

    async def units(self) -> AsyncIterator[Minted]:
        while not self._stopped:
            if not self._queue:
                if self._relist:
                    self._relist = False
                    for name in await self._inbox.pending():
                        if len(self._queue) >= QUEUE_ROOM:
                            self._relist = True
                            break
                        self._enqueue(name)
                    if self._queue:
                        continue
                with anyio.move_on_after(self._poll):
                    await self._wake.wait()
                self._wake = anyio.Event()
                if not self._queue:
                    self._relist = True
                continue
            name = self._queue.popleft()
            self._queued.discard(name)
            for unit in await self._take(name):
                if self._stopped:
                    return
                yield unit

    async def _take(self, name: str) -> list[Minted]:
        # Marked as taken before the first await: the server's notify() for this very item
        # can come after a listing queued it, and must not queue it a second time.
        self._busy[name] = 0
        units: list[Minted] = []
        try:
            units = await self._units_of(name)
        finally:
            if units:
                self._busy[name] = len(units)
            else:
                self._busy.pop(name, None)
        return units

    async def _units_of(self, name: str) -> list[Minted]:
        if not await self._inbox.claim(name):
            return []  # another replica has it
        try:
            item = await self._inbox.read(name)
        except ValueError:
            await self._inbox.set_aside(name, REJECTED, "the inbox item is damaged")
            return []
        if item is None:
            await self._inbox.release(name)
            return []
        try:
            _, found = parse_event(item.body)
        except Rejected as exc:  # kept before this version's rules: set aside, as at receipt
            await self._inbox.set_aside(name, REJECTED, str(exc))
            return []
        units = [minted(item, u) for u in found if u.kind in self._kinds]
        if not units or item.app_id is None:
            await self._inbox.done(name)  # nothing this serve exports (--include changed)
            return []
        return units

    async def finished(self, unit: Minted, rec: Record) -> None:
        """The unit's line is written: its item leaves the inbox with its last unit."""
        name = _name_of(unit)
        left = self._busy.get(name, 1) - 1
        if left > 0:
            self._busy[name] = left
            return
        await self._inbox.done(name)
        if len(self._finished) == self._finished.maxlen:
            self._finished_set.discard(self._finished[0])
        self._finished.append(name)
        self._finished_set.add(name)
        self._busy.pop(name, None)  # only now: a listing meanwhile must not take it again

    def abandoned(self) -> None:
        """Units in flight were cut off (shutdown): their items stay for the next serve."""
        self._busy.clear()


def _name_of(unit: Minted) -> str:
    from exporter.webhooks.inbox import delivery_name

    return delivery_name(unit.delivery_id)
