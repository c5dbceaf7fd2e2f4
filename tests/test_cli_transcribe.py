"""`triptych transcribe` end to end (installed command, real model)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.speech_fixtures import WORDS, heard, whisper_model

pytestmark = pytest.mark.slow
TRIPTYCH = Path(sys.executable).with_name("triptych")


def triptych(*args: str, env_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        TRIPTYCH_DATA_DIR=str(env_dir / "data"),
        TRIPTYCH_CONFIG_DIR=str(env_dir / "config"),
        TRIPTYCH_THREADS="2",
    )
    return subprocess.run(
        [str(TRIPTYCH), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_txt_to_stdout(tmp_path, speech_wav):
    proc = triptych(
        "transcribe", str(speech_wav), "--model", str(whisper_model()), env_dir=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert heard(proc.stdout) >= len(WORDS) - 2


def times(pattern: str, text: str) -> list[float]:
    values = []
    for h, m, s, ms in re.findall(pattern, text):
        values.append(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000)
    return values


@pytest.mark.parametrize("fmt", ["srt", "vtt", "json"])
def test_exports_parse_and_timestamps_increase(tmp_path, speech_wav, fmt):
    out = tmp_path / f"out.{fmt}"
    proc = triptych(
        "transcribe",
        str(speech_wav),
        "--model",
        str(whisper_model()),
        "--format",
        fmt,
        "-o",
        str(out),
        env_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    text = out.read_text()
    if fmt == "json":
        data = json.loads(text)
        starts = [s["start"] for s in data["segments"]]
        assert heard(" ".join(s["text"] for s in data["segments"])) >= len(WORDS) - 2
    else:
        sep = "," if fmt == "srt" else r"\."
        starts = times(rf"(\d\d):(\d\d):(\d\d){sep}(\d\d\d) -->", text)
        if fmt == "vtt":
            assert text.startswith("WEBVTT")
        assert heard(text) >= len(WORDS) - 2
    assert starts and starts == sorted(starts)


@pytest.mark.parametrize(
    "setup,args,message",
    [
        (None, ["/nonexistent.wav"], "audio file not found"),
        ("empty", [], "empty"),
        ("text", [], "not an audio file"),
        ("wav", ["--model", "/nonexistent.bin"], "model file not found"),
        ("wav", ["--model", "TEXTMODEL"], "not a whisper.cpp ggml model"),
    ],
)
def test_bad_input_is_one_line(tmp_path, speech_wav, setup, args, message):
    target = []
    if setup == "empty":
        (tmp_path / "e.wav").write_bytes(b"")
        target = [str(tmp_path / "e.wav")]
    elif setup == "text":
        (tmp_path / "t.mp3").write_text("not audio " * 50)
        target = [str(tmp_path / "t.mp3")]
    elif setup == "wav":
        target = [str(speech_wav)]
    (tmp_path / "model.txt").write_text("nope")
    args = [str(tmp_path / "model.txt") if a == "TEXTMODEL" else a for a in args]
    if "--model" not in args:
        args = [*args, "--model", str(whisper_model())]
    proc = triptych("transcribe", *target, *args, env_dir=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("triptych:") and message in lines[0], lines
