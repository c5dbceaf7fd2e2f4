"""Checks for files the user names as input (audio to transcribe, an init image).

Opening a FIFO blocks until someone writes to it and reading /dev/zero never
ends, so a named input must be a regular file before anything reads it; the
message says what it is instead ("not a regular file: /dev/zero (a character
device)"), rather than calling it missing.

Standard library only.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def check_input_file(path: Path, what: str = "file") -> None:
    """Raise ValueError (one line naming the path) unless path is a readable regular file.

    what names the file in the "not found" message, e.g. "audio file".
    """
    try:
        info = path.stat()  # follows symbolic links: a link to /dev/zero is a device
    except FileNotFoundError:
        raise ValueError(f"{what} not found: {path}") from None
    except ValueError:  # a NUL character in the name
        raise ValueError(f"{what} not found: {path!r} (the name holds a NUL character)") from None
    except OSError as error:
        raise ValueError(f"cannot read {path} ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
        raise ValueError(f"not a regular file: {path} ({kind})")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {path} ({os.strerror(errno.EACCES)})")
