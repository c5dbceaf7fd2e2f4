"""Speech test material: the converted Whisper tiny.en model and espeak-ng sentences."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAMP = REPO / ".fixtures" / "whisper" / ".make-fixtures.json"

SENTENCE = "The weather today is sunny and warm. Please bring the blue umbrella tomorrow."
WORDS = ("weather", "today", "sunny", "warm", "bring", "blue", "umbrella", "tomorrow")


def whisper_model() -> Path:
    """The model scripts/make-fixtures converted (fails with a hint when missing)."""
    try:
        name, size = json.loads(STAMP.read_text())["files"]["whisper-model"]
    except (OSError, ValueError, KeyError, TypeError):
        pytest.fail(f"no whisper-model in {STAMP}: run scripts/make-fixtures .fixtures")
    path = STAMP.parent / name
    if not path.is_file() or path.stat().st_size != size:
        pytest.fail(f"{path} is missing or incomplete: run scripts/make-fixtures .fixtures")
    return path


def speak(text: str, out: Path, rate: int = 16_000) -> Path:
    """espeak-ng says text into a mono WAV at `rate` (sox resamples)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/test installs it")
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", str(out)], check=True)
    raw.unlink()
    return out


def heard(text: str, words: tuple[str, ...] = WORDS) -> int:
    """How many of the words appear in a transcript."""
    lowered = text.lower()
    return sum(word in lowered for word in words)
