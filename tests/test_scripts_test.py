"""scripts/test, the README's test command, on a machine missing what the tests drive."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "test"


def bare_path(tmp_path: Path, keep: tuple[str, ...], fakes: dict[str, str]) -> str:
    """A PATH holding only the named tools (links to the real ones) and small fake scripts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in keep:  # python3: this interpreter (a pyenv shim would need pyenv on PATH)
        real = os.path.realpath(sys.executable) if name == "python3" else shutil.which(name)
        assert real is not None, name
        (bin_dir / name).symlink_to(real)
    for name, body in fakes.items():
        fake = bin_dir / name
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
    return str(bin_dir)


def run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_check_names_each_missing_package(tmp_path: Path) -> None:
    """With rclone and rg off PATH, --check exits 1 naming exactly those packages."""
    path = bare_path(tmp_path, ("dirname", "curl", "python3"), {})
    done = run(path, "--check")
    assert done.returncode == 1
    assert done.stdout.strip().endswith("missing Debian packages: rclone ripgrep")


def test_without_root_or_sudo_one_line_says_what_to_install_and_nothing_is_done(
    tmp_path: Path,
) -> None:
    """Not root and no sudo: exit 2 with one line naming the apt-get command, before any venv
    or pip step (no .venv is made: the test would see it in the checkout otherwise)."""
    path = bare_path(
        tmp_path, ("dirname", "curl", "python3"), {"id": "echo 1000", "apt-get": "exit 99"}
    )
    done = run(path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("sudo apt-get install rclone ripgrep")


def test_nothing_missing_passes_the_check(tmp_path: Path) -> None:
    """The check is quiet and 0 when everything is there (this machine, as .ci/run leaves it)."""
    done = run(os.environ["PATH"], "--check")
    assert (done.returncode, done.stdout) == (0, "")
