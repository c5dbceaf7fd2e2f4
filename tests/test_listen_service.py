"""The Listen service driven directly, without Pilot: the live pipeline on espeak-ng
speech, file transcription and the live worker's failure path with the real Whisper
tiny.en model; the recordings list loading a page at a time."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.speech_fixtures import SENTENCE, WORDS, heard, speak, whisper_model
from tests.virtual_mic import APT_PACKAGES, VirtualMic, VirtualMicError
from tui.audiofile import load_audio_16k
from tui.config import Settings
from tui.engines.host import EngineHost
from tui.services import listen as ls
from tui.services.live import LivePipeline
from tui.services.settings import SettingsService
from tui.store import Store

ENOUGH = len(WORDS) - 2
SECOND = "Green apples grow on tall trees near the river."


def settings_service(tmp_path: Path, model: Path | str = "") -> SettingsService:
    settings = Settings()
    settings.threads = 2
    settings.speech_model = str(model)
    settings.speech_language = "en"
    return SettingsService(tmp_path / "config.toml", settings=settings)


class Events:
    """Collects a service's events; wait() for one of a kind."""

    def __init__(self, service: ls.ListenService) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()
        service.subscribe(self._add)

    def _add(self, event: Any) -> None:
        with self._changed:
            self.items.append(event)
            self._changed.notify_all()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]

    def wait(self, kind: type, timeout: float, count: int = 1) -> list[Any]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.of(kind)) >= count, timeout):
                raise AssertionError(f"no {kind.__name__} within {timeout}s: {self.items}")
        return self.of(kind)


@pytest.fixture
def host() -> Iterator[EngineHost]:
    engine = EngineHost("speech")
    yield engine
    engine.shutdown()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16_000), dtype=np.float32)


def feed_in_blocks(pipeline: LivePipeline, audio: np.ndarray, block_s: float = 0.1) -> None:
    step = int(block_s * 16_000)
    for start in range(0, len(audio), step):
        pipeline.feed(audio[start : start + step])


# --- fast: no model ------------------------------------------------------------------


def test_transcribe_request_takes_what_is_not_given_from_the_settings(tmp_path):
    settings = Settings()
    settings.speech_model, settings.speech_language = "~/w.bin", "de"
    settings.threads, settings.speech_use_gpu = 3, False
    request = ls.transcribe_request(settings, audio_path=tmp_path / "a.wav")
    assert request.model_path == str(Path("~/w.bin").expanduser())
    assert (request.language, request.n_threads, request.use_gpu) == ("de", 3, False)
    assert request.audio_path == str(tmp_path / "a.wav") and request.samples is None
    samples = np.array([0.5, -0.25], dtype=np.float64)
    request = ls.transcribe_request(
        settings, samples=samples, offset_s=2.0, model="m.bin", language="", translate=True
    )
    assert np.frombuffer(request.samples, np.float32).tolist() == [0.5, -0.25]
    assert (request.model_path, request.language, request.offset_s) == ("m.bin", "auto", 2.0)
    assert request.translate


def test_live_pipeline_cuts_espeak_speech_into_phrases(tmp_path):
    first = load_audio_16k(speak(SENTENCE, tmp_path / "a.wav"))
    second = load_audio_16k(speak(SECOND, tmp_path / "b.wav"))
    audio = np.concatenate([silence(1.0), first, silence(1.5), second, silence(1.5)])
    pipeline = LivePipeline()
    feed_in_blocks(pipeline, audio)
    phrases = []
    while (phrase := pipeline.next_phrase()) is not None:
        phrases.append(phrase)
    assert len(phrases) >= 2
    # Every phrase's samples are exactly the recording's [start, end).
    for phrase in phrases:
        assert np.array_equal(phrase.samples, audio[phrase.start : phrase.end])
    # The speech is inside the phrases, and the first sentence ends before the second.
    speech_start = 16_000 + int(np.flatnonzero(np.abs(first) > 0.01)[0])
    assert phrases[0].start <= speech_start < phrases[0].end
    assert phrases[0].offset_s == phrases[0].start / 16_000
    assert phrases[-1].end > 16_000 * 1.0 + len(first) + 16_000 * 1.5


