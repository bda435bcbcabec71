"""`rtk-export webhooks register|list` against the stand-in on 127.0.0.1 (and moto's S3 for a
bucket archive): one webhook per URL however often it runs, its id -> app recorded in the
archive, and `load_routes` reading that record back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from exporter.archive import WEBHOOKS_NAME
from exporter.standin import CannedResponse, StandinServer, standin_in_thread
from exporter.webhooks.command import main
from exporter.webhooks.registry import events_for, webhook_url_problem
from exporter.webhooks.routes import RecordDamaged, load_routes
from tests.helpers import ACCOUNT, ROOT, TOKEN, standin_config
from tests.s3fakes import ACCESS_KEY, REGION, SECRET_KEY

APP = "app-reg"
HOOK_URL = "https://hooks.example.invalid/webhooks/realtimekit"  # stored, never connected to


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    with standin_in_thread(standin_config()) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StandinServer) -> None:
    server.webhooks.registered.clear()
    server.state.requests.clear()
    server.state.counters.api_requests = 0


def _env(server: StandinServer, **extra: str) -> dict[str, str]:
    return {
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
        "CLOUDFLARE_BASE_URL": server.base_url,
        **extra,
    }


def _register(server: StandinServer, out: str, *args: str, url: str = HOOK_URL) -> int:
    argv = ["register", "--app", APP, "--url", url, "--out", out, *args]
    return main(argv, _env(server, **{k: v for k, v in os.environ.items() if k.startswith("AWS")}))


def _record(out: Path) -> dict[str, dict[str, object]]:
    entries: dict[str, dict[str, object]] = json.loads((out / WEBHOOKS_NAME).read_text())[
        "webhooks"
    ]
    return entries


# -- pure


@pytest.mark.parametrize(
    ("kinds", "events"),
    [
        (("chat",), ["meeting.chatSynced"]),
        (("chat", "attachment"), ["meeting.chatSynced"]),
        (("attachment",), ["meeting.chatSynced"]),
        (
            ("chat", "transcript", "summary", "recording"),
            [
                "meeting.chatSynced",
                "meeting.transcript",
                "meeting.summary",
                "recording.statusUpdate",
            ],
        ),
    ],
)
def test_the_events_are_those_of_the_included_kinds(
    kinds: tuple[str, ...], events: list[str]
) -> None:
    assert events_for(kinds) == events


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (HOOK_URL, None),
        ("https://hooks.example.invalid:8443/x?k=v", None),
        ("http://hooks.example.invalid/x", "must be an https URL"),
        ("http://127.0.0.1:8080/webhooks/realtimekit", "must be an https URL"),
        ("hooks.example.invalid/x", "must be an https URL"),
        ("https:///x", "no host"),
        ("https://u:p@hooks.example.invalid/x", "user or password"),
        ("https://hooks.example.invalid/x#f", "fragment"),
        ("https://hooks.example.invalid/a b", "space or a control"),
        ("https://hooks.example.invalid:99999/", "malformed"),
    ],
)
def test_only_https_urls_are_registered(url: str, problem: str | None) -> None:
    """RealtimeKit posts over the internet: https, a host, no credentials in the URL."""
    got = webhook_url_problem(url)
    assert got is None if problem is None else problem in (got or "")


def test_http_to_loopback_only_when_a_caller_allows_it() -> None:
    """The demo and tests may register a local http serve; the command line never does."""
    assert webhook_url_problem("http://127.0.0.1:8080/w", allow_http_loopback=True) is None
    assert webhook_url_problem("http://[::1]:8080/w", allow_http_loopback=True) is None
    assert webhook_url_problem("http://hooks.example.invalid/w", allow_http_loopback=True)


def test_routes_are_read_from_a_record() -> None:
    data = b'{"webhooks": {"w1": {"app_id": "a1", "url": "https://h/x", "events": []}}}'
    assert load_routes(data) == {"w1": "a1"}
    assert load_routes(b'{"webhooks": {}}') == {}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"\x00\xff", "not JSON"),
        (b"[]", 'no "webhooks" object'),
        (b'{"webhooks": []}', 'no "webhooks" object'),
        (b'{"webhooks": {"w1": "a1"}}', "webhook 'w1' has no string app_id"),
        (b'{"webhooks": {"w\\u001b[2J": {"app_id": 3}}}', r"webhook 'w\\x1b\[2J'"),
    ],
)
def test_a_damaged_record_is_one_clear_error(data: bytes, reason: str) -> None:
    """Named after the file, saying what is wrong; a hostile key shown escaped."""
    with pytest.raises(RecordDamaged, match=reason) as caught:
        load_routes(data)
    assert WEBHOOKS_NAME in str(caught.value)


# -- against the stand-in


def test_register_creates_the_webhook_and_records_it(
    server: StandinServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One listing and one POST; the record holds id -> app, URL and events."""
    assert _register(server, str(tmp_path)) == 0
    (hook,) = server.webhooks.of_app(APP)
    assert hook.url == HOOK_URL and hook.events == ["meeting.chatSynced"] and hook.enabled
    assert hook.name == "rtk-export"
    assert _record(tmp_path) == {
        hook.id: {"app_id": APP, "url": HOOK_URL, "events": ["meeting.chatSynced"]}
    }
    assert server.state.counters.api_requests == 2
    out = capsys.readouterr().out
    assert out.startswith(f"created webhook {hook.id} of app {APP}: {HOOK_URL}")
    assert {r.headers.get("Authorization") for r in server.state.records()} == {f"Bearer {TOKEN}"}


