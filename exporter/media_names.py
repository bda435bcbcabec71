"""Where attachments and recordings live in DIR, and which ids and extensions may be part of a
name there: an id or extension from an API answer or a chat row is used only if it is plain."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote, urlsplit

_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_EXT = re.compile(r"[A-Za-z0-9]{1,10}")
RECORDING_EXT = "mp4"


def id_problem(value: object, what: str) -> str | None:
    """Why `value` cannot name a file (a message or recording id), or None."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        shown = value[:60] if isinstance(value, str) else type(value).__name__
        return f"{what} {shown!r} is not 1 to 200 characters of [A-Za-z0-9_-]"
    return None


def recorded_id(value: str) -> str:
    """An id as a manifest line names it (spec, "Attachments and recordings"): as read up to
    1,000 characters, else its first 100, `...` and the SHA-256 of the whole, so that two
    different ids never share a line (a cut alone would let a long invalid id equal a valid one)."""
    if len(value) <= 1000:
        return value
    return value[:100] + "..." + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def ext_of_name(name: object) -> str | None:
    """The extension of a file name, if it is 1 to 10 characters of [A-Za-z0-9]."""
    if not isinstance(name, str) or "." not in name:
        return None
    ext = name.rsplit(".", 1)[1]
    return ext if _EXT.fullmatch(ext) else None


def ext_of_url(url: object) -> str | None:
    """The extension of the last segment of a URL's path, under the same rule."""
    if not isinstance(url, str):
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return ext_of_name(unquote(path.rsplit("/", 1)[-1]))


def extension(name: object, url: object) -> str | None:
    """The spec's rule: from the given file name, else from the URL's path, else none."""
    return ext_of_name(name) or ext_of_url(url)


def attachment_path(app_id: str, session_id: str, message_id: str, ext: str | None) -> str:
    """DIR-relative: `<app>/<session>.attachments/<message_id>[.<ext>]` (ids checked)."""
    name = f"{message_id}.{ext}" if ext else message_id
    return f"{app_id}/{session_id}.attachments/{name}"


def recording_path(app_id: str, session_id: str, recording_id: str, ext: str | None) -> str:
    """DIR-relative: `<app>/<session>.recordings/<recording_id>.<ext>` (mp4 by default)."""
    return f"{app_id}/{session_id}.recordings/{recording_id}.{ext or RECORDING_EXT}"
