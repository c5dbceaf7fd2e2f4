"""Remote images over stable-diffusion.cpp's native job API (/sdcpp/v1) and /v1/images/edits.

Against the REAL sd-server (built from the pinned stable-diffusion-cpp-python's vendored
sources by scripts/build-sd-server into .fixtures/bin) and against `triptych serve`, both
running the random-weight Stable Diffusion fixture at 64x64 with a few steps.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sd_fixtures
from helpers import stop_process, wait_for_http
from PIL import Image
from test_remote_media import start_box
from test_serve import REPO, Server, free_port

from tui.backends import sdcpp
from tui.backends.remote_media import RemoteImageBackend
from tui.backends.servers import ServerConfig
from tui.engines import protocol as p

SD_SERVER = REPO / ".fixtures" / "bin" / "sd-server"
START_TIMEOUT_S = 30.0


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class SdServer:
    """A running sd-server on a free loopback port."""

    def __init__(self, log: Path) -> None:
        if not SD_SERVER.is_file():
            pytest.fail(f"{SD_SERVER} is missing: run scripts/build-sd-server .fixtures")
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [
                str(SD_SERVER),
                "-m", str(sd_fixtures.fixture("image-model")),
                "--vae", str(sd_fixtures.fixture("vae")),
                "--listen-port", str(self.port),
                "-t", "2",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_http(
            self.process,
            f"{self.root}/sdcpp/v1/capabilities",
            "sd-server",
            log,
            self.stop,
            START_TIMEOUT_S,
        )

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = get_json(f"{self.root}/sdcpp/v1/jobs/{job_id}")
        assert status == 200, body
        return body

    def wait_idle(self, job_id: str) -> None:
        """Wait until ``job_id`` has ended, so that the next test finds the queue empty."""
        wait_for(
            lambda: self.job(job_id)["status"] in ("completed", "failed", "cancelled"),
            60,
            f"job {job_id} to end",
        )

    def stop(self) -> None:
        stop_process(self.process, self.log)


@pytest.fixture(scope="module")
def sd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdServer]:
    server = SdServer(tmp_path_factory.mktemp("sd-server") / "sd-server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def serve_box(chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_box(chat_model, tmp_path_factory.mktemp("serve-home"))
    yield server
    server.stop()


def cancel_within_a_second(
    backend: RemoteImageBackend, worker: threading.Thread, events: list[Any]
) -> p.GenerationFinished:
    """Stop the request ``worker`` runs: it must end 'cancelled' within a second."""
    asked = time.monotonic()
    backend.cancel()
    worker.join(5)
    took = time.monotonic() - asked
    assert not worker.is_alive() and took < 1.0, took
    last = events[-1]
    assert isinstance(last, p.GenerationFinished) and last.reason == "cancelled", events
    return last


def image_request(**changes: Any) -> p.ImageRequest:
    values: dict[str, Any] = dict(
        model_path="server:sd", prompt="a lighthouse at dusk", width=64, height=64, steps=1,
        cfg_scale=1.0, seed=11,
    )  # fmt: skip
    values.update(changes)
    return p.ImageRequest(**values)


def png_of(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def size_of(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return image.size


def in_thread(
    backend: RemoteImageBackend, request: p.ImageRequest
) -> tuple[threading.Thread, list[Any]]:
    events: list[Any] = []
    worker = threading.Thread(target=lambda: events.extend(backend.submit(request)), daemon=True)
    worker.start()
    return worker, events


# --- the real sd-server ----------------------------------------------------------------------


@pytest.mark.slow
def test_auto_uses_the_native_api_and_makes_a_png_of_the_asked_size(sd_server: SdServer) -> None:
    backend = RemoteImageBackend(ServerConfig("sd", f"{sd_server.root}/v1"))
    assert backend.image_api == "sdcpp"
    events = list(backend.submit(image_request(width=128, height=64)))
    made = [e for e in events if isinstance(e, p.ImageGenerated)]
    assert len(made) == 1, events
    assert size_of(made[0].png) == (128, 64) and (made[0].width, made[0].height) == (128, 64)
    assert made[0].seed == 11
    assert isinstance(events[-1], p.GenerationFinished) and events[-1].reason == "stop"
    assert sd_server.job(backend.job_id)["status"] == "completed"


@pytest.mark.slow
def test_stop_of_a_queued_job_cancels_it_on_the_server(sd_server: SdServer) -> None:
    config = ServerConfig("sd", f"{sd_server.root}/v1", image_api="sdcpp")
    status, first = post_json(
        f"{sd_server.root}/sdcpp/v1/img_gen",
        {"prompt": "busy", "width": 64, "height": 64, "sample_params": {"sample_steps": 4}},
    )
    assert status == 202, first
    backend = RemoteImageBackend(config)
    worker, events = in_thread(backend, image_request())
    wait_for(lambda: any(isinstance(e, p.WaitingForCpu) for e in events), 10, "the queued job")
    assert "job ahead" in events[0].behind[0] or "jobs ahead" in events[0].behind[0]
    last = cancel_within_a_second(backend, worker, events)
    assert last.note == ""
    assert sd_server.job(backend.job_id)["status"] == "cancelled"
    sd_server.wait_idle(first["id"])


@pytest.mark.slow
def test_stop_of_a_generating_job_ends_within_a_second(sd_server: SdServer) -> None:
    backend = RemoteImageBackend(ServerConfig("sd", f"{sd_server.root}/v1", image_api="sdcpp"))
    worker, events = in_thread(backend, image_request(steps=6))
    wait_for(
        lambda: bool(backend.job_id) and sd_server.job(backend.job_id)["status"] == "generating",
        10,
        "the job to generate",
    )
    last = cancel_within_a_second(backend, worker, events)
    # sd-server cannot abort a generation (409): the user is told it finishes on its own.
    assert last.note == sdcpp.STILL_RUNNING_NOTE
    sd_server.wait_idle(backend.job_id)
    assert sd_server.job(backend.job_id)["status"] == "completed"


@pytest.mark.slow
def test_a_request_the_server_refuses_is_one_line(sd_server: SdServer) -> None:
    backend = RemoteImageBackend(ServerConfig("sd", f"{sd_server.root}/v1"))
    events = list(backend.submit(image_request(init_image=b"not an image at all")))
    assert isinstance(events[-1], p.EngineFailed), events
    message = events[-1].message
    assert "\n" not in message and message == message.strip()
    assert message.startswith("server sd (") and "HTTP 400" in message, message
    assert "invalid generation parameters" in message, message


@pytest.mark.slow
def test_image_to_image_through_the_native_api(sd_server: SdServer) -> None:
    backend = RemoteImageBackend(ServerConfig("sd", f"{sd_server.root}/v1"))
    request = image_request(init_image=png_of(64, 64), strength=0.5, seed=-1)
    events = list(backend.submit(request))
    made = [e for e in events if isinstance(e, p.ImageGenerated)]
    assert len(made) == 1 and size_of(made[0].png) == (64, 64), events
    # A random seed: the one the server drew, read from the PNG's parameters.
    assert made[0].seed >= 0
    assert isinstance(events[-1], p.GenerationFinished) and events[-1].reason == "stop"


@pytest.mark.slow
def test_cli_imagine_with_a_server_spec_on_sd_server(sd_server: SdServer, app_dirs: Path) -> None:
    from test_remote_media import triptych

    added = triptych("servers", "add", "sd", f"{sd_server.root}/v1", "--image-api", "sdcpp")
    assert added.returncode == 0, added.stderr
    listed = triptych("servers", "list")
    assert "image api=sdcpp" in listed.stdout, listed.stdout
    out = app_dirs / "out.png"
    made = triptych(
        "imagine", "--model", "server:sd", "--width", "64", "--height", "128", "--steps", "1",
        "--cfg", "1", "--seed", "9", "-o", str(out), "a red barn",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"{out}\n"
    with Image.open(out) as image:
        assert image.size == (64, 128)
        assert "Seed: 9" in image.info.get("parameters", "")


@pytest.mark.slow
def test_imagine_service_shows_the_queue_and_the_stop_note(
    sd_server: SdServer, app_dirs: Path
) -> None:
    from tui.config import Settings
    from tui.engines.host import EngineHost
    from tui.imaging import ImageParams
    from tui.services import imagine as svc
    from tui.services.settings import SettingsService
    from tui.store import Store

    settings = Settings()
    settings.servers = {"sd": {"url": f"{sd_server.root}/v1"}}
    service_settings = SettingsService(app_dirs / "config" / "config.toml", settings=settings)
    status, busy = post_json(
        f"{sd_server.root}/sdcpp/v1/img_gen",
        {"prompt": "busy", "width": 64, "height": 64, "sample_params": {"sample_steps": 4}},
    )
    assert status == 202, busy
    with Store(app_dirs / "data" / "triptych.db") as store:
        service = svc.ImagineService(EngineHost("image"), store, service_settings)
        events: list[Any] = []
        service.subscribe(events.append)
        params = ImageParams(
            prompt="a red barn", model="server:sd", width=64, height=64, steps=6, cfg_scale=1.0
        )
        worker = threading.Thread(target=service.generate, args=(params,), daemon=True)
        worker.start()
        wait_for(lambda: any(isinstance(e, svc.WaitingForCpu) for e in events), 10, "the queue")
        waiting = next(e for e in events if isinstance(e, svc.WaitingForCpu))
        assert waiting.text.startswith("Queued on server sd, "), waiting.text
        # Its turn comes: GenerationStarted again; then Stop while it generates.
        wait_for(
            lambda: sum(isinstance(e, svc.GenerationStarted) for e in events) == 2, 30, "its turn"
        )
        job_id = service._backend.job_id if service._backend else ""
        service.stop()
        worker.join(5)
        assert not worker.is_alive()
        assert isinstance(events[-1], svc.GenerationEnded), events
        assert events[-1].reason == "cancelled" and events[-1].note == sdcpp.STILL_RUNNING_NOTE
        assert not service.gallery_page()
    sd_server.wait_idle(busy["id"])
    if job_id:
        sd_server.wait_idle(job_id)


# --- triptych serve --------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_native_api_reports_steps_and_images(serve_box: Server) -> None:
    status, caps = get_json(f"http://127.0.0.1:{serve_box.port}/sdcpp/v1/capabilities")
    assert status == 200 and caps["supported_modes"] == ["img_gen"]
    assert caps["features_by_mode"]["img_gen"]["cancel_generating"] is True
    assert caps["model"]["path"] == sd_fixtures.fixture("image-model").name
    backend = RemoteImageBackend(ServerConfig("box", serve_box.base_url))
    assert backend.image_api == "sdcpp"
    events = list(backend.submit(image_request(steps=6)))
    steps = [e for e in events if isinstance(e, p.StepProgressed)]
    assert steps and all(e.steps == 6 for e in steps), events
    made = [e for e in events if isinstance(e, p.ImageGenerated)]
    assert len(made) == 1 and size_of(made[0].png) == (64, 64)
    assert isinstance(events[-1], p.GenerationFinished) and events[-1].reason == "stop"


@pytest.mark.slow
def test_serve_cancels_a_generating_job(serve_box: Server) -> None:
    root = f"http://127.0.0.1:{serve_box.port}"
    backend = RemoteImageBackend(ServerConfig("box", serve_box.base_url))
    worker, events = in_thread(backend, image_request(steps=60))
    wait_for(lambda: any(isinstance(e, p.StepProgressed) for e in events), 30, "a step")
    last = cancel_within_a_second(backend, worker, events)
    assert last.note == ""  # triptych serve stops a generating job
    status, job = get_json(f"{root}/sdcpp/v1/jobs/{backend.job_id}")
    assert status == 200 and job["status"] == "cancelled", job
    # The engine really stopped: the next job is not stuck behind ~60 steps.
    started = time.monotonic()
    after = list(backend.submit(image_request(steps=1)))
    assert isinstance(after[-1], p.GenerationFinished) and after[-1].reason == "stop", after
    assert time.monotonic() - started < 15
    assert get_json(f"{root}/sdcpp/v1/jobs/job_unknown")[0] == 404


@pytest.mark.slow
def test_serve_images_edits_keeps_the_init_image_size(serve_box: Server) -> None:
    backend = RemoteImageBackend(ServerConfig("box", serve_box.base_url, image_api="openai"))
    request = image_request(init_image=png_of(128, 64), width=128, height=64, strength=0.6)
    events = list(backend.submit(request))
    made = [e for e in events if isinstance(e, p.ImageGenerated)]
    assert len(made) == 1 and size_of(made[0].png) == (128, 64), events
    # Without a size, the answer has the init image's size.
    result = serve_box.client().images.edit(
        image=("init.png", png_of(64, 128), "image/png"),
        prompt="a red barn",
        response_format="b64_json",
        extra_body={"steps": 1, "cfg_scale": 1.0, "seed": 3, "strength": 0.5},
    )
    assert size_of(base64.b64decode(result.data[0].b64_json or "")) == (64, 128)
    with pytest.raises(openai.BadRequestError) as caught:
        serve_box.client().images.edit(
            image=("init.png", b"not an image", "image/png"), prompt="x", size="64x64"
        )
    assert "init image" in caught.value.response.json()["error"]["message"]
