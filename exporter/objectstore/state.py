"""Discovery state as `PREFIX/.rtk-export-state.json`, replaced with `If-Match` the version read
(`If-None-Match: *` when there was none), so two writers can never silently undo each other:
on a 412 the other's version is read again, and only the apps this run covered are replaced."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from exporter.archive import STATE_NAME
from exporter.objectstore.client import PreconditionFailed, Store, StoreError
from exporter.runstate import AppState, RunState

log = logging.getLogger("exporter.objectstore")
_TRIES = 5


class StoreState(RunState):
    """RunState whose save() only marks it; `await write()` replaces the object."""

    def __init__(self, apps: dict[str, AppState] | None = None, etag: str | None = None) -> None:
        super().__init__(Path(STATE_NAME), apps)
        self.etag = etag
        self.dirty = False
        self.touched: set[str] = set()

    @classmethod
    async def read(cls, store: Store) -> StoreState:
        got = await store.get_bytes(store.target.key(STATE_NAME))
        if got is None:
            return cls()
        body, etag = got
        return cls(RunState.parse(body.decode("utf-8", "replace"), STATE_NAME).apps, etag)

    def app(self, app_id: str) -> AppState:
        self.touched.add(app_id)
        return super().app(app_id)

    def save(self) -> None:
        self.dirty = True

    async def write(self, store: Store) -> None:
        key = store.target.key(STATE_NAME)
        for _ in range(_TRIES):
            body = (json.dumps(self.to_json(), indent=1) + "\n").encode()
            cond = {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}
            try:
                self.etag = await store.put(key, body, ContentType="application/json", **cond)
                self.dirty = False
                return
            except PreconditionFailed:
                log.warning("the state %s was changed by another writer; merging", key)
            theirs = await StoreState.read(store)
            for app in self.touched:
                theirs.apps[app] = self.apps[app]
            self.apps, self.etag = theirs.apps, theirs.etag
        raise StoreError(f"the state {key} keeps changing under this run")
