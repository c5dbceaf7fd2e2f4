"""Windowed decoding for transcription (tui.audiofile.AudioWindows, Windower, quiet_cut)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tui.audiofile import (
    _BLOCK_FRAMES,
    SAMPLE_RATE,
    AudioWindows,
    Windower,
    load_audio_16k,
    quiet_cut,
)


def bursts(seconds: float, on_s: float = 1.5, off_s: float = 0.4) -> np.ndarray:
    """Noise bursts (stand-ins for words) separated by digital silence (the pauses)."""
    rng = np.random.default_rng(0)
    samples = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
    on, period = round(on_s * SAMPLE_RATE), round((on_s + off_s) * SAMPLE_RATE)
    for start in range(0, samples.size, period):
        stop = min(start + on, samples.size)
        samples[start:stop] = rng.standard_normal(stop - start) * 0.1
    return samples


def write(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def test_windows_are_consecutive_and_cut_in_pauses(tmp_path: Path) -> None:
    path = write(tmp_path / "bursts.wav", bursts(100))
    whole = load_audio_16k(path)
    with AudioWindows(path) as audio:
        assert audio.duration_s == pytest.approx(100.0)
        windows = list(audio)
    assert len(windows) == 4
    position = 0
    for start, samples in windows:
        assert start == position
        position += samples.size
    assert np.array_equal(np.concatenate([w for _, w in windows]), whole)
    for start, samples in windows[:-1]:
        assert 25.0 <= samples.size / SAMPLE_RATE <= 30.0
        cut = start + samples.size
        # The cut is in the middle of a pause: 100 ms of silence on either side.
        assert not np.any(whole[cut - 1600 : cut + 1600]), f"cut at {cut / SAMPLE_RATE:.2f} s"


def test_resampled_stereo_windows_match_the_whole_decode(tmp_path: Path) -> None:
    mono = bursts(70)
    stereo_44k = np.interp(np.arange(0, mono.size, 16 / 44.1), np.arange(mono.size), mono)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([stereo_44k, stereo_44k * 0.5], axis=1), 44_100, subtype="PCM_16")
    with AudioWindows(path) as audio:
        assert audio.duration_s == pytest.approx(70.0, abs=0.01)
        joined = np.concatenate([w for _, w in audio])
    assert np.array_equal(joined, load_audio_16k(path))


def test_memory_is_one_window_whatever_the_length(tmp_path: Path) -> None:
    """A 12-minute file holds no more than a 2-minute one: a window plus one block."""
    peaks = {}
    for minutes in (2, 12):
        path = write(tmp_path / f"{minutes}.wav", np.zeros(minutes * 60 * SAMPLE_RATE, np.int16))
        tracemalloc.start()
        try:
            with AudioWindows(path) as audio:
                count = sum(1 for _ in audio)
            _, peak_bytes = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        windower = audio.windower
        assert count >= minutes * 2
        assert windower.max_buffered <= windower.window + _BLOCK_FRAMES
        peaks[minutes] = peak_bytes
    # Decoded whole, 12 minutes are 46 MB of float32; windowed, a few MB at any time.
    assert peaks[12] < 16_000_000, peaks
    assert peaks[12] < 2 * peaks[2], peaks


def test_block_sizes_do_not_change_the_windows() -> None:
    samples = bursts(95)
    one = Windower()
    whole = [*one.push(samples), *one.finish()]
    many = Windower()
    pieces: list[tuple[int, np.ndarray]] = []
    rng = np.random.default_rng(1)
    position = 0
    while position < samples.size:
        size = int(rng.integers(1, 40_000))
        pieces += many.push(samples[position : position + size])
        position += size
    pieces += many.finish()
    assert [s for s, _ in pieces] == [s for s, _ in whole]
    for (_, a), (_, b) in zip(pieces, whole, strict=True):
        assert np.array_equal(a, b)
    assert many.max_buffered <= many.window + 40_000


def test_quiet_cut_lands_in_the_pause() -> None:
    rng = np.random.default_rng(2)
    samples = (rng.standard_normal(30 * SAMPLE_RATE) * 0.1).astype(np.float32)
    gap = slice(round(27.2 * SAMPLE_RATE), round(27.6 * SAMPLE_RATE))
    samples[gap] *= 0.001  # a 400 ms pause between words
    cut = quiet_cut(samples, 25 * SAMPLE_RATE)
    assert gap.start + 1600 <= cut <= gap.stop - 1600
    # Too short to search: no cut inside.
    assert quiet_cut(samples[:1000], 0) == 1000


def test_short_files_are_one_window(tmp_path: Path) -> None:
    path = write(tmp_path / "short.wav", bursts(12))
    with AudioWindows(path) as audio:
        windows = list(audio)
    assert [start for start, _ in windows] == [0]
    assert np.array_equal(windows[0][1], load_audio_16k(path))


def test_errors_before_decoding(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^no such file: "):
        AudioWindows(tmp_path / "nope.wav")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), 22050, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"^no audio in .*zero\.wav \(zero length\)$"):
        AudioWindows(zero)
    notes = tmp_path / "notes.wav"
    notes.write_text("not a recording\n" * 50)
    with pytest.raises(ValueError, match=r"^not an audio file: "):
        AudioWindows(notes)
    with pytest.raises(ValueError):
        Windower(window_s=10, search_s=10)


def test_long_leading_silence_is_cut_before_whisper() -> None:
    from tui.engines.speech import LEAD_IN_S, speech_onset

    window = np.zeros(30 * SAMPLE_RATE, dtype=np.float32)
    window[20 * SAMPLE_RATE : 22 * SAMPLE_RATE] = 0.1  # words 20 s into the window
    onset = speech_onset(window)
    assert onset == pytest.approx((20 - LEAD_IN_S) * SAMPLE_RATE, abs=480)
    # Words that start within a second or so: the audio goes in as it is.
    phrase = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    phrase[round(0.8 * SAMPLE_RATE) :] = 0.1
    assert speech_onset(phrase) == 0
    assert speech_onset(np.zeros(SAMPLE_RATE, dtype=np.float32)) == 0
