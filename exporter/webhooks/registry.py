"""`webhooks register`'s logic: the app's webhook created, or updated when one with the same
URL exists (never a duplicate), and its id -> app recorded in the archive's
`.rtk-export-webhooks.json` (a folder: atomic replace; a bucket: a conditional PUT), which
`serve` reads back with `routes.load_routes`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from exporter.archive import WEBHOOKS_NAME, write_atomic
from exporter.client import ApiClient
from exporter.errors import TransientError
from exporter.urls import is_loopback_host, redact
from exporter.webhooks.events import EVENTS_FOR_KIND
from exporter.webhooks.routes import parse_record

DEFAULT_NAME = "rtk-export"
_CREATE_TRIES = 3  # a POST that failed in transit may have registered: list before each one
_PUT_TRIES = 5
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def events_for(kinds: tuple[str, ...]) -> list[str]:
    """The events that carry the included kinds (as `parse_include` gives them): attachments
    come with the chat."""
    wanted = {"chat" if k == "attachment" else k for k in kinds}
    return [event for kind, event in EVENTS_FOR_KIND.items() if kind in wanted]


def webhook_url_problem(url: str, *, allow_http_loopback: bool = False) -> str | None:
    """Why RealtimeKit must not be given this URL, or None: https, with a host, no user or
    fragment. `allow_http_loopback` (tests and the demo only, not the command line) lets
    plain http to a loopback address through."""
    if _CONTROL_OR_SPACE.search(url):
        return "the webhook URL has a space or a control character"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "the webhook URL is malformed"
    loopback_http = parts.scheme == "http" and is_loopback_host(parts.hostname)
    if parts.scheme != "https" and not (allow_http_loopback and loopback_http):
        # RealtimeKit posts signed payloads holding presigned URLs: they cross the internet.
        return (
            f"--url must be an https URL (TLS belongs to the proxy in front of serve), "
            f"got {parts.scheme or 'no'} scheme"
        )
    if not parts.hostname:
        return "the webhook URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the webhook URL must not hold a user or password"
    if parts.fragment:
        return "the webhook URL must not have a #fragment"
    return None


@dataclass(frozen=True, slots=True)
class Registered:
    webhook: dict[str, Any]
    action: str  # "created", "updated" or "unchanged"


async def register(
    api: ApiClient, app_id: str, url: str, events: list[str], name: str = DEFAULT_NAME
) -> Registered:
    """The app's webhook for `url` with exactly `events`, enabled: updated if one with this
    URL exists (ours, named `name`, first), else created."""
    for attempt in range(1, _CREATE_TRIES + 1):
        same = [h for h in await api.list_webhooks(app_id) if h.get("url") == url]
        if same:
            hook = sorted(same, key=lambda h: h.get("name") != name)[0]
            current = hook.get("events")
            if isinstance(current, list) and set(current) == set(events) and hook.get("enabled"):
                return Registered(hook, "unchanged")
            fields = {"events": events, "enabled": True}
            return Registered(await api.update_webhook(app_id, hook["id"], fields), "updated")
        try:
            hook = await api.create_webhook(
                app_id, {"name": name, "url": url, "events": events, "enabled": True}
            )
        except TransientError:
            if attempt == _CREATE_TRIES:
                raise
            continue
        return Registered(hook, "created")
    raise AssertionError("unreachable")


# -- the record


def merged(
    existing: bytes | None, webhook_id: str, app_id: str, url: str, events: list[str]
) -> str:
    """The record's new text: `existing` (damaged: RecordDamaged) with this webhook set."""
    hooks = parse_record(existing) if existing is not None else {}
    hooks[webhook_id] = {"app_id": app_id, "url": redact(url), "events": list(events)}
    return json.dumps({"webhooks": hooks}, indent=1, sort_keys=True) + "\n"


class Record(Protocol):
    """Where the record lives: read it, then replace it with what `change` makes of it."""

    async def read(self) -> bytes | None: ...

    async def update(self, change: Callable[[bytes | None], str]) -> None: ...

    def __str__(self) -> str: ...


class FolderRecord:
    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / WEBHOOKS_NAME

    async def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    async def update(self, change: Callable[[bytes | None], str]) -> None:
        # Not under DIR's lock: `serve` holds it, and registering while it runs is the point.
        # The file is replaced whole (fsynced, renamed), so a reader sees old or new.
        write_atomic(self.path, change(await self.read()))

    def __str__(self) -> str:
        return str(self.path)


class BucketRecord:
    """The record as PREFIX/.rtk-export-webhooks.json, replaced with If-Match the version
    read (If-None-Match: * if none), so two registrations never undo each other."""

    def __init__(self, store: Any) -> None:
        self.store = store  # exporter.objectstore.client.Store
        self.key = store.target.key(WEBHOOKS_NAME)
        self._etag: str | None = None

    async def read(self) -> bytes | None:
        got = await self.store.get_bytes(self.key)
        if got is None:
            self._etag = None
            return None
        body, self._etag = got
        return bytes(body)

    async def update(self, change: Callable[[bytes | None], str]) -> None:
        from exporter.objectstore.client import PreconditionFailed, StoreError

        for _ in range(_PUT_TRIES):
            body = change(await self.read()).encode()
            cond = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
            try:
                await self.store.put(self.key, body, ContentType="application/json", **cond)
                return
            except PreconditionFailed:
                continue  # another registration wrote it meanwhile: merge with theirs
        raise StoreError(f"{self.key} keeps changing under this registration")

    def __str__(self) -> str:
        return f"s3://{self.store.bucket}/{self.key}"
