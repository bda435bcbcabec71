"""What a delivery means: the signature checked over the raw bytes before anything else, then
the event read, its app found, and the delivery kept (durably, once) or set aside; the status
to answer. RealtimeKit never resends a 4xx, so nothing that could be kept gets one."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from exporter.errors import ExportError
from exporter.sessions import app_id_problem, session_id_problem
from exporter.webhooks.events import EVENTS_FOR_KIND, Rejected, WebhookUnit, parse_event
from exporter.webhooks.inbox import REJECTED, UNROUTABLE, Item, delivery_name
from exporter.webhooks.source import Inbox

log = logging.getLogger("exporter.serve")

ROUTES_RELOAD = 60.0  # seconds between re-reads of the registrations for an unknown webhook id
_KNOWN_EVENTS = frozenset(EVENTS_FOR_KIND.values()) | {
    "meeting.started",
    "meeting.ended",
    "meeting.participantJoined",
    "meeting.participantLeft",
    "livestreaming.statusUpdate",
}


class Key(Protocol):
    @property
    def ready(self) -> bool: ...

    async def check(self, raw: bytes, signature: str) -> bool: ...


def event_label(event: str | None) -> str:
    """A metric label: the documented events by name, anything else (hostile) as `other`."""
    return event if event is not None and event in _KNOWN_EVENTS else "other"


class Receiver:
    def __init__(
        self,
        key: Key,
        inbox: Inbox,
        kinds: frozenset[str],
        notify: Callable[[str], None],
        load_routes: Callable[[], Awaitable[Mapping[str, str]]],
        default_app: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self._inbox = inbox
        self._kinds = kinds
        self._notify = notify
        self._load_routes = load_routes
        self._default_app = default_app
        self._clock = clock
        self._routes: Mapping[str, str] = {}
        self._routes_at: float | None = None
        self.deliveries: Counter[tuple[str, str]] = Counter()  # (event, outcome) -> count
        self.inbox_failing = False

    async def load_routes(self) -> None:
        self._routes_at = self._clock()
        try:
            self._routes = await self._load_routes()
        except (OSError, ValueError, ExportError) as exc:
            log.warning("the webhook registrations cannot be read: %s", exc)

    async def accept(self, raw: bytes, headers: Mapping[str, str]) -> int:
        """The status to answer for one delivery."""
        if not self._key.ready:
            return 503
        signature = headers.get("rtk-signature")
        if not signature:
            self.deliveries["unknown", "missing_signature"] += 1
            return 400
        try:
            valid = await self._key.check(raw, signature)
        except ExportError:  # no key and none to be had now: not the sender's fault
            return 503
        if not valid:
            self.deliveries["unknown", "bad_signature"] += 1
            return 401
        # With no id to dedupe on, the body's digest: the same bytes are the same delivery.
        delivery = headers.get("rtk-uuid") or "sha256-" + hashlib.sha256(raw).hexdigest()
        hook = headers.get("rtk-webhook-id")
        item = Item(delivery, time.time(), hook, raw)
        try:
            event, units = parse_event(raw)
        except Rejected as exc:
            return await self._aside(item, REJECTED, str(exc), "unknown", "rejected")
        label = event_label(event)
        wanted = [u for u in units if u.kind in self._kinds]
        if not wanted:  # not archived here (another event, a kind not included): not kept
            self.deliveries[label, "ignored"] += 1
            return 200
        for unit in wanted:
            if problem := session_id_problem(unit.session_id):
                return await self._aside(
                    item, REJECTED, f"session id: {problem}", label, "rejected"
                )
        app = await self._app_of(hook, wanted[0])
        if app is None:
            log.warning(
                "delivery %s (%s) names no app this serve can route: kept in %s, not exported",
                delivery_name(delivery),
                label,
                UNROUTABLE,
                extra={"event": "unroutable", "delivery_id": delivery_name(delivery)},
            )
            return await self._aside(item, UNROUTABLE, "no app", label, "unroutable")
        item = Item(delivery, item.received_at, hook, raw, app, label)
        try:
            new = await self._inbox.put(item)
        except (OSError, ExportError) as exc:
            return self._cannot_keep(label, exc)
        self.inbox_failing = False
        self.deliveries[label, "stored" if new else "duplicate"] += 1
        if new:
            self._notify(delivery_name(delivery))
        return 200

    async def _aside(self, item: Item, where: str, reason: str, label: str, outcome: str) -> int:
        try:
            await self._inbox.put_aside(dataclasses.replace(item, reason=reason), where)
        except (OSError, ExportError) as exc:
            return self._cannot_keep(label, exc)
        self.deliveries[label, outcome] += 1
        return 200

    def _cannot_keep(self, label: str, exc: Exception) -> int:
        self.inbox_failing = True
        self.deliveries[label, "unavailable"] += 1
        why = exc.strerror if isinstance(exc, OSError) else getattr(exc, "message", str(exc))
        log.error("a delivery cannot be kept (answered 503): %s", why, extra={"event": "inbox"})
        return 503

    async def _app_of(self, hook: str | None, unit: WebhookUnit) -> str | None:
        """The registration's app, else the one --app, else the payload's organizer id."""
        if hook is not None and hook not in self._routes:
            stale = self._routes_at is None or self._clock() - self._routes_at >= ROUTES_RELOAD
            if stale:
                await self.load_routes()
        for app in (self._routes.get(hook or ""), self._default_app, unit.app_hint):
            if app is not None:
                return app if app_id_problem(app) is None else None
        return None
