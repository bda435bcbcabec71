"""`.rtk-export-webhooks.json`, written by `webhooks register`: which app each registered
webhook belongs to, for serve to route deliveries (no payload names its app)."""

from __future__ import annotations

import json
from typing import Any

from exporter.archive import WEBHOOKS_NAME
from exporter.errors import FatalError
from exporter.sessions import app_id_problem


class RecordDamaged(FatalError):
    """The archive's webhook record cannot be read: `register` replaces nothing and stops;
    `serve` keeps the routes it had and logs it."""

    kind = "webhook_record"


def parse_record(data: bytes) -> dict[str, dict[str, Any]]:
    """The record's entries (webhook id -> {app_id, url, events}); RecordDamaged naming
    what is wrong with it."""
    where = WEBHOOKS_NAME
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise RecordDamaged(f"{where} is damaged: not JSON") from None
    hooks = doc.get("webhooks") if isinstance(doc, dict) else None
    if not isinstance(hooks, dict):
        raise RecordDamaged(f'{where} is damaged: no "webhooks" object')
    for webhook_id, entry in hooks.items():
        app = entry.get("app_id") if isinstance(entry, dict) else None
        if not isinstance(app, str) or not app:
            shown = ascii(webhook_id[:64])
            raise RecordDamaged(f"{where} is damaged: webhook {shown} has no string app_id")
    return hooks


def load_routes(data: bytes) -> dict[str, str]:
    """Webhook id -> app id; RecordDamaged for a file that is not a record. An app that breaks
    the id rule is left out: its deliveries are unroutable, kept, not exported."""
    return {
        hook: entry["app_id"]
        for hook, entry in parse_record(data).items()
        if app_id_problem(entry["app_id"]) is None
    }
