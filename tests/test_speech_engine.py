"""The speech engine process with the real converted Whisper model."""

from __future__ import annotations

import os
import signal
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.speech_fixtures import SENTENCE, WORDS, heard, speak, whisper_model
from tui.engines import protocol as p
from tui.engines.host import EngineHost

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host():
    engine = EngineHost("speech")
    yield engine
    engine.shutdown()


def run(host: EngineHost, **kwargs) -> tuple[list[p.SegmentTranscribed], object]:
    request = p.TranscribeRequest(model_path=str(whisper_model()), n_threads=2, **kwargs)
    segments = []
    last = None
    for event in host.submit(request):
        if isinstance(event, p.SegmentTranscribed):
            segments.append(event)
        last = event
    return segments, last


def test_file_transcription_has_the_words_and_timestamps(host, tmp_path):
    wav = speak(SENTENCE, tmp_path / "s.wav")
    segments, last = run(host, audio_path=str(wav), language="en")
    assert isinstance(last, p.GenerationFinished)
    text = " ".join(s.text for s in segments)
    assert heard(text) >= len(WORDS) - 2, text
    starts = [s.start_s for s in segments]
    assert starts == sorted(starts) and all(s.end_s >= s.start_s for s in segments)


def test_other_formats_and_rates(host, tmp_path):
    wav = speak(SENTENCE, tmp_path / "s44.wav", rate=44_100)
    flac = tmp_path / "s.flac"
    os.system(f"sox {wav} {flac}")
    segments, _ = run(host, audio_path=str(flac))
    assert heard(" ".join(s.text for s in segments)) >= len(WORDS) - 2


def test_raw_samples_with_offset(host, tmp_path):
    wav = speak(SENTENCE, tmp_path / "s.wav")
    with wave.open(str(wav)) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    samples = (pcm.astype(np.float32) / 32768).tobytes()
    segments, _ = run(host, samples=samples, offset_s=10.0)
    assert segments and segments[0].start_s >= 10.0
    assert heard(" ".join(s.text for s in segments)) >= len(WORDS) - 2


def test_silence_gives_no_text(host, tmp_path):
    silence = np.zeros(16_000 * 5, dtype=np.float32)
    segments, last = run(host, samples=silence.tobytes())
    assert segments == [] and isinstance(last, p.GenerationFinished)
    quiet_noise = (np.random.default_rng(1).standard_normal(16_000 * 5) * 0.0005).astype(np.float32)
    segments, _ = run(host, samples=quiet_noise.tobytes())
    assert segments == []


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty"), (b"this is not audio at all" * 100, "not an audio file")],
)
def test_bad_audio_files(host, tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    segments, last = run(host, audio_path=str(path))
    assert isinstance(last, p.EngineFailed) and message in last.message
    assert "\n" not in last.message


def test_bad_models(host, tmp_path):
    wav = speak("Hello there.", tmp_path / "h.wav")
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(whisper_model().read_bytes()[:20_000_000])
    text = tmp_path / "text.bin"
    text.write_text("hello")
    for model, message in (
        (tmp_path / "missing.bin", "not found"),
        (truncated, "truncated"),
        (text, "not a whisper.cpp ggml model"),
    ):
        request = p.TranscribeRequest(model_path=str(model), audio_path=str(wav))
        events = list(host.submit(request))
        assert isinstance(events[-1], p.EngineFailed), events
        assert message in events[-1].message


def test_crash_is_reported_and_the_next_request_works(host, tmp_path):
    wav = speak(SENTENCE * 4, tmp_path / "long.wav")
    request = p.TranscribeRequest(model_path=str(whisper_model()), audio_path=str(wav), n_threads=1)
    last = None
    for event in host.submit(request):
        if isinstance(event, p.AudioLoaded):
            os.kill(host.pid, signal.SIGKILL)
        last = event
    assert isinstance(last, p.EngineFailed) and last.kind == "crash"
    segments, _ = run(host, audio_path=str(speak(SENTENCE, tmp_path / "s.wav")))
    assert heard(" ".join(s.text for s in segments)) >= len(WORDS) - 2


def test_cancel_stops_quickly(host, tmp_path):
    import threading
    import time

    wav = speak(SENTENCE * 6, tmp_path / "long.wav")
    request = p.TranscribeRequest(model_path=str(whisper_model()), audio_path=str(wav), n_threads=1)
    cancelled_at = None
    last = None
    for event in host.submit(request):
        if isinstance(event, p.AudioLoaded) and cancelled_at is None:
            cancelled_at = time.monotonic()
            threading.Timer(0.3, host.cancel).start()
        last = event
    assert isinstance(last, p.GenerationFinished) and last.reason == "cancelled"
    assert time.monotonic() - cancelled_at < 1.6
    assert Path(wav).exists()


def test_long_file_goes_in_windows_with_times_across_their_edges(host, tmp_path):
    """90 s of silence with a sentence at 3 s, one across the first window's 30 s edge
    and one at 75 s: each is heard whole and dated where it was put."""
    from tui.audiofile import write_wav_16k
    from tui.engines.speech import LEAD_IN_S

    with wave.open(str(speak(SENTENCE, tmp_path / "s.wav"))) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    sentence = pcm.astype(np.float32) / 32768
    places = (3.0, 26.5, 75.0)
    audio = np.zeros(90 * 16_000, dtype=np.float32)
    for place in places:
        start = round(place * 16_000)
        audio[start : start + sentence.size] = sentence
    wav = write_wav_16k(audio, tmp_path / "long.wav")
    request = p.TranscribeRequest(
        model_path=str(whisper_model()), audio_path=str(wav), language="en", n_threads=2
    )
    events = list(host.submit(request))
    assert isinstance(events[0], p.AudioLoaded) and events[0].duration_s == pytest.approx(90.0)
    assert isinstance(events[-1], p.GenerationFinished)
    segments = [e for e in events if isinstance(e, p.SegmentTranscribed)]
    length = sentence.size / 16_000
    for place in places:
        near = [s for s in segments if place - 2 <= s.start_s <= place + length]
        assert near, (place, segments)
        assert place - LEAD_IN_S - 0.3 <= near[0].start_s <= place + 1.0, (place, near)
        assert near[-1].end_s <= place + length + 1.0, (place, near)
        assert heard(" ".join(s.text for s in near)) >= len(WORDS) - 2, (place, near)
    assert len(segments) <= 2 * len(places), segments  # nothing invented in the silence
    for before, after in zip(segments, segments[1:], strict=False):
        assert before.start_s <= before.end_s <= after.start_s
