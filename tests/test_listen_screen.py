"""Listen and dictation through Pilot: the real virtual microphone (PulseAudio pipe
source), the real recorder, the real Whisper model in the speech engine process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.speech_fixtures import SENTENCE, WORDS, heard, speak, whisper_model
from tests.virtual_mic import APT_PACKAGES, VirtualMic, VirtualMicError
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.screens.listen import ListenScreen
from tui.store import Store
from tui.widgets.prompt_input import PromptInput

pytestmark = pytest.mark.slow
SIZE = (80, 24)
ENOUGH = len(WORDS) - 2


@pytest.fixture(scope="module")
def mic() -> Iterator[VirtualMic]:
    try:
        microphone = VirtualMic().start()
    except VirtualMicError as error:
        pytest.fail(f"virtual microphone unavailable: {error} (apt-get install {APT_PACKAGES})")
    yield microphone
    microphone.stop()


def make_app(**changes) -> TriptychApp:
    settings = Settings()
    settings.threads = 2
    settings.speech_model = str(whisper_model())
    settings.speech_language = "en"
    for key, value in changes.items():
        setattr(settings, key, value)
    return TriptychApp(settings=settings, store=Store())


async def open_listen(pilot) -> ListenScreen:
    await pilot.press("f4")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, ListenScreen)
    return screen


def status(screen: ListenScreen) -> str:
    return str(screen.query_one("#listen-status").render())


def transcript_text(screen: ListenScreen) -> str:
    return str(screen.query_one("#transcript").render())


async def test_record_live_draft_and_final_transcript(app_dirs, mic, tmp_path):
    speech = speak(SENTENCE, tmp_path / "s.wav")
    app = make_app(input_device="pulse")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_listen(pilot)
        # The device scan runs in a worker: it blocks (PortAudio re-initialises).
        await wait_until(pilot, lambda: screen.query_one("#device").value == "pulse", 10)
        await pilot.press("space")
        await wait_until(pilot, lambda: screen.recording, 5, "recording to start")
        mic.say(speech)
        # The live draft shows the words while still recording.
        await wait_until(
            pilot,
            lambda: heard(" ".join(s.text for s in screen.live_segments)) >= ENOUGH - 1,
            30,
            "the live draft",
        )
        assert screen.recording
        draft_lines = [s.text for s in screen.live_segments]
        assert len(draft_lines) == len(set(draft_lines)), "duplicated live lines"
        await pilot.press("space")
        await wait_until(
            pilot,
            lambda: not screen.recording and not screen.transcribing and screen.segments,
            60,
            "the final transcript",
        )
        record = app.store.list_recordings()[0]
        assert heard(" ".join(s["text"] for s in record.transcript)) >= ENOUGH
        assert record.device == "pulse" and record.duration_s > 3
        assert Path(record.path).is_file()
        assert "live draft" not in transcript_text(screen)


async def test_file_transcription_export_and_send_to_chat(app_dirs, tmp_path):
    speech = speak(SENTENCE, tmp_path / "speech.wav")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_listen(pilot)
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
        await pilot.press(*str(speech), "enter")
        await wait_until(
            pilot, lambda: screen.segments and not screen.transcribing, 60, "the transcript"
        )
        assert heard(transcript_text(screen)) >= ENOUGH
        # Export as JSON.
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
        await pilot.press("ctrl+u", *"json", "enter")
        await wait_until(pilot, lambda: app.clipboard.endswith(".json"), 5)
        data = json.loads(Path(app.clipboard).read_text())
        assert heard(data["text"]) >= ENOUGH
        # Rename, then send to chat.
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
        await pilot.press("ctrl+u", *"Weather memo", "enter")
        await pilot.pause()
        assert app.store.list_recordings()[0].name == "Weather memo"
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), 5)
        chat = app.screen
        await wait_until(pilot, lambda: chat.conversation is not None, 5)
        messages = app.store.list_messages(chat.conversation.id)
        assert messages[0].role == "user" and "Weather memo" in messages[0].content
        assert heard(messages[0].content) >= ENOUGH
        assert chat.query_one(PromptInput).text == "Summarize this."
        # Delete asks first.
        await pilot.press("f4")
        await pilot.pause()
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("y")
        await wait_until(pilot, lambda: app.store.list_recordings() == [], 5)
        assert speech.exists()  # a file the user named is never deleted


async def test_bad_files_and_missing_model(app_dirs, tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all " * 40)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_listen(pilot)
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
        await pilot.press(*str(text), "enter")
        await wait_until(pilot, lambda: "not an audio file" in status(screen), 10)
        screen.query_one("#speech-model").value = str(tmp_path / "missing.bin")
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
        await pilot.press(*str(speak("Hello.", tmp_path / "h.wav")), "enter")
        await wait_until(pilot, lambda: "not found" in status(screen), 10)
        assert not screen.transcribing


async def test_no_input_device(app_dirs, monkeypatch):
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/socket")
    app = make_app(input_device="pulse")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_listen(pilot)
        if screen.query_one("#device").value == "pulse":
            pytest.fail("the pulse device should be gone")
        await pilot.press("space")
        await pilot.pause()
        assert not screen.recording


async def test_dictation_puts_words_in_the_chat_input(app_dirs, mic, tmp_path):
    speech = speak(SENTENCE, tmp_path / "s.wav")
    app = make_app(input_device="pulse")
    async with app.run_test(size=SIZE) as pilot:
        prompt = app.screen.query_one(PromptInput)
        prompt.text = "Note:"
        prompt.move_cursor(prompt.document.end)
        await pilot.press("f9")
        await wait_until(pilot, lambda: app.screen.dictation is not None, 5)
        mic.say(speech, wait=True)
        await pilot.pause(0.5)
        await pilot.press("f9")
        await wait_until(pilot, lambda: len(prompt.text) > 20, 60, "the dictated words")
        assert prompt.text.startswith("Note: ")
        assert heard(prompt.text) >= ENOUGH


async def test_a_crashed_recording_is_listed_with_its_duration(app_dirs, tmp_path):
    import os
    import time
    import wave

    import numpy as np

    from tui.screens.listen import recordings_dir

    # What a killed recorder leaves: samples on disk, header sizes still zero.
    path = recordings_dir() / "crashed.wav"
    path.parent.mkdir(parents=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16_000)
        handle.writeframes(np.zeros(16_000 * 3, dtype=np.int16).tobytes())
    data = bytearray(path.read_bytes())
    data[4:8] = b"\x00\x00\x00\x00"
    data[40:44] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(data))
    old = time.time() - 60
    os.utime(path, (old, old))
    store = Store()
    record = store.add_recording(str(path), "Crashed", device="pulse")
    settings = Settings()
    settings.speech_model = str(whisper_model())
    app = TriptychApp(settings=settings, store=store)
    async with app.run_test(size=SIZE) as pilot:
        await open_listen(pilot)
        # Repaired in a worker (fsync) as the panel opens.
        await wait_until(pilot, lambda: app.store.get_recording(record.id).duration_s > 0, 10)
        repaired = app.store.get_recording(record.id)
        assert abs(repaired.duration_s - 3.0) < 0.01
        with wave.open(str(path)) as handle:
            assert handle.getnframes() == 16_000 * 3


async def test_open_file_refuses_what_is_not_a_regular_file(app_dirs, tmp_path):
    """/dev/zero or a named pipe is named for what it is, not called missing (and never read)."""
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_listen(pilot)
        for path, kind in (("/dev/zero", "a character device"), (str(fifo), "a named pipe")):
            await pilot.press("o")
            await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
            await pilot.press(*path, "enter")
            expected = f"not a regular file: {path} ({kind})"
            await wait_until(pilot, lambda: expected in status(screen), 10)  # noqa: B023
        assert app.store.list_recordings() == []
