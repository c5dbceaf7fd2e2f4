"""API keys typed once and kept in a 0600 file under the config folder.

``keys/NAME`` beside config.toml holds the key of server ``NAME``: the folder is
0700, the file 0600 and written atomically (a temporary file renamed over it), so
a key is never half written nor readable by other users. The key itself never
goes into config.toml, the database or a log; the server entry only records the
file's path (``api_key_file``).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

from tui import locations

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_KEY_BYTES = 4096
"""A longer 'key' is almost certainly something pasted by mistake."""


class KeyFileError(Exception):
    """A key that cannot be stored or read, in one line."""


def keys_dir() -> Path:
    """The folder of key files (created 0700 when a key is stored)."""
    return locations.config_dir() / "keys"


def key_file(name: str) -> Path:
    """Where server ``name``'s key is kept; KeyFileError for a name unfit for a file name."""
    if not _NAME.fullmatch(name):
        raise KeyFileError(
            f"server name {name!r} cannot name a key file: use letters, digits, '_', '.', '-'"
        )
    return keys_dir() / name


def store_key(name: str, key: str) -> Path:
    """Write ``key`` for server ``name`` (0600, atomically); the file's path."""
    key = key.strip()
    if not key:
        raise KeyFileError("the API key is empty")
    if len(key.encode()) > MAX_KEY_BYTES or any(ch.isspace() or ord(ch) < 32 for ch in key):
        raise KeyFileError("that does not look like an API key (too long, or has spaces)")
    path = key_file(name)
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    # mkstemp creates the file 0600 before anything is written into it.
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def read_key(path: Path) -> str:
    """The key in ``path``; KeyFileError when missing, empty or readable by others."""
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {path} can be read by other users; run: chmod 600 {path}")
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} is missing; add the server again") from None
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError(f"cannot read key file {path}: {error}") from None
    if not key:
        raise KeyFileError(f"key file {path} is empty")
    return key


def delete_key(name: str) -> bool:
    """Remove server ``name``'s key file; whether there was one."""
    try:
        path = key_file(name)
    except KeyFileError:
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
