"""The spec's outside, driven as a user types it: a demo archive rendered and verified, with
standard output holding nothing that was not asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_render_anywhere_in_dir_is_not_reported_by_verify_and_stdout_stays_empty(
    tmp_path: Path,
) -> None:
    """After the demo (chat, attachments, recordings), render to the default DIR/html and to
    another folder inside DIR, then export again: verify passes each time, and the demo,
    render and an intact verify print nothing on standard output."""
    out = tmp_path / "archive"
    demo = cli("demo", "--out", str(out))
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout == ""
    for to in ((), ("--to", str(out / "site")), ("--to", str(out / "html" / "again"))):
        render = cli("render", str(out), *to)
        assert render.returncode == 0, render.stderr
        assert render.stdout == ""
        site = Path(to[1]) if to else out / "html"
        assert (site / "index.html").is_file()
        verify = cli("verify", str(out))
        assert (verify.returncode, verify.stdout) == (0, ""), verify.stdout + verify.stderr
    again = cli("demo", "--out", str(out))
    assert again.returncode == 0, again.stderr
    verify = cli("verify", str(out))
    assert (verify.returncode, verify.stdout) == (0, ""), verify.stdout + verify.stderr
    stray = out / "html" / "notes.txt"
    stray.write_text("mine", encoding="utf-8")
    verify = cli("verify", str(out))
    assert verify.returncode == 1 and verify.stdout == "untracked: html/notes.txt\n"
