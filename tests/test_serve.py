"""`triptych serve` as a real process on loopback, driven by the official openai client.

The server runs the real engines on the test fixtures: SmolLM2 for chat, the
random-weight Stable Diffusion model for images and Whisper tiny.en for speech.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sd_fixtures
import speech_fixtures
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TRIPTYCH = [sys.executable, "-m", "tui.cli"]
THREADS = "2"
START_TIMEOUT_S = 30.0


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a plain GET (no Authorization header)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A running `triptych serve`; stopped with SIGTERM at the end of the test."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [*TRIPTYCH, "serve", "--port", str(self.port), "--threads", THREADS, *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner = self._read_banner()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def _read_banner(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith("triptych serve: http://"):
                    return line.strip()
            if self.process.poll() is not None:
                break
        self.stop()
        pytest.fail(f"triptych serve did not start: {self.process.stderr.read()}")  # type: ignore[union-attr]

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=120)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def serve(app_dirs: Path, chat_model: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        server = Server("--model", str(chat_model), *args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_public_host_without_an_api_key_is_refused(app_dirs: Path, chat_model: Path) -> None:
    proc = subprocess.run(
        [*TRIPTYCH, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "API key" in lines[0] and "--api-key-env" in lines[0]
    assert proc.stdout == ""


def test_an_api_key_env_that_is_unset_is_refused(app_dirs: Path, chat_model: Path) -> None:
    proc = subprocess.run(
        [*TRIPTYCH, "serve", "--api-key-env", "TRIPTYCH_TEST_NO_SUCH_KEY"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "triptych: --api-key-env TRIPTYCH_TEST_NO_SUCH_KEY: the environment variable"
        " TRIPTYCH_TEST_NO_SUCH_KEY is empty or unset"
    ]


def test_a_wrong_key_gets_401_and_the_right_key_gets_in(serve: Any, chat_model: Path) -> None:
    server = serve("--api-key-env", "SERVE_TEST_KEY", env={"SERVE_TEST_KEY": "s3cret-key"})
    with pytest.raises(openai.AuthenticationError) as caught:
        server.client("wrong-key").models.list()
    assert caught.value.status_code == 401
    error = caught.value.response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    # No header at all is refused the same way (raw HTTP: the client always sends one).
    status, body = get_json(f"{server.base_url}/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    models = server.client("s3cret-key").models.list()
    assert [m.id for m in models.data] == [chat_model.name]


def test_models_lists_the_configured_models(serve: Any, chat_model: Path) -> None:
    image = sd_fixtures.fixture("image-model")
    speech = speech_fixtures.whisper_model()
    server = serve(env={"TRIPTYCH_IMAGE_MODEL": str(image), "TRIPTYCH_SPEECH_MODEL": str(speech)})
    found = {m.id: m.model_extra.get("modality") for m in server.client().models.list().data}
    assert found == {chat_model.name: "chat", image.name: "image", speech.name: "speech"}
    assert server.banner == f"triptych serve: http://127.0.0.1:{server.port}/v1"
    assert get_json(f"http://127.0.0.1:{server.port}/health") == (
        200,
        {"status": "ok", "models": {v: k for k, v in found.items()}},
    )
    # Without a configured model an endpoint says so (OpenAI's 404 for unknown models).
    with pytest.raises(openai.NotFoundError) as caught:
        server.client().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


@pytest.mark.slow
def test_chat_streams_paris_and_answers_without_streaming(serve: Any, chat_model: Path) -> None:
    server = serve()
    client = server.client()
    question = [{"role": "user", "content": "Name the capital city of France."}]
    stream = client.chat.completions.create(
        model=chat_model.name,
        messages=question,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # The same request without streaming gives the same text (temperature 0).
    reply = client.chat.completions.create(
        model=chat_model.name, messages=question, temperature=0, max_tokens=24
    )
    assert reply.choices[0].message.content == text
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    # A sampling value out of range is a 400 naming it.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=chat_model.name, messages=question, top_p=0)
    assert "top-p" in caught.value.response.json()["error"]["message"]
    # SIGTERM stops the server and its engine process, with status 128 + 15.
    engines = children(server.process.pid)
    assert engines, "the chat engine runs as a child of the server"
    assert server.stop() == 143
    assert not any(Path(f"/proc/{pid}").exists() for pid in engines)


@pytest.mark.slow
def test_closing_the_stream_cancels_the_reply(serve: Any, chat_model: Path) -> None:
    server = serve()
    client = server.client()
    stream = client.chat.completions.create(
        model=chat_model.name,
        messages=[{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        temperature=0,
        max_tokens=3000,
        stream=True,
    )
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
        if received >= 5:
            break
    stream.close()
    # Uncancelled, the engine would spend tens of seconds on the rest of that count.
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=chat_model.name,
        messages=[{"role": "user", "content": "Name the capital city of France."}],
        temperature=0,
        max_tokens=12,
    )
    waited = time.monotonic() - started
    assert "Paris" in (reply.choices[0].message.content or "")
    assert waited < 4.0, f"the next request waited {waited:.1f} s"


@pytest.mark.slow
def test_images_generations_returns_a_png_of_the_requested_size(serve: Any) -> None:
    image_model = sd_fixtures.fixture("image-model")
    server = serve(env={"TRIPTYCH_IMAGE_MODEL": str(image_model)})
    result = server.client().images.generate(
        model=image_model.name,
        prompt="a lighthouse at dusk",
        size="128x64",
        n=1,
        response_format="b64_json",
        extra_body={"steps": 1, "cfg_scale": 1.0, "seed": 7},
    )
    assert len(result.data) == 1
    png = base64.b64decode(result.data[0].b64_json or "")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == (128, 64)
        assert "lighthouse" in image.info.get("parameters", "")
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().images.generate(model=image_model.name, prompt="x", size="100x64")
    assert "multiple of 64" in caught.value.response.json()["error"]["message"]


@pytest.mark.slow
def test_audio_transcriptions_in_json_and_srt(serve: Any, tmp_path: Path) -> None:
    speech_model = speech_fixtures.whisper_model()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    server = serve(env={"TRIPTYCH_SPEECH_MODEL": str(speech_model), "TMPDIR": str(uploads)})
    audio = speech_fixtures.speak(speech_fixtures.SENTENCE, tmp_path / "speech.wav")
    client = server.client()
    with audio.open("rb") as handle:
        result = client.audio.transcriptions.create(
            model=speech_model.name, file=handle, language="en", response_format="json"
        )
    assert speech_fixtures.heard(result.text) >= 6, result.text
    with audio.open("rb") as handle:
        srt = client.audio.transcriptions.create(
            model=speech_model.name, file=handle, response_format="srt"
        )
    assert isinstance(srt, str)
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert speech_fixtures.heard(srt) >= 6, srt
    # The upload was written to a temporary file and removed afterwards.
    assert list(uploads.iterdir()) == []


@pytest.mark.slow
def test_audio_translations_give_english_text_and_segments(serve: Any, tmp_path: Path) -> None:
    speech_model = speech_fixtures.whisper_model()
    server = serve(env={"TRIPTYCH_SPEECH_MODEL": str(speech_model)})
    audio = speech_fixtures.speak(speech_fixtures.SENTENCE, tmp_path / "speech.wav")
    client = server.client()
    with audio.open("rb") as handle:
        result = client.audio.translations.create(
            model=speech_model.name, file=handle, response_format="verbose_json"
        )
    assert speech_fixtures.heard(result.text) >= 6, result.text
    assert result.language == "english"
    assert result.segments and all(s.end >= s.start >= 0 for s in result.segments)
    assert speech_fixtures.heard(" ".join(s.text for s in result.segments)) >= 6
    with audio.open("rb") as handle:
        vtt = client.audio.translations.create(model="", file=handle, response_format="vtt")
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT"), vtt
    assert speech_fixtures.heard(vtt) >= 6, vtt


@pytest.mark.slow
def test_audio_translations_without_a_speech_model_is_404(serve: Any, tmp_path: Path) -> None:
    server = serve()
    audio = speech_fixtures.speak(speech_fixtures.SENTENCE, tmp_path / "speech.wav")
    with audio.open("rb") as handle, pytest.raises(openai.NotFoundError) as caught:
        server.client().audio.translations.create(model="whisper-1", file=handle)
    message = caught.value.response.json()["error"]["message"]
    assert message == "no speech model is configured on this server"
