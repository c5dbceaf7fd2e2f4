"""The image engine through EngineHost: a real worker process, the real binding, random weights.

The fixture model (scripts/make-fixtures) makes noise, not pictures, but it loads and
samples like a real SDXS-512 model, so sizes, steps, seeds, previews, image-to-image,
stop and crash recovery are all tested for real. Sizes stay tiny (64x64, 1-3 steps).
One host is shared by the module; tests that kill the worker rely on the next request
respawning it, which is itself under test.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import sd_fixtures
from tui.engines import protocol as p
from tui.engines.host import EngineHost

THREADS = 1
CANCEL_LATENCY_S = 1.0


@dataclass
class Run:
    events: list[Any] = field(default_factory=list)
    terminal_at: float = 0.0

    @property
    def terminal(self) -> Any:
        assert self.events and isinstance(self.events[-1], p.TERMINAL_EVENTS), self.events
        return self.events[-1]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def images(self) -> list[p.ImageGenerated]:
        return self.of(p.ImageGenerated)


def run(host: EngineHost, request: p.ImageRequest, on_event: Callable[[Any], None] | None = None):
    result = Run()
    for event in host.submit(request):
        result.events.append(event)
        if on_event is not None:
            on_event(event)
    result.terminal_at = time.monotonic()
    return result


def imagine(model: Path | str, **params: Any) -> p.ImageRequest:
    params.setdefault("prompt", "a red apple on a table")
    params.setdefault("width", 64)
    params.setdefault("height", 64)
    params.setdefault("steps", 1)
    params.setdefault("seed", 5)
    params.setdefault("n_threads", THREADS)
    params.setdefault("preview", False)
    params.setdefault("cfg_scale", 1.0)  # no unconditioned pass: half the work per step
    return p.ImageRequest(model_path=str(model), **params)


def generated(host: EngineHost, request: p.ImageRequest) -> Run:
    result = run(host, request)
    assert isinstance(result.terminal, p.GenerationFinished), result.events
    assert result.terminal.reason == "stop"
    assert len(result.images) == request.batch_count
    return result


def pixels(png: bytes) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return image.size, image.convert("RGB").tobytes()


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def image_model() -> Path:
    return sd_fixtures.fixture("image-model")


@pytest.fixture(scope="module")
def taesd() -> Path:
    return sd_fixtures.fixture("taesd")


@pytest.fixture(scope="module")
def truncated_model(image_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first half of the image model: what an interrupted download leaves."""
    dest = tmp_path_factory.mktemp("sd") / "truncated.safetensors"
    return sd_fixtures.truncated_copy(image_model, dest)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineHost]:
    engine_host = EngineHost("image", log_dir=tmp_path_factory.mktemp("logs"))
    yield engine_host
    engine_host.shutdown()


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize(("width", "height"), [(64, 64), (128, 64)])
def test_image_has_the_requested_size(
    host: EngineHost, image_model: Path, width: int, height: int
) -> None:
    result = generated(host, imagine(image_model, width=width, height=height))
    image = result.images[0]
    assert (image.width, image.height) == (width, height)
    size, _ = pixels(image.png)
    assert size == (width, height)
    assert image.seed == 5
    assert image.index == 0
    assert image.seconds > 0
    assert result.terminal.stats.seed == 5
    assert result.terminal.stats.elapsed_s >= image.seconds
    assert not result.of(p.PreviewUpdated)  # preview=False
    assert host.loaded_model == str(image_model)


def test_one_progress_event_per_step(host: EngineHost, image_model: Path) -> None:
    result = generated(host, imagine(image_model, steps=3))
    progress = result.of(p.StepProgressed)
    assert [(e.step, e.steps, e.image_index) for e in progress] == [(1, 3, 0), (2, 3, 0), (3, 3, 0)]
    assert all(0 < e.seconds < 30 for e in progress)
    # Every step comes before the image it makes.
    assert result.events.index(progress[-1]) < result.events.index(result.images[0])


