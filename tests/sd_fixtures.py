"""The random-weight Stable Diffusion files that scripts/make-fixtures writes (for image tests).

They make noise, not pictures, but load and generate like a real SDXS-512 model.
stable-diffusion.cpp crashes on incomplete files: load them only in engine processes
(EngineHost, the triptych command), never in the pytest process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SD_DIR = REPO / ".fixtures" / "sd"
STAMP = SD_DIR / ".make-fixtures.json"


def fixture(role: str) -> Path:
    """The file make-fixtures wrote for `role` ("image-model", "taesd", "vae").

    Read from its stamp, so the tests follow the generator; fails the test with a hint
    when the file is missing or not yet complete (sd.cpp crashes on partial files).
    """
    hint = "run scripts/make-fixtures .fixtures (scripts/test does)"
    try:
        entry = json.loads(STAMP.read_text())["files"][role]
    except (OSError, ValueError, KeyError, TypeError):
        pytest.fail(f"no {role} fixture in {STAMP}: {hint}")
    name, size = (entry, None) if isinstance(entry, str) else (entry[0], entry[1])
    path = SD_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: {hint}")
    if size is not None and path.stat().st_size != size:
        pytest.fail(f"{path} is incomplete ({path.stat().st_size} of {size} bytes): {hint}")
    return path


def truncated_copy(model: Path, dest: Path, fraction: float = 0.5) -> Path:
    """The first `fraction` of a model file: what an interrupted download leaves."""
    size = int(model.stat().st_size * fraction)
    with model.open("rb") as src, dest.open("wb") as dst:
        copied = 0
        while copied < size:  # in the kernel: no 400 MB round trip through Python
            sent = os.sendfile(dst.fileno(), src.fileno(), copied, size - copied)
            if sent == 0:
                break
            copied += sent
    return dest
