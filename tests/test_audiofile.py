"""Audio files to 16 kHz mono float32 (tui.audiofile): formats, resampling, errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.virtual_mic import make_speech
from tui.audiofile import SAMPLE_RATE, load_audio_16k, write_wav_16k


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)


def _to_mp3(src: Path, dest: Path) -> Path:
    """lame when installed, else libsndfile's own MP3 encoder (soundfile >= 0.12 wheels)."""
    if shutil.which("lame"):
        _run("lame", "--quiet", str(src), str(dest))
    else:
        data, rate = sf.read(src, dtype="float32")
        sf.write(dest, data, rate, format="MP3")
    return dest


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An espeak-ng sentence (22,050 Hz mono WAV) and its duration."""
    path = make_speech(
        tmp_path_factory.mktemp("audiofile") / "speech.wav",
        "Transcription turns speech into text, one phrase at a time.",
    )
    info = sf.info(path)
    assert info.samplerate == 22050
    return path, info.frames / info.samplerate


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "stereo-44k.wav"])
def test_decodes_to_16k_mono(fmt: str, speech: tuple[Path, float], tmp_path: Path) -> None:
    src, duration = speech
    if fmt == "wav":
        path = src
    elif fmt == "mp3":
        path = _to_mp3(src, tmp_path / "speech.mp3")
    elif fmt == "stereo-44k.wav":
        path = tmp_path / "stereo.wav"
        _run("sox", str(src), "-r", "44100", "-c", "2", str(path))
        assert sf.info(path).channels == 2
    else:
        path = tmp_path / f"speech.{fmt}"
        _run("sox", str(src), str(path))
    samples = load_audio_16k(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / SAMPLE_RATE == pytest.approx(duration, abs=0.1)
    assert 0.05 < float(np.max(np.abs(samples))) <= 1.0
    # Same sound as the original WAV: the loudness envelopes match (MP3's encoder delay
    # may shift it by a few frames; lossy codecs change the waveform, not the envelope).
    ref, got = _envelope(load_audio_16k(src)), _envelope(samples)
    n = min(len(ref), len(got)) - 10
    best = max(np.corrcoef(ref[:n], got[lag : lag + n])[0, 1] for lag in range(10))
    assert best > 0.95


def _envelope(samples: np.ndarray) -> np.ndarray:
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-8)


def test_write_wav_16k_round_trip(tmp_path: Path) -> None:
    tone = (0.5 * np.sin(np.arange(8000) / 3)).astype(np.float32)
    path = write_wav_16k(np.concatenate([tone, [2.0, -2.0]]), tmp_path / "tone.wav")
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    back = load_audio_16k(path)
    np.testing.assert_allclose(back[:8000], tone, atol=1 / 16000)
    assert back[-2] == pytest.approx(1.0, abs=1e-4) and back[-1] == pytest.approx(-1.0, abs=1e-4)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(ValueError, match=r"^no such file: .*nope\.wav$"):
        load_audio_16k(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^not a file: "):
        load_audio_16k(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^empty file: .*empty\.mp3$"):
        load_audio_16k(path)


def test_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording\n" * 20)
    with pytest.raises(ValueError) as info:
        load_audio_16k(path)
    message = str(info.value)
    assert message == f"not an audio file: {path} (unrecognised format)"


def test_garbage_with_an_audio_suffix(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp3"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ValueError, match=r"^not an audio file: .*broken\.mp3 \(.+\)$"):
        load_audio_16k(path)


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 22050, subtype="PCM_16")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match=r"^no audio in .*zero\.wav \(zero length\)$"):
        load_audio_16k(path)
