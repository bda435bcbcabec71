"""A local RealtimeKit stand-in on 127.0.0.1: the sessions API and presigned downloads, with
seeded fault injection, scripted answers and a record of every request it received; and
webhooks (registration, the signing key, signed deliveries with retries)."""

from exporter.standin.app import build_app
from exporter.standin.content import Content, expected_body
from exporter.standin.model import (
    API_PREFIX,
    CHAT_CSV_HEADER,
    CannedResponse,
    FaultRates,
    SessionSpec,
    StandinConfig,
)
from exporter.standin.server import (
    StandinServer,
    config_from_args,
    main,
    run_standin,
    standin_in_thread,
)
from exporter.standin.state import Counters, Headers, RecordedRequest, StandinState
from exporter.standin.webhooks import (
    EVENTS,
    FAKE_STREAM_KEY_PREFIX,
    WELL_KNOWN,
    Attempt,
    Delivery,
    Webhook,
    Webhooks,
    livestream_payload,
)

__all__ = [
    "API_PREFIX",
    "CHAT_CSV_HEADER",
    "EVENTS",
    "FAKE_STREAM_KEY_PREFIX",
    "WELL_KNOWN",
    "Attempt",
    "CannedResponse",
    "Content",
    "Counters",
    "Delivery",
    "FaultRates",
    "Headers",
    "RecordedRequest",
    "SessionSpec",
    "StandinConfig",
    "StandinServer",
    "StandinState",
    "Webhook",
    "Webhooks",
    "build_app",
    "config_from_args",
    "expected_body",
    "livestream_payload",
    "main",
    "run_standin",
    "standin_in_thread",
]