def test_live_pipeline_memory_stays_flat_in_silence():
    pipeline = LivePipeline()
    feed_in_blocks(pipeline, silence(120.0) + 1e-4)
    assert pipeline.pending == 0
    assert pipeline.buffered_samples <= 2 * 16_000


class RaisingEngine:
    """Unit-test double: an engine host whose submit raises (no real engine does)."""

    def submit(self, request: Any) -> Iterator[Any]:
        raise RuntimeError("the engine exploded")

    def cancel(self) -> None:
        pass


def test_a_raising_transcription_resets_the_state_unit_with_fake_engine(tmp_path, app_dirs):
    model = whisper_model()
    service = ls.ListenService(settings_service(tmp_path, model), Store(), RaisingEngine())
    events = Events(service)
    audio = speak("Hello there.", tmp_path / "h.wav")
    record = service.add_file(audio)
    assert record is not None
    assert not service.transcribe(record, ls.TranscribeOptions(str(model), "en"))
    assert not service.transcribing
    failed = events.of(ls.TranscriptionFailed)
    assert [f.message for f in failed] == ["RuntimeError: the engine exploded"]
    assert not events.of(ls.TranscriptionFinished)


async def test_recordings_list_mounts_one_page_of_ten_thousand(app_dirs):
    from tui.app import TriptychApp
    from tui.screens.listen import ListenScreen

    store = Store()
    now = time.time()
    with sqlite3.connect(store.path) as conn:
        conn.executemany(
            "INSERT INTO recordings (path, name, device, duration_s, created) VALUES (?,?,?,?,?)",
            [(f"/nowhere/{i}.wav", f"Memo {i}", "pulse", 1.0, now + i) for i in range(10_000)],
        )
    settings = Settings()
    app = TriptychApp(settings=settings, store=store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ListenScreen)
        listing = screen.query_one("#recordings")
        assert listing.option_count == ls.RECORDINGS_PAGE
        assert "Memo 9999" in str(listing.get_option_at_index(0).prompt)
        # Going down the list loads the next page before its end is reached.
        listing.highlighted = ls.RECORDINGS_PAGE - 1
        await pilot.pause()
        assert listing.option_count == 2 * ls.RECORDINGS_PAGE
        assert "Memo 9900" in str(listing.get_option_at_index(99).prompt)


# --- slow: the real Whisper model ----------------------------------------------------


@pytest.mark.slow
def test_live_phrases_of_real_speech_are_transcribed(tmp_path, app_dirs, host):
    model = whisper_model()
    service = ls.ListenService(settings_service(tmp_path, model), Store(), host)
    service.options = ls.TranscribeOptions(str(model), "en")
    events = Events(service)
    first = load_audio_16k(speak(SENTENCE, tmp_path / "a.wav"))
    pipeline = LivePipeline()
    feed_in_blocks(pipeline, np.concatenate([silence(0.5), first, silence(1.0)]))
    pipeline.flush()
    while (phrase := pipeline.next_phrase()) is not None:
        service.transcribe_phrase(phrase)
    draft = " ".join(s.text for s in service.live_segments)
    assert heard(draft) >= ENOUGH, draft
    assert len(events.of(ls.LiveSegmentTranscribed)) == len(service.live_segments)
    # Segment times are the recording's, not the phrase's.
    assert service.live_segments[0].start_s >= 0.3
    assert not events.of(ls.ListenFailed)


