"""The lock on PREFIX: `PREFIX/.rtk-export.lock`, a lease created with `If-None-Match: *`,
renewed with `If-Match` while the run lives, taken over (conditionally) once expired or held
by a dead pid on this host. A 412 means someone else's write won: at creation, the lock is
held (read it and decide); at renewal, the lock was taken from us (stop the run)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio

from exporter.archive import LOCK_NAME
from exporter.errors import FatalError
from exporter.lock import Locked, pid_alive
from exporter.objectstore.client import PreconditionFailed, Store
from exporter.times import parse_rfc3339, rfc3339

log = logging.getLogger("exporter.objectstore")

DEFAULT_LEASE = 120.0
_TRIES = 4


class LeaseHeld(Locked):
    """Another live run holds the lease: exit 75."""

    def __init__(self, where: str, host: str, pid: str) -> None:
        Exception.__init__(
            self,
            f"{where} is being exported by another rtk-export run "
            f"(host {host or 'unknown'}, pid {pid or 'unknown'}); exiting",
        )
        self.pid = pid
        self.host = host


class LeaseLost(FatalError):
    kind = "lock_lost"


class Lease:
    def __init__(
        self,
        store: Store,
        run_id: str,
        seconds: float = DEFAULT_LEASE,
        clock: Callable[[], float] = time.time,
        key: str | None = None,
    ) -> None:
        self._store = store
        # The run's lock by default; serve's replicas take one per inbox item (its claim).
        self.key = key or store.target.key(LOCK_NAME)
        self.run_id = run_id
        self.seconds = seconds
        self._clock = clock
        self.etag: str | None = None
        self.host = socket.gethostname()

    def _body(self) -> bytes:
        from datetime import UTC, datetime

        expires = datetime.fromtimestamp(self._clock() + self.seconds, UTC)
        doc = {"host": self.host, "pid": os.getpid(), "run_id": self.run_id}
        doc["expires"] = rfc3339(expires)
        return json.dumps(doc).encode() + b"\n"

    async def acquire(self) -> None:
        """Hold the lease, or raise LeaseHeld naming the holder."""
        for _ in range(_TRIES):
            try:
                self.etag = await self._put(IfNoneMatch="*")
                return
            except PreconditionFailed:
                pass
            got = await self._store.get_bytes(self.key)
            if got is None:
                continue  # released in the meantime: try to create it again
            body, etag = got
            holder = _parse(body)
            why = self._takeover_reason(holder)
            if why is None:
                raise LeaseHeld(
                    str(self._store.target), str(holder.get("host", "")), str(holder.get("pid", ""))
                )
            try:
                self.etag = await self._put(IfMatch=etag)
            except PreconditionFailed:
                continue  # someone else took it over first: look again
            log.warning(
                "took over the lock of host %s pid %s (%s)",
                holder.get("host"),
                holder.get("pid"),
                why,
                extra={"event": "lock_takeover"},
            )
            return
        raise LeaseHeld(str(self._store.target), "unknown", "unknown")

    def _takeover_reason(self, holder: dict[str, Any]) -> str | None:
        expires = parse_rfc3339(holder.get("expires"))
        if expires is None:
            return "its lock object is unreadable"
        if expires.timestamp() <= self._clock():
            return "its lease expired"
        pid = holder.get("pid")
        if holder.get("host") == self.host and isinstance(pid, int) and not pid_alive(pid):
            return "its process is gone"
        return None

    async def _put(self, **cond: str) -> str:
        return await self._store.put(self.key, self._body(), ContentType="application/json", **cond)

    async def renew(self) -> None:
        """Extend the lease; LeaseLost if another run took it."""
        assert self.etag is not None
        try:
            self.etag = await self._put(IfMatch=self.etag)
        except PreconditionFailed:
            raise LeaseLost(
                f"the lock {self.key} was taken over by another run; stopping"
            ) from None

    async def keep(self, on_lost: Callable[[FatalError], None]) -> None:
        """Renew every third of the lease until cancelled; `on_lost(error)` if it fails."""
        while True:
            await anyio.sleep(self.seconds / 3)
            try:
                await self.renew()
            except FatalError as exc:
                on_lost(exc)
                return

    async def release(self) -> None:
        """Delete the lock if it is still ours (If-Match); never raises."""
        if self.etag is None:
            return
        etag, self.etag = self.etag, None
        c = self._store.client
        try:
            await c.delete_object(Bucket=self._store.bucket, Key=self.key, IfMatch=etag)
        except Exception as exc:  # the lease expires by itself: a warning, not a failure
            log.warning("could not release the lock %s: %s", self.key, type(exc).__name__)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
