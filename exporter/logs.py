"""Log set-up: readable text lines for people, or one JSON object a line for collectors."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

from exporter.urls import redact_text

log = logging.getLogger("exporter")

# Attributes a LogRecord always has; anything else came in through `extra=` and is context.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name.rsplit(".", 1)[-1]),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "event":
                doc[key] = value
        # Tracebacks are left out on purpose: a frame's repr can hold request headers.
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        self.converter = time.gmtime

    def formatException(self, ei: Any) -> str:
        # Only the exception's type and message: no frames whose locals could show headers.
        return f"{ei[0].__name__}: {ei[1]}" if ei and ei[0] else ""


def setup(fmt: str = "text", verbose: int = 0) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    # aiohttp logs nothing we need; its debug lines could carry URLs. asyncio's debug line
    # ("Using selector") is no event of the run.
    for name in ("aiohttp", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_bug(exc: Exception, token: str) -> None:
    """An internal error with its traceback, redacted: an exception's message may quote a
    request (aiohttp's RequestInfo repr holds the headers) or a presigned URL, and a standard
    traceback prints the message, never a frame's locals."""
    # The bug itself, not anyio's wrapper around it.
    bug: BaseException = exc
    while isinstance(bug, BaseExceptionGroup) and len(bug.exceptions) == 1:
        bug = bug.exceptions[0]
    trace = "".join(traceback.format_exception(bug)).rstrip()
    log.critical(
        "rtk-export: internal error, the run stopped: %s\n%s",
        redact_text(f"{type(bug).__name__}: {bug}", token),
        redact_text(trace, token),
        extra={"event": "internal_error"},
    )


def unit_event(event: str, app_id: str | None, session_id: str | None, kind: str) -> dict[str, Any]:
    """The `extra` of a log line about one unit: its event and the keys the spec names."""
    return {"event": event, "app_id": app_id, "session_id": session_id, "kind": kind}
