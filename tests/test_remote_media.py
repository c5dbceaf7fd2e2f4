"""Remote images and transcription against a real `triptych serve` on loopback.

The server runs the real engines on the test fixtures (the random-weight Stable
Diffusion model, Whisper tiny.en); the client side is the CLI, ImagineService,
ListenService and the remote backends, choosing the server by the model spec
``server:box``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sd_fixtures
import speech_fixtures
from PIL import Image
from test_serve import REPO, Server, free_port

from tui.backends.remote_media import RemoteImageBackend, RemoteSpeechBackend
from tui.backends.select import image_backend_for, speech_backend_for
from tui.backends.servers import BackendError, ServerConfig
from tui.config import Settings
from tui.engines import protocol as p
from tui.engines.host import EngineHost
from tui.imaging import ImageParams
from tui.services import imagine as svc
from tui.services import listen as ls
from tui.services.settings import SettingsService
from tui.store import Store

TRIPTYCH = [sys.executable, "-m", "tui.cli"]


def start_box(chat_model: Path, home: Path) -> Server:
    """`triptych serve` with the chat, image and speech fixtures, its folders in ``home``."""
    return Server(
        "--model",
        str(chat_model),
        env={
            "TRIPTYCH_DATA_DIR": str(home / "data"),
            "TRIPTYCH_CONFIG_DIR": str(home / "config"),
            "TRIPTYCH_IMAGE_MODEL": str(sd_fixtures.fixture("image-model")),
            "TRIPTYCH_SPEECH_MODEL": str(speech_fixtures.whisper_model()),
        },
    )


@pytest.fixture(scope="module")
def box(chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `triptych serve` with the chat, image and speech fixtures, for the module."""
    server = start_box(chat_model, tmp_path_factory.mktemp("serve-home"))
    yield server
    server.stop()


