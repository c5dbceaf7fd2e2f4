"""GPU use without settings: gpu_layers "auto", the layer plan, the fallback on a failed load,
VRAM on the status line and in the memory budget.

This machine has no GPU and a CPU build of the bindings: the pure logic is tested
with fakes (named so), and one real chat request checks that "auto" quietly
means the CPU here.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tui import gpu
from tui.budget import MemoryBudget, request_vram_need
from tui.config import Settings, load_layers
from tui.engines import protocol as p
from tui.engines.host import EngineHost
from tui.formats import human_size
from tui.formats.gguf import read_gguf_info
from tui.gpu import (
    AUTO,
    GPU_LAYERS_HELP,
    LayerPlan,
    compute_reserve,
    load_with_gpu_fallback,
    parse_gpu_layers,
    plan_gpu_layers,
)

MIB = 1 << 20
GIB = 1 << 30
SMOLLM2_LAYERS = 30
"""SmolLM2-135M's block count; llama.cpp counts one more, the output layer."""

# --- parsing the setting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", AUTO), (" AUTO ", AUTO), ("-1", -1), ("0", 0), ("12", 12), (12, 12), (-1, -1)],
)
def test_parse_gpu_layers_accepts_auto_and_whole_numbers(value: object, expected: object) -> None:
    assert parse_gpu_layers(value) == expected


@pytest.mark.parametrize("value", ["lots", "", "1.5", True, 2.5, -2, "-7", None])
def test_parse_gpu_layers_refuses_anything_else(value: object) -> None:
    with pytest.raises(ValueError, match="gpu_layers must be"):
        parse_gpu_layers(value)


# --- the plan --------------------------------------------------------------------------


def test_a_cpu_build_uses_no_layers_and_says_nothing() -> None:
    for setting in (AUTO, -1, 12):
        plan = plan_gpu_layers(setting, 32, 4 * GIB, GIB, 80 * GIB, offload_supported=False)
        assert plan == LayerPlan(0, 33, "")


def test_auto_takes_every_layer_when_the_model_fits() -> None:
    plan = plan_gpu_layers(AUTO, 32, 4 * GIB, GIB, 10 * GIB, offload_supported=True)
    assert plan == LayerPlan(33, 33, "")


def test_auto_offloads_everything_when_nvml_cannot_tell() -> None:
    assert plan_gpu_layers(AUTO, 32, 4 * GIB, GIB, None, True) == LayerPlan(33, 33, "")
    # No layer count in the header either: -1 is llama.cpp's "all".
    assert plan_gpu_layers(AUTO, 0, 4 * GIB, GIB, None, True) == LayerPlan(-1, 0, "")


