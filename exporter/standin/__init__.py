"""A local RealtimeKit stand-in on 127.0.0.1: the sessions API and presigned downloads, with
seeded fault injection, scripted answers and a record of every request it received."""

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

__all__ = [
    "API_PREFIX",
    "CHAT_CSV_HEADER",
    "CannedResponse",
    "Content",
    "Counters",
    "FaultRates",
    "Headers",
    "RecordedRequest",
    "SessionSpec",
    "StandinConfig",
    "StandinServer",
    "StandinState",
    "build_app",
    "config_from_args",
    "expected_body",
    "main",
    "run_standin",
    "standin_in_thread",
]