def test_seeds_decide_the_pixels(host: EngineHost, image_model: Path) -> None:
    first = generated(host, imagine(image_model, seed=5)).images[0]
    other = generated(host, imagine(image_model, seed=6)).images[0]
    assert pixels(first.png) != pixels(other.png)

    # A batch uses seed, seed + 1, ...: its images are those of single runs with those
    # seeds (so the same seed and parameters give the same pixels, run after run).
    batch = generated(host, imagine(image_model, seed=5, batch_count=2))
    assert [(i.index, i.seed) for i in batch.images] == [(0, 5), (1, 6)]
    assert pixels(batch.images[0].png) == pixels(first.png)
    assert pixels(batch.images[1].png) == pixels(other.png)
    assert {e.image_index for e in batch.of(p.StepProgressed)} == {0, 1}


def test_random_seed_is_reported(host: EngineHost, image_model: Path) -> None:
    result = generated(host, imagine(image_model, seed=-1))
    seed = result.images[0].seed
    assert 0 <= seed < 2**31
    assert result.terminal.stats.seed == seed


def test_image_to_image(host: EngineHost, image_model: Path) -> None:
    source = generated(host, imagine(image_model, seed=11)).images[0]
    result = generated(
        host,
        imagine(image_model, seed=11, steps=2, init_image=source.png, strength=0.5, width=128),
    )
    image = result.images[0]
    size, data = pixels(image.png)
    assert size == (128, 64)  # the init image is resized to the requested size
    assert data != pixels(source.png)[1]
    assert result.of(p.StepProgressed)  # at most `steps` steps: strength skips the first ones
    assert all(e.steps <= 2 for e in result.of(p.StepProgressed))


def test_projection_preview_without_taesd(host: EngineHost, image_model: Path) -> None:
    result = generated(host, imagine(image_model, steps=2, preview=True))
    previews = result.of(p.PreviewUpdated)
    assert previews
    assert result.events.index(previews[0]) < result.events.index(result.images[0])


def test_taesd_preview(host: EngineHost, image_model: Path, taesd: Path) -> None:
    result = generated(
        host, imagine(image_model, steps=2, preview=True, taesd_path=str(taesd), width=128)
    )
    previews = result.of(p.PreviewUpdated)
    assert previews, result.events
    size, _ = pixels(previews[0].png)
    assert max(size) <= 256
    assert size == (128, 64)  # TAESD decodes the full image (a projection is 1/8 size)
    assert previews[0].step >= 1
    assert result.images[0].width == 128


# --------------------------------------------------------------------------- stop and crash


def test_cancel_stops_a_long_generation_within_a_second(
    host: EngineHost, image_model: Path
) -> None:
    generated(host, imagine(image_model))  # a worker with the model loaded
    pid = host.pid
    assert pid is not None
    cancelled_at: list[float] = []

    def cancel_soon() -> None:
        time.sleep(0.5)  # prompt encoded, sampling under way
        cancelled_at.append(time.monotonic())
        host.cancel()

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    result = run(host, imagine(image_model, width=256, height=256, steps=20, preview=True))
    canceller.join(5)
    finished = result.terminal
    assert isinstance(finished, p.GenerationFinished), result.events
    assert finished.reason == "cancelled"
    assert result.terminal_at - cancelled_at[0] < CANCEL_LATENCY_S
    assert not result.images
    assert not host.busy
    assert process_gone(pid)  # sd.cpp cannot abort: the worker was killed

    again = generated(host, imagine(image_model))
    assert again.of(p.ModelLoaded)  # a fresh worker loaded the model again
    assert host.pid not in (None, pid)


def test_killed_worker_is_reported_and_respawned(host: EngineHost, image_model: Path) -> None:
    generated(host, imagine(image_model))
    victim = host.pid
    assert victim is not None

    def kill_on_first_step(event: Any) -> None:
        if isinstance(event, p.StepProgressed) and event.step == 1:
            os.kill(victim, signal.SIGKILL)

    result = run(host, imagine(image_model, steps=3), kill_on_first_step)
    failed = result.terminal
    assert isinstance(failed, p.EngineFailed), result.events
    assert failed.kind == "crash"
    assert "killed" in failed.message
    assert "\n" not in failed.message
    assert process_gone(victim)

    again = generated(host, imagine(image_model))
    assert again.of(p.ModelLoaded)
    assert host.pid not in (None, victim)


