"""The exception tree: raised at the HTTP boundary, retried in one place, recorded per pair.

    ExportError                 .kind for the manifest, .http_status; str() is safe to log
    |-- TransientError          retried (connection, timeout, 408, 409, 429, 5xx); .retry_after
    |   |-- RateLimited         429 from the API: pauses every API request, never fails a pair
    |   |-- LinkExpired         the presigned URL expired: ask for a fresh one
    |   `-- IncompleteDownload  fewer or more bytes than announced
    |-- PermanentError          not retried (other 4xx, success:false, malformed body, bad URL)
    |   |-- Unavailable         404 for a transcript or summary that was never produced
    |   |-- Refused             an attachment link the address rules refuse: no request made
    |   |-- TooLarge            an attachment over --attachment-max-bytes: nothing kept
    |   `-- InvalidItem         a message or recording id that cannot name a file
    `-- FatalError              stops the run (token rejected, disk full) -> exit 2

Messages never hold the token or a presigned URL's query string: they are written to the
manifest and to logs as they are.
"""

from __future__ import annotations


class ExportError(Exception):
    """A failure of one unit of work, described safely enough to log and record."""

    kind = "error"

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status

    def as_record(self) -> dict[str, object]:
        return {"kind": self.kind, "message": self.message, "http_status": self.http_status}


class TransientError(ExportError):
    """Worth another attempt, after `retry_after` seconds if the server said so."""

    kind = "transient"

    def __init__(
        self, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after = retry_after


class RateLimited(TransientError):
    kind = "rate_limited"


class LinkExpired(TransientError):
    kind = "link_expired"


class IncompleteDownload(TransientError):
    kind = "incomplete_download"


class PermanentError(ExportError):
    kind = "permanent"


class Unavailable(PermanentError):
    kind = "unavailable"


class Refused(PermanentError):
    kind = "refused"


class TooLarge(PermanentError):
    kind = "too_large"


class InvalidItem(PermanentError):
    kind = "invalid"


class FatalError(ExportError):
    """Stops the whole run: retrying any pair cannot help."""

    kind = "fatal"


class AuthError(FatalError):
    kind = "auth"


class DiskError(FatalError):
    kind = "disk"


def transient_status(status: int) -> bool:
    """An HTTP status worth another try (spec: 408, 409, 429 and 5xx), whoever answered it."""
    return status in (408, 409, 429) or status >= 500