def test_auto_takes_as_many_layers_as_fit_and_says_so() -> None:
    model, kv, free = 33 * 256 * MIB, 32 * 32 * MIB, 6 * GIB  # 256 + 32 MiB a layer
    plan = plan_gpu_layers(AUTO, 32, model, kv, free, offload_supported=True)
    fitting = int((free - compute_reserve(model)) // (256 * MIB + 32 * MIB))
    assert 0 < fitting < 33
    need = model + kv + compute_reserve(model)
    assert plan == LayerPlan(
        fitting,
        33,
        f"{fitting} of 33 layers on the GPU: the model needs {human_size(need)},"
        f" 6.0 GiB of VRAM free",
    )


def test_auto_uses_the_cpu_when_not_one_layer_fits() -> None:
    plan = plan_gpu_layers(AUTO, 32, 8 * GIB, GIB, 256 * MIB, offload_supported=True)
    assert plan.layers == 0 and plan.total == 33
    assert plan.note.startswith("loaded on the CPU: the model needs ")
    assert plan.note.endswith("256.0 MiB of VRAM free")
    # Without a layer count nothing can be split: all or nothing.
    assert plan_gpu_layers(AUTO, 0, 8 * GIB, GIB, 4 * GIB, True).layers == 0


def test_the_compute_reserve_is_at_least_512_mib_and_a_tenth_of_big_models() -> None:
    assert compute_reserve(100 * MIB) == 512 * MIB
    assert compute_reserve(20 * GIB) == 2 * GIB


def test_an_explicit_number_is_respected_but_capped_at_the_model() -> None:
    for setting, layers in ((5, 5), (99, 33), (-1, 33), (0, 0)):
        plan = plan_gpu_layers(setting, 32, 4 * GIB, GIB, 256 * MIB, offload_supported=True)
        assert plan == LayerPlan(layers, 33, ""), setting


# --- the settings ----------------------------------------------------------------------


def test_gpu_layers_defaults_to_auto() -> None:
    assert Settings().gpu_layers == AUTO
    assert p.ChatRequest(model_path="m", messages=[]).gpu_layers == AUTO
    assert p.CountTokens(model_path="m", texts=[]).gpu_layers == AUTO


@pytest.mark.parametrize(
    ("line", "expected"),
    [('"auto"', AUTO), ("-1", -1), ("12", 12), ('"12"', 12), ("0", 0)],
)
def test_the_settings_file_takes_auto_or_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, expected: object
) -> None:
    monkeypatch.delenv("TRIPTYCH_GPU_LAYERS", raising=False)
    path = tmp_path / "config.toml"
    path.write_text(f"gpu_layers = {line}\n")  # an old file's number keeps working
    layers = load_layers(path)
    assert layers.problems == [] and layers.settings.gpu_layers == expected


def test_a_bad_value_in_the_file_is_one_problem_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIPTYCH_GPU_LAYERS", raising=False)
    path = tmp_path / "config.toml"
    path.write_text('gpu_layers = "lots"\n')
    layers = load_layers(path)
    assert layers.settings.gpu_layers == AUTO
    assert layers.problems == [
        f"{path}: gpu_layers = 'lots' is not {GPU_LAYERS_HELP}; using 'auto'"
    ]


@pytest.mark.parametrize(("env", "expected"), [("auto", AUTO), ("-1", -1), ("12", 12)])
def test_the_environment_takes_auto_or_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, expected: object
) -> None:
    monkeypatch.setenv("TRIPTYCH_GPU_LAYERS", env)
    path = tmp_path / "config.toml"
    path.write_text("gpu_layers = 4\n")
    layers = load_layers(path)
    assert layers.problems == [] and layers.settings.gpu_layers == expected
    assert layers.env_fields == ["gpu_layers"]


def test_a_bad_environment_value_is_ignored_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIPTYCH_GPU_LAYERS", "lots")
    layers = load_layers(tmp_path / "missing.toml")
    assert layers.settings.gpu_layers == AUTO and layers.env_fields == []
    assert layers.problems == [f"TRIPTYCH_GPU_LAYERS='lots' is not {GPU_LAYERS_HELP}; ignored"]


# --- the fallback on a failed load -----------------------------------------------------


class FakeLoader:
    """Stands in for llama_cpp.Llama: fails like a full GPU above ``room`` layers."""

    def __init__(self, room: int, message: str = "Failed to create llama_context") -> None:
        self.room = room
        self.message = message
        self.tries: list[int] = []

    def __call__(self, layers: int) -> str:
        self.tries.append(layers)
        if layers > self.room or (layers < 0 and self.room < 1000):
            raise ValueError(self.message)
        return f"model with {layers} layers"


def test_a_load_that_fits_is_tried_once() -> None:
    load = FakeLoader(room=33)
    assert load_with_gpu_fallback(load, 33, 33) == ("model with 33 layers", 33, "")
    assert load.tries == [33]


def test_no_room_for_all_layers_retries_with_half() -> None:
    load = FakeLoader(room=20)
    model, layers, note = load_with_gpu_fallback(load, 33, 33)
    assert (model, layers) == ("model with 16 layers", 16)
    assert note == "16 of 33 layers on the GPU: no room for more (Failed to create llama_context)"
    assert load.tries == [33, 16]