# --------------------------------------------------------------------------- bad input


def _bad_files(tmp_path: Path, truncated: Path) -> list[tuple[str, Path, str]]:
    """(what, path, words the message must contain) for each kind of unusable file."""
    tmp_path.mkdir()
    text = tmp_path / "notes.safetensors"
    text.write_text("These are my notes, not a model.\n" * 20)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    folder = tmp_path / "a-folder.safetensors"
    folder.mkdir()
    return [
        ("missing", tmp_path / "no-such-model.safetensors", "not found"),
        ("truncated", truncated, "truncated safetensors model"),
        ("text file", text, "not a safetensors model"),
        ("pickle checkpoint", ckpt, "pickle"),
        ("folder", folder, "folder"),
    ]


def test_bad_model_files_fail_cleanly(
    host: EngineHost, image_model: Path, truncated_model: Path, tmp_path: Path
) -> None:
    generated(host, imagine(image_model))
    pid = host.pid
    for role in ("model_path", "vae_path", "taesd_path"):
        for what, bad, says in _bad_files(tmp_path / role, truncated_model):
            what = f"{what} as {role}"
            request = imagine(image_model)
            setattr(request, role, str(bad))
            result = run(host, request)
            failed = result.terminal
            assert isinstance(failed, p.EngineFailed), (what, result.events)
            assert failed.kind == "model", (what, failed)
            assert says in failed.message, (what, failed.message)
            assert str(bad) in failed.message, (what, failed.message)
            assert "\n" not in failed.message, what
            assert "Traceback" not in failed.message, what
            assert not result.images, what
            assert host.pid == pid, what  # checked before sd.cpp saw it: the worker lives on

    again = generated(host, imagine(image_model))
    assert not again.of(p.ModelLoaded)  # a rejected file does not even unload the model
    assert host.pid == pid


def test_a_file_sd_cpp_refuses_fails_cleanly(
    host: EngineHost, image_model: Path, taesd: Path
) -> None:
    """A sound safetensors file that is no SD model (here a TAESD): sd.cpp returns NULL."""
    generated(host, imagine(image_model))
    pid = host.pid
    for _ in range(2):  # twice: a failed load must leave nothing behind to free (or crash on)
        result = run(host, imagine(taesd))
        failed = result.terminal
        assert isinstance(failed, p.EngineFailed), result.events
        assert failed.kind == "model"
        assert failed.message.startswith(f"could not load {taesd}: ")
        assert "not recognise" in failed.message
        assert "\n" not in failed.message
        assert host.pid == pid
    again = generated(host, imagine(image_model))
    assert again.of(p.ModelLoaded)
    assert host.pid == pid


def test_unload_frees_the_model(host: EngineHost, image_model: Path) -> None:
    generated(host, imagine(image_model))
    pid = host.pid
    host.unload()
    assert host.loaded_model is None
    again = generated(host, imagine(image_model))
    assert again.of(p.ModelLoaded)
    assert host.pid == pid


BAD_PARAMETERS: list[tuple[dict[str, Any], str]] = [
    ({"width": 100}, "width must be a multiple of 64"),
    ({"height": 4096}, "height must be a multiple of 64"),
    ({"steps": 0}, "steps must be from 1"),
    ({"steps": 100_000}, "steps must be from 1"),
    ({"sampler": "warp_drive"}, "unknown sampler"),
    ({"scheduler": "someday"}, "unknown scheduler"),
    ({"strength": 2.0, "init_image": b"x"}, "strength"),
    ({"batch_count": 0}, "batch count"),
    ({"init_image": b"not an image"}, "init image is not an image"),
    ({"prompt": "  "}, "prompt is empty"),
]


def test_bad_parameters_are_input_errors(host: EngineHost, image_model: Path) -> None:
    for params, says in BAD_PARAMETERS:
        result = run(host, imagine(image_model, **params))
        failed = result.terminal
        assert isinstance(failed, p.EngineFailed), (params, result.events)
        assert failed.kind == "input", (params, failed)
        assert says in failed.message, (params, failed.message)
        assert "\n" not in failed.message, params
    generated(host, imagine(image_model))
