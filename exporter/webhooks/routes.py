"""`.rtk-export-webhooks.json`, written by `webhooks register`: which app each registered
webhook belongs to, for serve to route deliveries (no payload names its app)."""

from __future__ import annotations

import json

from exporter.sessions import app_id_problem


def load_routes(data: bytes) -> dict[str, str]:
    """webhook id -> app id; ValueError naming the problem for a file that cannot be read.
    Entries whose app breaks the id rule are left out (their deliveries are unroutable)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError("the webhook registrations file is not JSON") from None
    hooks = doc.get("webhooks") if isinstance(doc, dict) else None
    if not isinstance(hooks, dict):
        raise ValueError("the webhook registrations file has no 'webhooks' object")
    routes = {}
    for hook_id, entry in hooks.items():
        app = entry.get("app_id") if isinstance(entry, dict) else None
        if isinstance(app, str) and app_id_problem(app) is None:
            routes[str(hook_id)] = app
    return routes
