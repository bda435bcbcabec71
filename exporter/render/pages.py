"""The pages as HTML: one Jinja2 environment (autoescape on), the inline style and script with
the Content-Security-Policy that admits them by hash, the search index as inert JSON, and
atomic writes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from exporter.archive import temp_name

_TEMPLATES = resources.files("exporter.render") / "templates"


def _asset(name: str) -> str:
    return (_TEMPLATES / name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


STYLE = _asset("site.css")
SCRIPT = _asset("filter.js")
# Pages rendered from other templates are rendered again (the record keeps this digest).
DIGEST = hashlib.sha256(
    "\0".join(
        _asset(n) for n in ("base.html", "session.html", "index.html", "site.css", "filter.js")
    ).encode()
).hexdigest()[:16]


def csp(script: bool) -> str:
    """No remote load, no plugin, no base or form target; images and recordings from the local
    disk only ('self' on file://, the site's own origin when served); the one inline style and
    (on index pages) the one inline script, each by its hash."""
    return "; ".join(
        (
            "default-src 'none'",
            "img-src 'self'",
            "media-src 'self'",
            f"style-src {_hash(STYLE)}",
            f"script-src {_hash(SCRIPT) if script else chr(39) + 'none' + chr(39)}",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("exporter.render", "templates"),
    autoescape=True,  # every template is HTML, and every value in it came from a stranger
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals.update(style=Markup(STYLE))  # noqa: S704 - our own file, hashed into the CSP


def keep_cr(value: str) -> Markup:
    """Escaped text whose carriage returns survive: a browser turns a raw CR LF into LF, but
    not a character reference, so the DOM holds the message exactly as typed."""
    return Markup(str(escape(value)).replace("\r", "&#13;"))  # noqa: S704 - escaped first


ENV.filters["keep_cr"] = keep_cr


def session_page(context: dict[str, Any]) -> Iterator[str]:
    """The session page, streamed as the messages are read."""
    return ENV.get_template("session.html").generate(csp=csp(script=False), **context)


def index_page(context: dict[str, Any], search: Iterable[str]) -> Iterator[str]:
    """An index page, streamed; `search` gives each row's words for the filter, in order."""
    return ENV.get_template("index.html").generate(
        csp=csp(script=True),
        script=Markup(SCRIPT),  # noqa: S704 - our own file, hashed into the CSP
        search=(Markup(inert_json(words)) for words in search),  # noqa: S704 - inert_json
        **context,
    )


def inert_json(value: object) -> str:
    """JSON that cannot end or comment its <script type="application/json"> element: no
    `<`, `>` or `&` left (each is a \\u escape, which JSON.parse reads back)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def write_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write the page under a temporary name in its folder and rename it into place. A
    failure (also of the chunks' source) leaves no file. No fsync: a page lost to a crash is
    rendered again, since the record is committed after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp_name(str(path)))
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            # Jinja yields a piece per template node: join them into larger writes.
            buffer: list[str] = []
            for chunk in chunks:
                buffer.append(chunk)
                if len(buffer) >= 512:
                    out.write("".join(buffer))
                    buffer.clear()
            out.write("".join(buffer))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