def test_no_room_at_all_loads_on_the_cpu() -> None:
    load = FakeLoader(room=0, message="Failed to load model from file: m.gguf")
    model, layers, note = load_with_gpu_fallback(load, -1, 33)
    assert (model, layers) == ("model with 0 layers", 0)
    assert note == "loaded on the CPU: the GPU had no room (Failed to load model from file: m.gguf)"
    assert load.tries == [-1, 16, 0]


def test_a_cpu_load_that_fails_raises_its_own_error() -> None:
    load = FakeLoader(room=-5, message="unknown model architecture")
    with pytest.raises(ValueError, match="unknown model architecture"):
        load_with_gpu_fallback(load, 0, 33)
    assert load.tries == [0]
    load = FakeLoader(room=-5, message="unknown model architecture")
    with pytest.raises(ValueError, match="unknown model architecture"):
        load_with_gpu_fallback(load, 1, 33)
    assert load.tries == [1, 0]


def test_other_errors_are_not_taken_for_a_full_gpu() -> None:
    def load(layers: int) -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        load_with_gpu_fallback(load, 33, 33)


class _ListChannel:
    """Collects the events an in-process engine emits (stands in for the pipe)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


def test_the_engine_falls_back_when_the_gpu_has_no_room(
    chat_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real engine and model, with a fake GPU build whose loads fail above 15 layers."""
    import llama_cpp

    from tui.engines import chat as chat_engine

    real_llama = llama_cpp.Llama
    asked: list[int] = []

    def fake_gpu_llama(**kwargs: Any) -> Any:
        asked.append(kwargs["n_gpu_layers"])
        if kwargs["n_gpu_layers"] > 15:
            raise ValueError("Failed to create llama_context")
        return real_llama(**{**kwargs, "n_gpu_layers": 0})

    monkeypatch.setattr(llama_cpp, "Llama", fake_gpu_llama)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    monkeypatch.setattr(chat_engine, "free_vram", lambda: None)  # NVML cannot tell: all layers

    engine = chat_engine.ChatEngine()
    request = p.ChatRequest(model_path=str(chat_model), messages=[], n_ctx=512, n_threads=1)
    channel = _ListChannel()
    try:
        assert engine._load(request, channel)  # type: ignore[arg-type]
        (loaded,) = channel.events
        assert isinstance(loaded, p.ModelLoaded)
        total = SMOLLM2_LAYERS + 1
        assert asked == [total, total // 2]
        assert (loaded.gpu_layers, loaded.gpu_layers_total) == (total // 2, total)
        assert loaded.note == (
            f"{total // 2} of {total} layers on the GPU: no room for more"
            " (Failed to create llama_context)"
        )
        # The same setting keeps the model; "AUTO" is the same setting; another one reloads.
        request.gpu_layers = "AUTO"
        assert engine._load(request, channel) and len(channel.events) == 1  # type: ignore[arg-type]
        request.gpu_layers = 0
        assert engine._load(request, channel)  # type: ignore[arg-type]
        assert len(channel.events) == 2 and channel.events[1].gpu_layers == 0
        assert channel.events[1].note == "" and asked[-1] == 0
    finally:
        engine._unload()


def test_the_engine_plans_with_free_vram(chat_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake GPU with 100 MiB free: SmolLM2 and the compute reserve do not fit."""
    import llama_cpp

    from tui.engines import chat as chat_engine

    real_llama = llama_cpp.Llama
    asked: list[int] = []

    def fake_gpu_llama(**kwargs: Any) -> Any:
        asked.append(kwargs["n_gpu_layers"])
        return real_llama(**kwargs)

    fake_gpu = gpu.GpuInfo(0, "Fake GPU", 8 * GIB, 100 * MIB, (9, 0))
    monkeypatch.setattr(llama_cpp, "Llama", fake_gpu_llama)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    monkeypatch.setattr(chat_engine, "free_vram", lambda: fake_gpu.free_bytes)
    engine = chat_engine.ChatEngine()
    request = p.ChatRequest(model_path=str(chat_model), messages=[], n_ctx=512, n_threads=1)
    channel = _ListChannel()
    try:
        assert engine._load(request, channel)  # type: ignore[arg-type]
    finally:
        engine._unload()
    (loaded,) = channel.events
    assert asked == [0] and loaded.gpu_layers == 0
    assert loaded.note.startswith("loaded on the CPU: the model needs ")
    assert loaded.note.endswith("100.0 MiB of VRAM free")


# --- the real engine on this CPU build -------------------------------------------------


def test_auto_on_a_cpu_build_loads_on_the_cpu_and_answers(chat_model: Path, tmp_path: Path) -> None:
    host = EngineHost("chat", log_dir=tmp_path)
    request = p.ChatRequest(
        model_path=str(chat_model),
        messages=[
            p.ChatMessage("system", "You are a helpful assistant."),
            p.ChatMessage("user", "Name the capital city of France."),
        ],
        n_ctx=512,
        n_threads=1,
        temperature=0.0,
        max_tokens=16,
        gpu_layers=AUTO,
    )
    try:
        events = list(host.submit(request))
    finally:
        host.shutdown()
    loaded = [e for e in events if isinstance(e, p.ModelLoaded)]
    assert len(loaded) == 1, events
    assert (loaded[0].gpu_layers, loaded[0].note) == (0, "")
    assert loaded[0].gpu_layers_total == SMOLLM2_LAYERS + 1
    assert isinstance(events[-1], p.GenerationFinished), events
    text = "".join(e.text for e in events if isinstance(e, p.TokenGenerated))
    assert "Paris" in text


# --- the status line ---------------------------------------------------------------------


def _fake_host(engine: str, pid: int, model: str = "", alive: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        engine=engine, pid=pid, alive=alive, loaded_model=model or None, waiting_for=[]
    )


def _status(monkeypatch: pytest.MonkeyPatch, vram: dict[int, int]) -> tuple[str, int]:
    from tui.widgets import engine_status

    calls = []

    def fake_process_vram() -> dict[int, int]:
        calls.append(1)
        return vram

    monkeypatch.setattr(gpu, "process_vram", fake_process_vram)
    monkeypatch.setattr(engine_status, "process_rss", lambda pid: 310 * MIB if pid else 0)
    app = SimpleNamespace(
        chat_host=_fake_host("chat", 101, "/m/SmolLM2-135M-Instruct.Q4_1.gguf"),
        image_host=_fake_host("image", 102, "/m/sd_turbo.safetensors"),
        speech_host=_fake_host("speech", 103, alive=False),
        budget=None,
        downloads=None,
    )
    fake_widget = SimpleNamespace(app=app)
    return engine_status.EngineStatus.status_text(fake_widget), len(calls)  # type: ignore[arg-type]


def test_the_status_line_shows_vram_beside_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    text, calls = _status(monkeypatch, {101: int(1.2 * GIB), 999: GIB})
    assert text == (
        "chat SmolLM2-135M-Instruct… 310.0 MiB + 1.2 GiB VRAM · image sd_turbo 310.0 MiB"
    )
    assert calls == 1  # one NVML query a refresh, not one per engine


def test_the_status_line_without_a_gpu_is_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    text, _ = _status(monkeypatch, {})
    assert text == "chat SmolLM2-135M-Instruct… 310.0 MiB · image sd_turbo 310.0 MiB"


# --- the memory budget's VRAM side ---------------------------------------------------------


class FakeHost:
    """Stands in for an EngineHost: what the budget reads, and release()."""

    def __init__(self, engine: str, pid: int, model: str, last_used: float, busy: bool = False):
        self.engine, self.pid, self.loaded_model = engine, pid, model
        self.last_used, self.busy, self.alive = last_used, busy, True
        self.before_load: Any = None

    def release(self) -> bool:
        if self.busy:
            return False
        self.alive, self.loaded_model = False, None
        return True


# Process ids no process has (the RAM side reads /proc/<pid>: it finds nothing).
CHAT_PID, IMAGE_PID, SPEECH_PID = 999_999_991, 999_999_992, 999_999_993


def _budget(free: int, vram: dict[int, int], busy_image: bool = False):
    chat = FakeHost("chat", CHAT_PID, "", last_used=3.0)
    chat.alive = False
    image = FakeHost("image", IMAGE_PID, "/m/sd.safetensors", last_used=1.0, busy=busy_image)
    speech = FakeHost("speech", SPEECH_PID, "/m/ggml-base.bin", last_used=2.0)
    told: list[str] = []
    budget = MemoryBudget(
        [chat, image, speech],
        limit=1 << 40,
        notify=told.append,
        free_vram=lambda: free,
        process_vram=lambda: vram,
    )
    return budget, (chat, image, speech), told


def _chat_request(model: Path, gpu_layers: int | str = AUTO) -> p.ChatRequest:
    return p.ChatRequest(model_path=str(model), messages=[], n_ctx=512, gpu_layers=gpu_layers)


def test_short_vram_unloads_idle_engines_least_recently_used_first(chat_model: Path) -> None:
    vram = {IMAGE_PID: 2 * GIB, SPEECH_PID: 300 * MIB}
    budget, (chat, image, speech), told = _budget(10 * MIB, vram)
    assert budget.make_room(chat, _chat_request(chat_model)) == ["image"]
    assert not image.alive and speech.alive
    assert told == [
        "Unloaded the image model sd.safetensors (2.0 GiB of VRAM) to make room in VRAM"
        f" ({human_size(request_vram_need(_chat_request(chat_model)))} needed)"
    ]


def test_a_busy_engine_keeps_its_vram(chat_model: Path) -> None:
    vram = {IMAGE_PID: 2 * GIB, SPEECH_PID: 300 * MIB}
    budget, (chat, image, speech), _ = _budget(10 * MIB, vram, busy_image=True)
    assert budget.make_room(chat, _chat_request(chat_model)) == ["speech"]
    assert image.alive and not speech.alive


def test_nothing_is_unloaded_when_it_fits_or_without_a_gpu(chat_model: Path) -> None:
    vram = {IMAGE_PID: 2 * GIB, SPEECH_PID: 300 * MIB}
    budget, (chat, image, speech), told = _budget(8 * GIB, vram)
    assert budget.make_room(chat, _chat_request(chat_model)) == []
    budget, (chat, image, speech), told = _budget(0, {})  # no GPU: NVML lists nothing
    assert budget.make_room(chat, _chat_request(chat_model)) == []
    budget, (chat, image, speech), told = _budget(0, vram)  # a CPU-only request
    assert budget.make_room(chat, _chat_request(chat_model, gpu_layers=0)) == []
    assert image.alive and speech.alive and told == []


def test_vram_need(chat_model: Path, tmp_path: Path) -> None:
    info = read_gguf_info(chat_model)
    full = info.file_size + info.kv_cache_bytes(512)
    total = SMOLLM2_LAYERS + 1
    assert request_vram_need(_chat_request(chat_model)) == full
    assert request_vram_need(_chat_request(chat_model, -1)) == full
    assert request_vram_need(_chat_request(chat_model, 10)) == full * 10 // total
    assert request_vram_need(_chat_request(chat_model, 0)) == 0
    weights = tmp_path / "sd.safetensors"
    weights.write_bytes(b"x" * 1000)
    assert request_vram_need(p.ImageRequest(model_path=str(weights), prompt="a")) == 1000
    speech = p.TranscribeRequest(model_path=str(weights))
    assert request_vram_need(speech) == 1000
    speech.use_gpu = False
    assert request_vram_need(speech) == 0