def triptych(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*TRIPTYCH, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def add_server(url: str, *extra: str) -> None:
    added = triptych("servers", "add", "box", url, *extra)
    assert added.returncode == 0, added.stderr


def settings_for(url: str) -> Settings:
    settings = Settings()
    settings.threads = 2
    settings.servers = {"box": {"url": url}}
    return settings


def one_line_failure(events: list[Any]) -> str:
    assert isinstance(events[-1], p.EngineFailed), events
    message = events[-1].message
    assert "\n" not in message and message.strip() == message
    return message


def image_request(**changes: Any) -> p.ImageRequest:
    values: dict[str, Any] = dict(
        model_path="server:box", prompt="a lighthouse at dusk", width=128, height=64, steps=1
    )
    values.update(changes)
    return p.ImageRequest(**values)


def test_specs_choose_the_local_host_or_a_server() -> None:
    settings = settings_for("http://127.0.0.1:9/v1")
    local = object()
    for choose in (image_backend_for, speech_backend_for):
        assert choose("/models/model.gguf", settings, local) is local
        assert choose("", settings, local) is local
    image = image_backend_for("server:box/sd-turbo", settings, local)
    assert isinstance(image, RemoteImageBackend) and image.model == "sd-turbo"
    speech = speech_backend_for("server:box", settings, local)
    assert isinstance(speech, RemoteSpeechBackend) and speech.model == ""
    with pytest.raises(BackendError, match="no server named 'gpu'"):
        speech_backend_for("server:gpu", settings, local)


def test_a_refused_connection_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = ServerConfig("gone", url)
    image = one_line_failure(list(RemoteImageBackend(config).submit(image_request())))
    assert image.startswith("cannot connect to server gone") and "connection refused" in image
    audio = tmp_path / "a.wav"
    import numpy as np
    import soundfile

    soundfile.write(str(audio), np.zeros(16000, dtype=np.float32), 16000)
    request = p.TranscribeRequest(model_path="server:gone", audio_path=str(audio))
    speech = one_line_failure(list(RemoteSpeechBackend(config).submit(request)))
    assert "connection refused" in speech


@pytest.mark.slow
def test_cli_imagine_on_a_server_writes_the_png(box: Server, app_dirs: Path) -> None:
    add_server(box.base_url)
    out = app_dirs / "out.png"
    made = triptych(
        "imagine", "--model", "server:box", "--width", "128", "--height", "64",
        "--steps", "1", "--cfg", "1", "--seed", "7", "-o", str(out), "a lighthouse at dusk",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"{out}\n"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (128, 64)
        parameters = image.info.get("parameters", "")
    assert "lighthouse" in parameters and "Seed: 7" in parameters, parameters
    # The same seed on the server makes the same pixels again.
    again = app_dirs / "again.png"
    assert triptych(
        "imagine", "--model", "server:box", "--width", "128", "--height", "64",
        "--steps", "1", "--cfg", "1", "--seed", "7", "-o", str(again), "a lighthouse at dusk",
    ).returncode == 0  # fmt: skip
    with Image.open(out) as first, Image.open(again) as second:
        assert first.tobytes() == second.tobytes()


@pytest.mark.slow
def test_imagine_service_with_a_remote_model_saves_a_gallery_row(
    box: Server, app_dirs: Path
) -> None:
    settings = SettingsService(
        app_dirs / "config" / "config.toml", settings=settings_for(box.base_url)
    )
    with Store(app_dirs / "data" / "triptych.db") as store:
        service = svc.ImagineService(EngineHost("image"), store, settings)
        events: list[Any] = []
        service.subscribe(events.append)
        params = ImageParams(
            prompt="a red barn", model="server:box", width=64, height=128, steps=1,
            cfg_scale=1.0, seed=3, batch_count=2,
        )  # fmt: skip
        service.check(params)  # no header to read: the server checks its model
        service.generate(params)
        assert isinstance(events[0], svc.GenerationStarted) and events[0].remote == "box"
        assert isinstance(events[-1], svc.GenerationEnded) and events[-1].reason == "stop", events
        saved = [e.record for e in events if isinstance(e, svc.ImageSaved)]
        assert [(r.width, r.height) for r in saved] == [(64, 128), (64, 128)]
        assert sorted(r.seed for r in saved) == [3, 4]
        rows = service.gallery_page()
        assert len(rows) == 2 and rows[0].params["model"] == "server:box"
        for record in saved:
            with Image.open(record.path) as image:
                assert image.size == (64, 128)
        with pytest.raises(ValueError, match="no server named 'nope'"):
            service.check(ImageParams(prompt="x", model="server:nope"))


@pytest.mark.slow
def test_stop_closes_a_remote_generation_within_a_second(box: Server) -> None:
    # The OpenAI endpoint: Stop closes the request (the native API is in test_sdcpp_remote).
    backend = RemoteImageBackend(ServerConfig("box", box.base_url, image_api="openai"))
    events: list[Any] = []
    worker = threading.Thread(
        target=lambda: events.extend(backend.submit(image_request(width=512, height=512, steps=40)))
    )
    worker.start()
    time.sleep(1.0)
    assert backend.busy and not events
    asked = time.monotonic()
    backend.cancel()
    worker.join(5)
    took = time.monotonic() - asked
    assert not worker.is_alive()
    assert [type(e) for e in events] == [p.GenerationFinished]
    assert events[0].reason == "cancelled" and took < 1.0, took
    # The server dropped the cancelled job: a small image comes back promptly.
    started = time.monotonic()
    after = list(backend.submit(image_request(width=64, height=64)))
    assert isinstance(after[-1], p.GenerationFinished), after
    # Had it gone on, the 512x512, 40-step job would hold the engine for many minutes.
    assert time.monotonic() - started < 60
    print(f"stop took {took * 1000:.0f} ms; the next image {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_cli_transcribe_on_a_server(box: Server, app_dirs: Path, speech_wav: Path) -> None:
    add_server(box.base_url)
    text = triptych("transcribe", "--model", "server:box", str(speech_wav))
    assert text.returncode == 0, text.stderr
    assert speech_fixtures.heard(text.stdout) >= 6, text.stdout
    srt = triptych("transcribe", "--model", "server:box", "--format", "srt", str(speech_wav))
    assert srt.returncode == 0, srt.stderr
    assert srt.stdout.startswith("1\n00:00:0") and " --> " in srt.stdout, srt.stdout
    assert speech_fixtures.heard(srt.stdout) >= 6, srt.stdout


@pytest.mark.slow
def test_translating_on_a_server_gives_english_segments(
    box: Server, app_dirs: Path, speech_wav: Path
) -> None:
    # The request to translate goes to /v1/audio/translations, as segments with times.
    settings = settings_for(box.base_url)
    backend = speech_backend_for("server:box", settings, object())
    try:
        request = ls.transcribe_request(
            settings, audio_path=speech_wav, model="server:box", translate=True
        )
        events = list(backend.submit(request))
    finally:
        backend.shutdown()
    assert isinstance(events[-1], p.GenerationFinished), events
    segments = [e for e in events if isinstance(e, p.SegmentTranscribed)]
    assert segments and all(s.end_s >= s.start_s >= 0 for s in segments)
    words = " ".join(s.text for s in segments)
    assert speech_fixtures.heard(words) >= 6, words
    add_server(box.base_url)
    cli = triptych("transcribe", "--model", "server:box", "--translate", str(speech_wav))
    assert cli.returncode == 0, cli.stderr
    assert speech_fixtures.heard(cli.stdout) >= 6, cli.stdout


@pytest.mark.slow
def test_listen_service_transcribes_a_file_and_a_phrase_remotely(
    box: Server, tmp_path: Path, speech_wav: Path
) -> None:
    settings = SettingsService(tmp_path / "config.toml", settings=settings_for(box.base_url))
    with Store(tmp_path / "triptych.db") as store:
        service = ls.ListenService(settings, store, EngineHost("speech"))
        events: list[Any] = []
        service.subscribe(events.append)
        record = service.add_file(speech_wav)
        assert record is not None
        assert service.transcribe(record, ls.TranscribeOptions("server:box", language="en"))
        decoded = [e for e in events if isinstance(e, ls.AudioDecoded)]
        assert decoded and 4 < decoded[0].duration_s < 10
        saved = store.get_recording(record.id)
        assert saved is not None and saved.model == "server:box"
        words = " ".join(s["text"] for s in saved.transcript)
        assert speech_fixtures.heard(words) >= 6, words
        assert all(s["end_s"] >= s["start_s"] >= 0 for s in saved.transcript)
        # A live phrase goes up as a temporary 16 kHz WAV; its times keep their offset.
        import soundfile

        samples, rate = soundfile.read(str(speech_wav), dtype="float32")
        assert rate == 16000
        from tui.services.live import Phrase

        service.options = ls.TranscribeOptions("server:box", language="en")
        start = 30 * rate
        service.transcribe_phrase(Phrase(start, start + len(samples), samples))
        live = service.live_segments
        assert live and live[0].start_s >= 30.0, live
        assert speech_fixtures.heard(" ".join(s.text for s in live)) >= 6


@pytest.mark.slow
def test_a_wrong_api_key_is_one_line(chat_model: Path, app_dirs: Path, speech_wav: Path) -> None:
    keyed = Server(
        "--model", str(chat_model), "--api-key-env", "TT_SERVE_KEY",
        env={"TT_SERVE_KEY": "right-key"},
    )  # fmt: skip
    try:
        add_server(keyed.base_url, "--api-key-env", "TT_CLIENT_KEY")
        wrong = {"TT_CLIENT_KEY": "wrong-key"}
        made = triptych(
            "imagine", "--model", "server:box", "-o", str(app_dirs / "x.png"), "x", env=wrong
        )
        heard = triptych("transcribe", "--model", "server:box", str(speech_wav), env=wrong)
        for proc in (made, heard):
            assert proc.returncode == 1 and proc.stdout == ""
            lines = proc.stderr.splitlines()
            assert len(lines) == 1, proc.stderr
            assert "refused the API key (HTTP 401" in lines[0] and "TT_CLIENT_KEY" in lines[0]
            assert "wrong-key" not in lines[0]
        unset = triptych("transcribe", "--model", "server:box", str(speech_wav))
        assert unset.returncode == 1 and "TT_CLIENT_KEY" in unset.stderr
        assert len(unset.stderr.splitlines()) == 1
    finally:
        keyed.stop()
