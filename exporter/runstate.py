"""DIR/.rtk-export-state.json: for each app, when its last whole discovery run started and
which sessions were seen LIVE. Read and written under DIR's lock; replaced atomically."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from exporter.archive import STATE_NAME, write_atomic
from exporter.times import parse_rfc3339, rfc3339

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(slots=True)
class AppState:
    last_run: datetime | None = None  # start of the last discovery run that covered the app
    live: set[str] = field(default_factory=set)  # sessions seen LIVE, not yet seen ENDED


class RunState:
    """The state file's contents; `save()` replaces the file atomically."""

    def __init__(self, path: Path, apps: dict[str, AppState] | None = None) -> None:
        self.path = path
        self.apps = apps if apps is not None else {}

    @classmethod
    def load(cls, out_dir: Path) -> RunState:
        path = out_dir / STATE_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            log.error("state file %s is unreadable (%s); starting without it", path, exc)
            return cls(path)
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path | str) -> RunState:
        """The state in `text` (read from `path`); an empty one, loudly, if unreadable."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            # Losing it costs a wider window (7 days) and LIVE sessions older than that:
            # say so loudly, and start again; the next successful run rewrites it.
            log.error("state file %s is unreadable (%s); starting without it", path, exc)
            return cls(Path(path))
        apps: dict[str, AppState] = {}
        for app_id, entry in (doc.get("apps") or {}).items() if isinstance(doc, dict) else ():
            if not isinstance(entry, dict):
                continue
            live = entry.get("live")
            apps[str(app_id)] = AppState(
                last_run=parse_rfc3339(entry.get("last_run")),
                live={s for s in live if isinstance(s, str)} if isinstance(live, list) else set(),
            )
        return cls(Path(path), apps)

    def app(self, app_id: str) -> AppState:
        return self.apps.setdefault(app_id, AppState())

    def last_run(self, app_id: str) -> datetime | None:
        entry = self.apps.get(app_id)
        return entry.last_run if entry else None

    def live(self, app_id: str) -> set[str]:
        entry = self.apps.get(app_id)
        return set(entry.live) if entry else set()

    def to_json(self) -> dict[str, Any]:
        apps: dict[str, Any] = {}
        for app_id, entry in sorted(self.apps.items()):
            apps[app_id] = {
                "last_run": rfc3339(entry.last_run) if entry.last_run else None,
                "live": sorted(entry.live),
            }
        return {"version": VERSION, "apps": apps}

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.to_json(), indent=1) + "\n")