def test_register_twice_is_one_webhook_and_a_new_include_updates_it(
    server: StandinServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same URL again: unchanged (no write request); other kinds: the same webhook PATCHed;
    a disabled one is enabled again."""
    assert _register(server, str(tmp_path)) == 0
    assert _register(server, str(tmp_path)) == 0
    (hook,) = server.webhooks.of_app(APP)
    assert [r.method for r in server.state.records("api")] == ["GET", "POST", "GET"]
    assert _register(server, str(tmp_path), "--include", "attachments,transcript,recordings") == 0
    assert server.webhooks.of_app(APP) == [hook]
    assert hook.events == ["meeting.chatSynced", "meeting.transcript", "recording.statusUpdate"]
    hook.enabled = False
    assert _register(server, str(tmp_path), "--include", "chat,transcript,recordings") == 0
    assert hook.enabled and len(server.webhooks.of_app(APP)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["created", "unchanged", "updated", "updated"]
    assert list(_record(tmp_path)) == [hook.id]
    assert _record(tmp_path)[hook.id]["events"] == hook.events


def test_the_record_keeps_other_entries_and_never_a_query(
    server: StandinServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entries already there stay; a URL's query goes to RealtimeKit, not to the record or
    the terminal."""
    (tmp_path / WEBHOOKS_NAME).write_text(
        '{"webhooks": {"old": {"app_id": "other", "url": "https://h/o", "events": []}}}'
    )
    url = HOOK_URL + "?key=SECRET-in-query"
    assert _register(server, str(tmp_path), url=url) == 0
    (hook,) = server.webhooks.of_app(APP)
    assert hook.url == url
    record = _record(tmp_path)
    assert set(record) == {"old", hook.id} and record[hook.id]["url"] == HOOK_URL
    assert "SECRET" not in (tmp_path / WEBHOOKS_NAME).read_text()
    assert "SECRET" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:9/w"], "must be an https URL"),
        (["--include", "chat,nope"], "--include takes"),
        (["--app", "bad app"], "app id"),
    ],
)
def test_bad_arguments_exit_2_before_any_request(
    server: StandinServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    argv = ["register", "--app", APP, "--url", HOOK_URL, "--out", str(tmp_path), *args]
    assert main(argv, _env(server)) == 2
    assert message in capsys.readouterr().err
    assert server.state.records() == [] and not (tmp_path / WEBHOOKS_NAME).exists()


def test_no_token_exits_2(server: StandinServer, capsys: pytest.CaptureFixture[str]) -> None:
    env = _env(server)
    del env["CLOUDFLARE_API_TOKEN"]
    assert main(["list", "--app", APP], env) == 2
    assert "CLOUDFLARE_API_TOKEN" in capsys.readouterr().err


def test_a_damaged_record_stops_before_any_request_and_is_left_alone(
    server: StandinServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / WEBHOOKS_NAME).write_text("{not json")
    assert _register(server, str(tmp_path)) == 2
    assert "is damaged: not JSON" in capsys.readouterr().err
    assert server.state.records() == []
    assert (tmp_path / WEBHOOKS_NAME).read_text() == "{not json"


def test_a_create_that_fails_lists_again_before_trying_once_more(
    server: StandinServer, tmp_path: Path
) -> None:
    """A 503 on the POST: the next try lists first (a lost answer may have registered it),
    then creates: one webhook."""
    path = f"/accounts/{ACCOUNT}/realtime/kit/{APP}/webhooks"
    server.script(path, CannedResponse(200, {"success": True, "data": []}), CannedResponse(503))
    assert _register(server, str(tmp_path)) == 0
    assert [r.method for r in server.state.records("api")] == ["GET", "POST", "GET", "POST"]
    assert len(server.webhooks.of_app(APP)) == 1


def test_an_api_error_exits_2_with_the_apis_message(
    server: StandinServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _env(server, CLOUDFLARE_API_TOKEN="wrong-token")
    assert main(["register", "--app", APP, "--url", HOOK_URL, "--out", str(tmp_path)], env) == 2
    err = capsys.readouterr().err
    assert "token was refused" in err and "wrong-token" not in err
    assert not (tmp_path / WEBHOOKS_NAME).exists()


def test_list_prints_each_webhook_without_a_query_and_escapes_hostile_names(
    server: StandinServer, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = server.webhooks
    one = hooks.create(
        APP, {"name": "n1", "url": HOOK_URL + "?t=SECRET", "events": ["meeting.ended"]}
    )
    two = hooks.create(
        APP,
        {
            "name": "evil\x1b[2J\u202e",
            "url": "https://b.example.invalid/",
            "events": ["meeting.chatSynced", "meeting.summary"],
            "enabled": False,
        },
    )
    assert main(["list", "--app", APP], _env(server)) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{one.id}\tenabled\tn1\t{HOOK_URL}\tmeeting.ended",
        f"{two.id}\tdisabled\tevil\\u001b[2J\\u202e\thttps://b.example.invalid/"
        "\tmeeting.chatSynced,meeting.summary",
    ]
    assert server.state.counters.api_requests == 1


def test_the_command_line_dispatches_webhooks(server: StandinServer, tmp_path: Path) -> None:
    """`python -m exporter webhooks register ...` as a user types it."""
    env = {**os.environ, **_env(server), "PYTHONPATH": str(ROOT)}
    argv = ["webhooks", "register", "--app", APP, "--url", HOOK_URL, "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "exporter", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(server.webhooks.of_app(APP)) == 1 and len(_record(tmp_path)) == 1


def test_a_bucket_archive_records_the_webhook_by_conditional_put(
    server: StandinServer, bucket: str, moto_server: str
) -> None:
    """s3://BUCKET/PREFIX: the record is PREFIX/.rtk-export-webhooks.json, merged on reruns."""
    out = f"s3://{bucket}/arch"
    assert _register(server, out) == 0
    assert _register(server, out, url=HOOK_URL + "2") == 0
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    body = s3.get_object(Bucket=bucket, Key=f"arch/{WEBHOOKS_NAME}")["Body"].read()
    assert load_routes(body) == {h.id: APP for h in server.webhooks.of_app(APP)}
    assert len(load_routes(body)) == 2