@pytest.mark.slow
def test_file_transcription_saves_the_transcript(tmp_path, app_dirs, host):
    model = whisper_model()
    store = Store()
    service = ls.ListenService(settings_service(tmp_path), store, host)
    events = Events(service)
    record = service.add_file(speak(SENTENCE, tmp_path / "memo.wav"))
    assert record is not None and record.device == "file" and record.duration_s > 3
    assert service.transcribe(record, ls.TranscribeOptions(str(model), "en"))
    finished = events.of(ls.TranscriptionFinished)
    assert len(finished) == 1 and not finished[0].stopped
    saved = store.get_recording(record.id)
    assert heard(" ".join(s["text"] for s in saved.transcript)) >= ENOUGH
    assert saved.model == model.name and saved.language == "en"
    assert len(events.of(ls.SegmentTranscribed)) == len(saved.transcript)
    assert events.of(ls.AudioDecoded)[0].duration_s > 3
    # The model and language used become the settings (dictation uses them).
    assert service.settings.current.speech_model == str(model)
    assert 'speech_model = "' in (tmp_path / "config.toml").read_text()
    # A file that is not audio is named in one line and never reaches the engine.
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio " * 50)
    assert service.add_file(junk) is None
    assert "not an audio file" in events.of(ls.ListenFailed)[-1].message


@pytest.fixture(scope="module")
def mic() -> Iterator[VirtualMic]:
    try:
        microphone = VirtualMic().start()
    except VirtualMicError as error:
        pytest.fail(f"virtual microphone unavailable: {error} (apt-get install {APT_PACKAGES})")
    yield microphone
    microphone.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_live_worker_failure_resets_and_says_so_once(tmp_path, app_dirs, host, mic):
    """The model file disappears mid-recording: the live draft stops with one line,
    the recording goes on, and nothing stays busy."""
    model = tmp_path / "tiny.bin"
    shutil.copyfile(whisper_model(), model)
    store = Store()
    service = ls.ListenService(settings_service(tmp_path, model), store, host)
    events = Events(service)
    options = ls.TranscribeOptions(str(model), "en")
    record = service.start_recording(mic.device, options)
    assert record is not None and service.recording, events.items
    live = threading.Thread(target=service.run_live)
    live.start()
    try:
        wait_for(lambda: service.live_running, 5, "the live worker")
        mic.say(speak("Hello world, this is the first phrase.", tmp_path / "a.wav"))
        events.wait(ls.LiveSegmentTranscribed, 40)
        model.unlink()
        mic.say(speak(SECOND, tmp_path / "b.wav"))
        failed = events.wait(ls.ListenFailed, 40)
        wait_for(lambda: not live.is_alive(), 10, "the live worker to end")
        assert len(failed) == 1, failed
        assert "live draft stopped" in failed[0].message and "not found" in failed[0].message
        assert not service.live_running and not service.transcribing
        assert service.recording  # the recording itself goes on
    finally:
        service.stop_recording(final_pass=True)
        live.join(timeout=10)
    # The final pass fails for the same reason, says so, and leaves nothing busy.
    assert "not found" in events.wait(ls.TranscriptionFailed, 10)[0].message
    assert not service.transcribing and not service.recording
    stopped = events.of(ls.RecordingStopped)
    assert len(stopped) == 1 and stopped[0].recording.duration_s > 2
    assert store.get_recording(record.id).duration_s > 2


@pytest.mark.slow
def test_recording_live_draft_then_final_pass(tmp_path, app_dirs, host, mic):
    model = whisper_model()
    store = Store()
    service = ls.ListenService(settings_service(tmp_path, model), store, host)
    events = Events(service)
    record = service.start_recording(mic.device, ls.TranscribeOptions(str(model), "en"))
    assert record is not None
    live = threading.Thread(target=service.run_live)
    live.start()
    mic.say(speak(SENTENCE, tmp_path / "s.wav"))
    wait_for(
        lambda: heard(" ".join(s.text for s in service.live_segments)) >= ENOUGH - 1,
        40,
        "the live draft",
    )
    service.stop_recording()
    live.join(timeout=10)
    assert not live.is_alive() and not service.recording and not service.transcribing
    assert len(events.of(ls.TranscriptionFinished)) == 1
    saved = store.get_recording(record.id)
    assert heard(" ".join(s["text"] for s in saved.transcript)) >= ENOUGH
    assert saved.device == mic.device and saved.duration_s > 3
    assert service.settings.current.input_device == mic.device
    assert not events.of(ls.ListenFailed) and not events.of(ls.TranscriptionFailed)
