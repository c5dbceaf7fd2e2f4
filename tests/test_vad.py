"""Energy-based voice activity detection (tui.vad) on espeak-ng speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.virtual_mic import make_speech, speech_span
from tui.audiofile import load_audio_16k
from tui.vad import EnergyVAD

RATE = 16_000
TOLERANCE_S = 0.3


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    d = tmp_path_factory.mktemp("vad")
    one = make_speech(d / "one.wav", "The quick brown fox jumps over the lazy dog.")
    two = make_speech(d / "two.wav", "Please call Stella, and ask her to bring these things.")
    return load_audio_16k(one), load_audio_16k(two)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def _run(samples: np.ndarray, block: int = 800, **settings: float) -> list[tuple[float, float]]:
    vad = EnergyVAD(**settings)
    phrases = []
    for i in range(0, len(samples), block):
        phrases += vad.feed(samples[i : i + block])
    phrases += vad.flush()
    return [(s / RATE, e / RATE) for s, e in phrases]


def _true_span(samples: np.ndarray, offset_s: float) -> tuple[float, float]:
    span = speech_span(samples, threshold_db=-60)
    assert span is not None
    return offset_s + span[0], offset_s + span[1]


def _assert_close(found: list[tuple[float, float]], expected: list[tuple[float, float]]) -> None:
    assert len(found) == len(expected), f"found {found}, expected {expected}"
    for (fs, fe), (es, ee) in zip(found, expected, strict=True):
        assert abs(fs - es) <= TOLERANCE_S, f"start {fs:.2f} vs {es:.2f}"
        assert abs(fe - ee) <= TOLERANCE_S, f"end {fe:.2f} vs {ee:.2f}"


def _two_sentences(sentences: tuple[np.ndarray, np.ndarray], gap_s: float = 1.0):
    one, two = sentences
    audio = np.concatenate([_silence(0.7), one, _silence(gap_s), two, _silence(1.0)])
    expected = [
        _true_span(one, 0.7),
        _true_span(two, 0.7 + len(one) / RATE + gap_s),
    ]
    return audio, expected


def test_two_sentences_two_phrases(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    audio, expected = _two_sentences(sentences)
    _assert_close(_run(audio), expected)


def test_block_size_does_not_matter(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    audio, _ = _two_sentences(sentences)
    reference = _run(audio, block=len(audio))
    for block in (1, 37, 160, 333, 4096):
        if block == 1:
            block_audio = audio[: 3 * RATE]  # sample by sample: keep it short
            assert _run(block_audio, block=1) == _run(block_audio, block=len(block_audio))
        else:
            assert _run(audio, block=block) == reference


def test_speech_in_steady_noise(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    audio, expected = _two_sentences(sentences)
    rng = np.random.default_rng(1)
    noisy = audio + 0.01 * rng.standard_normal(len(audio)).astype(np.float32)  # -40 dBFS
    _assert_close(_run(noisy), expected)


def test_quiet_speaker(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    audio, expected = _two_sentences(sentences)
    _assert_close(_run(audio * 0.05), expected)  # -26 dB


def test_pauses_inside_a_sentence_do_not_split_it(
    sentences: tuple[np.ndarray, np.ndarray],
) -> None:
    two = sentences[1]  # "Please call Stella, and ask her ..." (a pause at the comma)
    found = _run(np.concatenate([_silence(0.5), two, _silence(1.0)]))
    _assert_close(found, [_true_span(two, 0.5)])


@pytest.mark.parametrize("seconds", [0.0, 10.0])
def test_silence_gives_nothing(seconds: float) -> None:
    assert _run(_silence(seconds)) == []


@pytest.mark.parametrize("rms", [1e-4, 0.003, 0.03])
def test_steady_noise_gives_nothing(rms: float) -> None:
    rng = np.random.default_rng(7)
    noise = (rms * rng.standard_normal(15 * RATE)).astype(np.float32)
    assert _run(noise) == []


def test_hum_gives_nothing() -> None:
    t = np.arange(10 * RATE) / RATE
    hum = (0.02 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    assert _run(hum) == []


def test_a_click_is_not_a_phrase() -> None:
    audio = _silence(3.0)
    audio[RATE : RATE + 160] = 0.8  # 10 ms
    assert _run(audio) == []


def test_long_speech_is_cut_between_words(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    # The sentences without espeak's leading and trailing silence, 0.25 s apart: shorter
    # pauses than the 0.5 s hangover, so one long run of speech.
    one, two = (_trimmed(s) for s in sentences)
    parts = [_silence(0.5)]
    while sum(len(p) for p in parts) < 30 * RATE:
        parts += [one, _silence(0.25), two, _silence(0.25)]
    audio = np.concatenate(parts + [_silence(1.0)])
    found = _run(audio, max_phrase_s=10.0)
    assert len(found) == 4  # 32 s in phrases of at most 10 s
    for start, end in found:
        assert end - start <= 10.0 + 1e-6
    for (_, end), (start, _) in zip(found, found[1:], strict=False):
        assert start >= end  # no overlap
        # The cut is in a pause: the 40 ms around it are (nearly) silent.
        around = audio[int(end * RATE) - 320 : int(end * RATE) + 320]
        assert np.sqrt(np.mean(around**2)) < 0.01, f"cut at {end:.2f} s inside a word"
    # Nothing was lost: the phrases cover all the speech.
    covered = sum(e - s for s, e in found)
    assert covered >= 0.9 * (len(audio) / RATE - 1.5)


def _trimmed(samples: np.ndarray) -> np.ndarray:
    start, end = speech_span(samples, threshold_db=-60)
    return samples[int(start * RATE) : int(end * RATE)]


def test_open_phrase_and_flush(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    one, _ = sentences
    vad = EnergyVAD()
    assert vad.feed(np.concatenate([_silence(0.5), one[: len(one) // 2]])) == []
    assert vad.in_speech
    assert vad.phrase_start is not None and vad.phrase_start / RATE == pytest.approx(
        0.5 - 0.2, abs=TOLERANCE_S
    )
    phrases = vad.flush()
    assert len(phrases) == 1 and not vad.in_speech


def test_unknown_setting() -> None:
    with pytest.raises(TypeError, match="unknown VAD setting"):
        EnergyVAD(hangover=1.0)


def test_speech_file_helper(tmp_path: Path) -> None:
    """The espeak-ng helper the speech tests rely on: 22,050 Hz, not silent."""
    path = make_speech(tmp_path / "hi.wav", "Hello.")
    assert speech_span(load_audio_16k(path)) is not None
