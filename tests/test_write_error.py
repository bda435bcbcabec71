"""`write_error`, the one mapping of an OSError from writing a file: the disk's errors stop
the run (DiskError), any other fails only the unit (PermanentError); both name the file."""

from __future__ import annotations

import errno
import os

import pytest

from exporter.archive import write_error
from exporter.errors import DiskError, FatalError, PermanentError

DISK = ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "EIO")
UNIT = ("EISDIR", "ENOENT", "ENAMETOOLONG", "EEXIST", "EINVAL")


@pytest.mark.parametrize("name", DISK)
def test_the_disks_errors_stop_the_run_naming_the_file_and_the_reason(name: str) -> None:
    """A full disk, a quota, a file-size limit, a read-only or refused folder, an I/O error:
    a DiskError (a FatalError: no other unit could be written either)."""
    code = getattr(errno, name)
    err = write_error(OSError(code, "ignored"), "app1/s1.chat.csv")
    assert isinstance(err, DiskError) and isinstance(err, FatalError)
    assert err.message == f"cannot write app1/s1.chat.csv: {os.strerror(code)}"


@pytest.mark.parametrize("name", UNIT)
def test_other_errors_fail_only_the_unit(name: str) -> None:
    """An error of this one file (a folder in its place, a name too long): a PermanentError
    with the OS's words, so the run goes on with the other units."""
    code = getattr(errno, name)
    err = write_error(OSError(code, os.strerror(code)), "app1/s1.recordings/r1.mp4")
    assert type(err) is PermanentError and not isinstance(err, FatalError)
    assert err.message == f"cannot write app1/s1.recordings/r1.mp4: {os.strerror(code)}"


def test_an_error_without_errno_or_strerror_still_says_what_it_is() -> None:
    """No errno, no strerror (a library's bare OSError): the unit's error, its text kept."""
    err = write_error(OSError("spool closed"), "app1/s1.chat.csv")
    assert type(err) is PermanentError
    assert err.message == "cannot write app1/s1.chat.csv: spool closed"
