"""Attachments as a stored chat CSV lists them: its image and file rows read back streaming (by
header name, as `csv` parses quotes and embedded newlines), and their payloads understood."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

log = logging.getLogger(__name__)

ATTACHMENT_TYPES = frozenset({"IMAGE_MESSAGE", "FILE_MESSAGE"})
_LINK_KEYS = ("link", "url", "downloadUrl")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")


@dataclass(frozen=True, slots=True)
class Payload:
    """What an image or file message names: its link (None if none), file name and size."""

    link: str | None
    name: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment unit: the message that links it, and its payload."""

    app_id: str
    session_id: str
    message_id: str  # as the row has it: checked before it names a file
    payload: Payload
    kind: str = "attachment"


def parse_payload(text: str) -> Payload:
    """The payload as a JSON object ({link|url|downloadUrl, name?, size?}), a JSON string, or a
    bare URL; a payload that names no link gives `link` None."""
    text = text.strip()
    if text.startswith(("{", '"')):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            return Payload(None)
        if isinstance(doc, str):
            return parse_payload(doc) if not doc.strip().startswith(("{", '"')) else Payload(None)
        if not isinstance(doc, dict):
            return Payload(None)
        link = next(
            (v.strip() for k in _LINK_KEYS if isinstance(v := doc.get(k), str) and v.strip()),
            None,
        )
        name, size = doc.get("name"), doc.get("size")
        return Payload(
            link if link and _looks_like_url(link) else None,
            name if isinstance(name, str) else None,
            size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        )
    return Payload(text if _looks_like_url(text) else None)


def _looks_like_url(text: str) -> bool:
    """A URL of any scheme (RFC 3986: `scheme:rest`), one word: so that `javascript:`,
    `data:` or `ftp://` links count as links, which the address rules then refuse."""
    return bool(_URL.match(text)) and len(text.split()) == 1


def iter_attachments(app_id: str, session_id: str, raw: IO[bytes]) -> Iterator[Attachment]:
    """Every image or file message of a chat CSV, in file order, one row in memory at a time.

    A CSV that cannot be parsed further (a field over csv's size limit, a NUL byte) ends the
    listing with a warning: rows already read stay listed.
    """
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, None)
        if header is None:
            return
        cols = {name.strip(): i for i, name in enumerate(header)}
        if not {"id", "payloadType", "payload"} <= cols.keys():
            log.warning(
                "%s/%s: the chat CSV has no id/payloadType/payload columns", app_id, session_id
            )
            return
        i_id, i_type, i_payload = cols["id"], cols["payloadType"], cols["payload"]
        width = max(i_id, i_type, i_payload)
        for row in reader:
            if len(row) <= width or row[i_type].strip() not in ATTACHMENT_TYPES:
                continue
            yield Attachment(app_id, session_id, row[i_id], parse_payload(row[i_payload]))
    except csv.Error as exc:
        log.warning(
            "%s/%s: the chat CSV cannot be read past line %d (%s): later attachments not listed",
            app_id,
            session_id,
            reader.line_num,
            exc,
        )
    finally:
        text.detach()
