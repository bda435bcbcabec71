"""A chat CSV read as messages: streamed, columns by header name, hashed while read, and any
damage (bad UTF-8, a torn quote, a short row, a digest that differs) raised as `Damaged`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

REQUIRED = ("id", "displayName", "payloadType", "payload", "createdAt")
_FIELD_LIMIT = 16 * 1024 * 1024  # a message longer than this is damage, not chat
_CHUNK = 64 * 1024


class Damaged(Exception):
    """A file that cannot be read as what the archive says it is; str() says why."""


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    name: str
    kind: str  # TEXT_MESSAGE, IMAGE_MESSAGE, FILE_MESSAGE, or whatever the CSV says
    text: str  # the payload as typed (for a text message)
    created: str  # as written in the CSV
    when: datetime | None  # `created` parsed, in UTC
    pinned: bool
    edited: bool
    link: str | None  # image and file messages: the link the payload names
    file_name: str | None
    file_size: int | None


class HashingReader(io.RawIOBase):
    """A binary file that hashes what is read from it and counts the bytes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha.update(data)
        self.size += n
        return n

    def finish(self, sha256: str | None, size: int | None) -> None:
        """Read what is left and compare with the manifest's record."""
        while chunk := self._raw.read(_CHUNK):
            self.sha.update(chunk)
            self.size += len(chunk)
        if size is not None and self.size != size:
            raise Damaged(f"is {self.size} bytes, the manifest says {size}")
        if sha256 is not None and self.sha.hexdigest() != sha256:
            raise Damaged("does not match its SHA-256 in the manifest")


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 / ISO 8601 time in UTC; None when it is not one (it is shown as written)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the export writes UTC
    return when.astimezone(UTC)


def _flag(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes")


def payload_link(payload: str) -> tuple[str | None, str | None, int | None]:
    """(link, file name, size) of an image or file payload: a JSON object naming `link`, `url`
    or `downloadUrl` (with optional `name` and `size`), or a bare URL."""
    text = payload.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            link = next(
                (v for k in ("link", "url", "downloadUrl") if isinstance(v := doc.get(k), str)),
                None,
            )
            name = doc.get("name")
            size = doc.get("size")
            return (
                link,
                name if isinstance(name, str) else None,
                size if isinstance(size, int) and not isinstance(size, bool) else None,
            )
    if text and not any(c.isspace() for c in text) and "://" in text:
        return text, None, None
    return None, None, None


def read_messages(
    path: Path, sha256: str | None = None, size: int | None = None
) -> Iterator[Message]:
    """The messages of one chat CSV in file order; Damaged (after any messages already
    yielded) when the file is not a whole, readable chat export matching the manifest."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as exc:
        raise Damaged(f"cannot be read: {exc.strerror or exc}") from None
    hashing = HashingReader(fh)
    try:
        text = io.TextIOWrapper(
            io.BufferedReader(hashing, _CHUNK), encoding="utf-8-sig", newline=""
        )
        yield from _rows(csv.reader(text, strict=True))
        hashing.finish(sha256, size)
    except UnicodeDecodeError:
        raise Damaged("is not valid UTF-8") from None
    except csv.Error as exc:
        raise Damaged(f"is not a readable CSV ({exc})") from None
    except OSError as exc:
        raise Damaged(f"cannot be read: {exc.strerror or exc}") from None
    finally:
        fh.close()


def _rows(reader: Iterator[list[str]]) -> Iterator[Message]:
    old_limit = csv.field_size_limit(_FIELD_LIMIT)
    try:
        header = next(reader, None)
        if header is None:
            raise Damaged("is empty (no header row)")
        columns = {name.strip(): i for i, name in enumerate(header)}
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise Damaged(f"has no column {', '.join(missing)}")
        width = len(header)
        get = {name: columns.get(name) for name in (*REQUIRED, "pinned", "isEdited")}
        for number, row in enumerate(reader, start=2):
            if len(row) != width:
                if not row:
                    continue  # a blank line
                raise Damaged(f"row {number} has {len(row)} fields, the header {width}")
            yield _message(row, get)
    finally:
        csv.field_size_limit(old_limit)


def _message(row: list[str], get: dict[str, int | None]) -> Message:
    def col(name: str) -> str:
        i = get[name]
        return row[i] if i is not None else ""

    kind, payload, created = col("payloadType").strip(), col("payload"), col("createdAt")
    link = file_name = None
    file_size = None
    if kind in ("IMAGE_MESSAGE", "FILE_MESSAGE"):
        link, file_name, file_size = payload_link(payload)
    return Message(
        id=col("id"),
        name=col("displayName"),
        kind=kind,
        text=payload,
        created=created,
        when=parse_time(created),
        pinned=_flag(col("pinned")),
        edited=_flag(col("isEdited")),
        link=link,
        file_name=file_name,
        file_size=file_size,
    )
