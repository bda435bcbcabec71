"""Reading a stored chat CSV for its attachments: payload forms, rows by header name, the
names attachments and recordings get in DIR."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.attachments import iter_attachments, parse_payload
from exporter.config import parse_include, parse_size
from exporter.media_names import (
    attachment_path,
    extension,
    id_problem,
    recording_path,
)

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}\.[a-z]{2,6}", fullmatch=True)
paths = st.lists(st.from_regex(r"[A-Za-z0-9._~-]{1,12}", fullmatch=True), max_size=4)
urls = st.builds(lambda h, p: f"https://{h}/" + "/".join(p), hosts, paths)
names = st.text(max_size=40)
sizes = st.none() | st.integers(0, 2**40)


@given(urls, st.sampled_from(["link", "url", "downloadUrl"]), names, sizes)
def test_a_json_payload_names_its_link_under_any_of_the_three_keys(
    url: str, key: str, name: str, size: int | None
) -> None:
    """{link|url|downloadUrl, name?, size?} gives the link, and the name and size as given."""
    doc: dict[str, object] = {key: url, "name": name}
    if size is not None:
        doc["size"] = size
    got = parse_payload(json.dumps(doc))
    assert (got.link, got.name, got.size) == (url, name, size)


@given(urls)
def test_a_bare_url_and_a_json_string_are_links_too(url: str) -> None:
    """A payload that is the URL itself, plain or as a JSON string, is the link."""
    assert parse_payload(url).link == url
    assert parse_payload(f"  {url}\n").link == url
    assert parse_payload(json.dumps(url)).link == url


@given(
    st.one_of(
        st.text().filter(lambda t: ":" not in t or len(t.split()) != 1),
        st.dictionaries(st.sampled_from(["name", "size", "type"]), st.text(max_size=10)).map(
            json.dumps
        ),
        st.sampled_from(['{"link": 5}', '{"link": ""}', "[1,2]", "{not json", '"plain"', "null"]),
    )
)
def test_a_payload_naming_no_link_gives_none(payload: str) -> None:
    """Text, an object without a link key, a link that is not a string: no link."""
    assert parse_payload(payload).link is None


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "ftp://127.0.0.1/x.png",
        "file:///etc/passwd",
        "mailto:a@example.com",
    ],
)
def test_a_link_of_any_scheme_is_a_link_for_the_rules_to_refuse(link: str) -> None:
    """A payload naming a `javascript:`, `data:`, `ftp:` or `file:` URL names a link (which
    the address rules then refuse), bare or under a link key: it is not a message without one."""
    assert parse_payload(link).link == link
    assert parse_payload(json.dumps({"link": link, "name": "x.png"})).link == link


def _csv(header: list[str], rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@given(
    st.permutations(["id", "participantId", "payloadType", "payload", "displayName", "createdAt"]),
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True),
            st.sampled_from(["TEXT_MESSAGE", "IMAGE_MESSAGE", "FILE_MESSAGE"]),
            urls,
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
        ),
        max_size=12,
    ),
)
def test_rows_are_read_by_header_name_whatever_the_column_order(
    header: list[str], rows: list[tuple[str, str, str, str]]
) -> None:
    """Image and file rows are found in file order, by column name, through quotes, commas
    and embedded newlines in the other columns; text rows are passed over."""
    body = _csv(
        header,
        [
            {
                "id": mid,
                "payloadType": kind,
                "payload": url,
                "displayName": text,
                "participantId": "p",
                "createdAt": text,
            }
            for mid, kind, url, text in rows
        ],
    )
    found = list(iter_attachments("a", "s", io.BytesIO(body)))
    wanted = [(mid, url) for mid, kind, url, _ in rows if kind != "TEXT_MESSAGE"]
    assert [(f.message_id, f.payload.link) for f in found] == wanted


def test_a_csv_without_the_columns_lists_nothing() -> None:
    """A CSV without id/payloadType/payload columns (not a chat export) gives no attachment."""
    assert list(iter_attachments("a", "s", io.BytesIO(b"x,y\n1,2\n"))) == []
    assert list(iter_attachments("a", "s", io.BytesIO(b""))) == []


def test_a_broken_csv_keeps_the_rows_before_the_break() -> None:
    """A field past csv's size limit stops the reading with a warning; the attachments before
    it are listed."""
    huge = b'"' + b"x" * (csv.field_size_limit() + 10) + b'"'
    body = b"id,payloadType,payload\nm1,IMAGE_MESSAGE,https://h.example/a.png\n"
    body += b"m2,IMAGE_MESSAGE," + huge + b"\nm3,IMAGE_MESSAGE,https://h.example/b.png\n"
    assert [a.message_id for a in iter_attachments("a", "s", io.BytesIO(body))] == ["m1"]


@pytest.mark.parametrize(
    ("name", "url", "ext"),
    [
        ("report.pdf", "https://h/x.bin", "pdf"),  # the payload's name wins
        (None, "https://h/a/b/photo.JPG?sig=1", "JPG"),
        ('report, final "v2".pdf', None, "pdf"),
        ("archive.tar.gz", None, "gz"),
        ("noext", "https://h/file", None),
        ("bad.ext with space", "https://h/x", None),
        ("x.abcdefghijk", "https://h/y.png", "png"),  # 11 characters: the URL's then
        (None, "https://h/%2e%2e%2fetc.passwd", "passwd"),  # only the plain tail is used
        ("evil.p/ng", "https://h/a", None),
    ],
)
def test_extensions_are_plain_or_absent(name: str | None, url: str | None, ext: str | None) -> None:
    """The extension is 1-10 of [A-Za-z0-9], from the name, else the URL's path, else none."""
    assert extension(name, url) == ext


@given(st.text(max_size=300))
def test_only_plain_ids_name_files(value: str) -> None:
    """An id is usable exactly when it is 1-200 of [A-Za-z0-9_-]: never a path of its own."""
    ok = 1 <= len(value) <= 200 and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    assert (id_problem(value, "message id") is None) == ok
    if ok:
        assert attachment_path("a", "s", value, None) == f"a/s.attachments/{value}"
        assert recording_path("a", "s", value, None) == f"a/s.recordings/{value}.mp4"


def test_include_spellings_and_attachments_imply_chat() -> None:
    """Plural and singular spellings; attachments bring chat in, first; unknown kinds refused."""
    assert parse_include("attachments") == ("chat", "attachment")
    assert parse_include("recording") == ("recording",)
    assert parse_include("recordings,attachment,chat") == ("recording", "attachment", "chat")
    with pytest.raises(ValueError, match="--include"):
        parse_include("chat,videos")


def test_sizes_take_binary_suffixes() -> None:
    """Bytes, KiB, MiB and GiB; zero and other words refused."""
    assert [parse_size(t) for t in ("1", "512KiB", "100MiB", "1GiB")] == [
        1,
        512 << 10,
        100 << 20,
        1 << 30,
    ]
    for bad in ("0", "1.5GiB", "1GB", "lots", "-3"):
        with pytest.raises(ValueError):
            parse_size(bad)
