"""Which catalog models fit this machine (GPU, RAM or neither), the chat model suggested
for it, and the one-time first-start tip (pure logic with fake GPUs, then under Pilot)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widget import Widget

from tests.helpers import wait_until
from tui import catalog, gpu, locations
from tui.app import TriptychApp
from tui.catalog import GIB, CatalogEntry
from tui.config import Settings
from tui.default_model import DEFAULT_CHAT_FILENAME
from tui.gpu import GpuInfo
from tui.library import Identity, LocalModel
from tui.screens.models import ModelsScreen
from tui.services.models import (
    TIP_TITLE,
    ModelTip,
    first_start_tip,
    record_tip_shown,
    take_first_start_tip,
)
from tui.store import Store
from tui.widgets.prompt_input import PromptInput

SIZE = (80, 24)


def fake_gpu(gib: float) -> GpuInfo:
    """A GPU that is not there: NVML is never asked in these tests."""
    return GpuInfo(0, f"Fake {gib:g} GiB GPU", int(gib * GIB), int(gib * GIB), (8, 9))


FAKE_24_GIB = [fake_gpu(24)]
NO_GPU: list[GpuInfo] = []


def needing(gib: float) -> CatalogEntry:
    return replace(catalog.find("qwen2.5-1.5b"), ram=int(gib * GIB))  # type: ignore[arg-type]


# --- where a model fits ---------------------------------------------------------------


def test_fits_with_a_24_gib_gpu_and_16_gib_of_ram() -> None:
    ram = 16 * GIB
    assert catalog.fits_on(needing(2.7), FAKE_24_GIB, ram) == "gpu"
    assert catalog.fits_on(needing(21.6), FAKE_24_GIB, ram) == "gpu"  # 90% of 24 GiB
    assert catalog.fits_on(needing(22), FAKE_24_GIB, ram) == "none"  # and > 80% of RAM
    for entry in catalog.entries("chat"):
        assert catalog.fits_on(entry, FAKE_24_GIB, ram) == "gpu"


def test_a_small_gpu_leaves_the_rest_to_ram() -> None:
    ram = 16 * GIB
    assert catalog.fits_on(needing(3.6), [fake_gpu(4)], ram) == "gpu"
    assert catalog.fits_on(needing(3.7), [fake_gpu(4)], ram) == "ram"
    assert catalog.fits_on(needing(12.8), [fake_gpu(4)], ram) == "ram"  # 80% of RAM
    assert catalog.fits_on(needing(13), [fake_gpu(4)], ram) == "none"
    # The engines use the first GPU: a bigger second one does not count.
    assert catalog.fits_on(needing(8), [fake_gpu(4), fake_gpu(80)], ram) == "ram"


def test_fits_without_a_gpu_is_ram_or_too_big() -> None:
    ram = 16 * GIB
    assert catalog.fits_on(needing(0.3), NO_GPU, ram) == "ram"
    assert catalog.fits_on(needing(12.8), NO_GPU, ram) == "ram"
    assert catalog.fits_on(needing(13), NO_GPU, ram) == "none"
    assert catalog.fits_on(needing(100), NO_GPU, 0) == "ram"  # RAM unknown: as fits() says
    for entry in catalog.CATALOG:
        assert (catalog.fits_on(entry, NO_GPU, ram) == "ram") == catalog.fits(entry, ram)
    assert catalog.FIT_LABELS == {"gpu": "GPU", "ram": "RAM", "none": "too big"}


def test_gpu_memory_is_the_first_gpus_total() -> None:
    assert catalog.gpu_memory(NO_GPU) == 0
    assert catalog.gpu_memory([fake_gpu(24), fake_gpu(80)]) == 24 * GIB


# --- the suggested chat model -----------------------------------------------------------


def test_recommends_the_largest_chat_model_that_fits_the_gpu() -> None:
    entry = catalog.recommend_chat(FAKE_24_GIB, 16 * GIB)
    assert entry is not None and entry.id == "llama3.2-3b"  # needs 2.7 GiB, the most
    assert entry.modality == "chat" and not entry.embedded


def test_the_gpu_wins_over_ram() -> None:
    # 2 GiB of GPU memory (1.8 usable): the largest on the GPU, though RAM holds more.
    entry = catalog.recommend_chat([fake_gpu(2)], 64 * GIB)
    assert entry is not None and entry.id == "qwen2.5-1.5b"


def test_without_a_gpu_it_recommends_what_half_the_ram_holds() -> None:
    entry = catalog.recommend_chat(NO_GPU, 16 * GIB)
    assert entry is not None and entry.id == "llama3.2-3b"
    entry = catalog.recommend_chat(NO_GPU, 4 * GIB)  # 2 GiB: up to Qwen2.5 1.5B (1.5 GiB)
    assert entry is not None and entry.id == "qwen2.5-1.5b"


def test_nothing_fits_no_recommendation() -> None:
    # Half of 1 GiB holds only the built-in model, which is never suggested.
    assert catalog.recommend_chat(NO_GPU, 1 * GIB) is None
    assert catalog.recommend_chat([fake_gpu(0.5)], 1 * GIB) is None
    assert catalog.recommend_chat(NO_GPU, 0) is None  # RAM unknown, no GPU: no guess


def test_equal_needs_go_to_the_first_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = catalog.find("qwen2.5-0.5b"), catalog.find("llama3.2-1b")
    assert first is not None and second is not None
    same = (replace(first, ram=GIB), replace(second, ram=GIB))
    monkeypatch.setattr(catalog, "CATALOG", same)
    assert catalog.recommend_chat(FAKE_24_GIB, 16 * GIB) == same[0]
    monkeypatch.setattr(catalog, "CATALOG", same[::-1])
    assert catalog.recommend_chat(FAKE_24_GIB, 16 * GIB) == same[1]


# --- the first-start tip, decided ----------------------------------------------------------


def local_chat(path: Path) -> LocalModel:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return LocalModel(path, Identity("chat", "model", "llama · test"), 1, "models")


def test_the_tip_with_only_the_built_in_model(tmp_path: Path) -> None:
    built_in = local_chat(tmp_path / "models" / DEFAULT_CHAT_FILENAME)
    whisper = LocalModel(tmp_path / "w.bin", Identity("speech", "model", "whisper"), 1, "models")
    state = tmp_path / "data" / "first-start.json"
    tip = first_start_tip(built_in.path, [built_in, whisper], state, FAKE_24_GIB, 16 * GIB)
    assert tip == ModelTip(catalog.find("llama3.2-3b"), "gpu")  # type: ignore[arg-type]
    assert tip is not None and "Llama 3.2 3B Instruct fits this machine's GPU" in tip.message
    assert "F5" in tip.message and tip.title == TIP_TITLE
    in_ram = first_start_tip(built_in.path, [built_in], state, NO_GPU, 16 * GIB)
    assert in_ram is not None and "fits this machine's memory" in in_ram.message
    assert not state.exists()  # deciding writes nothing


def test_no_tip_with_another_chat_model_or_another_in_use(tmp_path: Path) -> None:
    built_in = local_chat(tmp_path / "models" / DEFAULT_CHAT_FILENAME)
    other = local_chat(tmp_path / "models" / "other.gguf")
    state = tmp_path / "first-start.json"
    assert first_start_tip(built_in.path, [built_in, other], state, FAKE_24_GIB, 16 * GIB) is None
    assert first_start_tip(other.path, [other], state, FAKE_24_GIB, 16 * GIB) is None
    assert first_start_tip(Path("server:box"), [built_in], state, FAKE_24_GIB, 16 * GIB) is None
    missing = tmp_path / "elsewhere" / DEFAULT_CHAT_FILENAME  # not the file found on disk
    assert first_start_tip(missing, [built_in], state, FAKE_24_GIB, 16 * GIB) is None
    assert first_start_tip(built_in.path, [], state, FAKE_24_GIB, 16 * GIB) is None


def test_no_tip_when_nothing_fits(tmp_path: Path) -> None:
    built_in = local_chat(tmp_path / DEFAULT_CHAT_FILENAME)
    state = tmp_path / "first-start.json"
    assert first_start_tip(built_in.path, [built_in], state, NO_GPU, 1 * GIB) is None


def test_no_tip_when_the_state_file_exists_whatever_it_holds(tmp_path: Path) -> None:
    built_in = local_chat(tmp_path / DEFAULT_CHAT_FILENAME)
    state = tmp_path / "first-start.json"
    for content in (b"", b"\x00\xffnot json{", b"{}"):
        state.write_bytes(content)
        assert first_start_tip(built_in.path, [built_in], state, FAKE_24_GIB, 16 * GIB) is None
    state.unlink()
    state.mkdir()  # even a folder in its place
    assert first_start_tip(built_in.path, [built_in], state, FAKE_24_GIB, 16 * GIB) is None


def test_record_tip_shown_never_replaces_a_file(tmp_path: Path) -> None:
    tip = ModelTip(catalog.find("qwen2.5-1.5b"), "ram")  # type: ignore[arg-type]
    state = tmp_path / "data" / "first-start.json"
    assert record_tip_shown(state, tip)
    assert json.loads(state.read_text())["chat_model_tip"] == "qwen2.5-1.5b"
    state.write_bytes(b"garbage \xff")
    assert not record_tip_shown(state, tip)
    assert state.read_bytes() == b"garbage \xff"


# --- the first-start tip, once, with the files on disk --------------------------------------


@pytest.fixture
def first_start(app_dirs: Path, tmp_path: Path, chat_model: Path, monkeypatch: pytest.MonkeyPatch):
    """Only the built-in chat model (the fixtures' models folder), no tip shown yet, a fake
    24 GiB GPU and 16 GiB of RAM."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(gpu, "gpus", lambda: list(FAKE_24_GIB))
    monkeypatch.setattr(catalog, "total_ram", lambda: 16 * GIB)
    state = locations.first_start_file()
    state.unlink()  # app_dirs marks it shown for every other test
    return state


def test_take_first_start_tip_once(first_start: Path) -> None:
    tip = take_first_start_tip(Settings())
    assert tip is not None and tip.entry.id == "llama3.2-3b" and tip.fits_on == "gpu"
    assert json.loads(first_start.read_text())["chat_model_tip"] == "llama3.2-3b"
    assert take_first_start_tip(Settings()) is None  # the next start


def test_an_unreadable_state_file_is_left_alone(first_start: Path) -> None:
    first_start.write_bytes(b"\xff\xfe{{ not json")
    assert take_first_start_tip(Settings()) is None
    assert first_start.read_bytes() == b"\xff\xfe{{ not json"


def test_no_tip_when_a_server_model_is_in_use(first_start: Path) -> None:
    assert take_first_start_tip(Settings(), "server:box/some-model") is None
    assert not first_start.exists()


def tip_shown(app: TriptychApp) -> bool:
    return any(n.title == TIP_TITLE for n in app._notifications)


def toasts(app: TriptychApp) -> list[Widget]:
    return [t for t in app.screen.query("Toast") if t.region.area]


async def open_models(pilot, app: TriptychApp) -> tuple[ModelsScreen, dict[str, str]]:
    """F5, wait for the models scan, and the status column by row key."""
    await pilot.press("f5")
    screen = app.screen
    assert isinstance(screen, ModelsScreen)
    await wait_until(pilot, lambda: screen._scanned, 30, "the models scan")
    table = screen.query_one("DataTable")
    return screen, {row.key: str(table.get_cell(row.key, "status")) for row in screen.rows}


async def test_the_app_shows_the_tip_on_first_start_only(first_start: Path, tmp_path: Path):
    app = TriptychApp(settings=Settings(), store=Store(tmp_path / "t.db"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: tip_shown(app), 30, "the first-start tip")
        await wait_until(pilot, lambda: bool(toasts(app)), 5, "the tip on screen")
        assert len(toasts(app)) == 1
        region = toasts(app)[0].region
        assert region.right <= SIZE[0] and region.bottom <= SIZE[1]  # fits 80x24
        notification = next(n for n in app._notifications if n.title == TIP_TITLE)
        assert "Llama 3.2 3B Instruct fits this machine's GPU" in notification.message
        assert "F5" in notification.message
        await pilot.press("h")  # any key hides it, and still does what it does
        await pilot.pause()
        assert not tip_shown(app) and not toasts(app)
        assert app.screen.query_one(PromptInput).text == "h"
        screen, statuses = await open_models(pilot, app)
        assert statuses["catalog:llama3.2-3b"] == "fits GPU · recommended"
        assert statuses["catalog:qwen2.5-0.5b"] == "fits GPU"
        header = str(screen.query_one("#models-ram").render())
        assert header == "GPU 24.0 GiB · RAM 16.0 GiB"
    assert json.loads(first_start.read_text())["chat_model_tip"] == "llama3.2-3b"

    again = TriptychApp(settings=Settings(), store=Store(tmp_path / "t.db"))
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await again.workers.wait_for_complete()
        await pilot.pause()
        assert not tip_shown(again)


async def test_models_panel_marks_too_big_without_a_gpu(
    app_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(gpu, "gpus", lambda: [])
    monkeypatch.setattr(catalog, "total_ram", lambda: 3 * GIB)  # 80%: 2.4 GiB
    app = TriptychApp(settings=Settings(), store=Store(tmp_path / "t.db"))
    async with app.run_test(size=SIZE) as pilot:
        screen, statuses = await open_models(pilot, app)
        assert statuses["catalog:llama3.2-3b"] == "too big"  # 2.7 GiB
        assert statuses["catalog:smollm2-1.7b"] == "fits RAM"  # 2.1 GiB
        # Half the RAM (1.5 GiB) holds Qwen2.5 1.5B at most.
        assert statuses["catalog:qwen2.5-1.5b"] == "fits RAM · recommended"
        assert str(screen.query_one("#models-ram").render()) == "RAM 3.0 GiB"
        assert not tip_shown(app)  # app_dirs: the tip was shown before
