"""The Models panel (F5) under Pilot: catalog, pull from a loopback Hub, defaults,
import, delete, a failed checksum, and a snapshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.hub_server import HubServer
from tests.speech_fixtures import whisper_model
from tui import catalog, gpu
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.models import ModelsScreen
from tui.store import Store

SIZE = (80, 24)


@pytest.fixture
def hub_env(app_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRIPTYCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def make_app(tmp_path: Path) -> TriptychApp:
    return TriptychApp(settings=Settings.load(), store=Store(tmp_path / "t.db"))


def titles(screen: ModelsScreen) -> list[str]:
    return [row.title for row in screen.rows]


def status_of(screen: ModelsScreen, title: str) -> str:
    table = screen.query_one("DataTable")
    for row in screen.rows:
        if row.title == title:
            return str(table.get_cell(row.key, "status"))
    raise AssertionError(f"no row {title!r} in {titles(screen)}")


async def select(pilot, screen: ModelsScreen, title: str) -> None:
    index = titles(screen).index(title)
    screen.query_one("DataTable").move_cursor(row=index)
    await pilot.pause()


async def type_text(pilot, text: str) -> None:
    for char in text:
        await pilot.press(char if char != " " else "space")


async def test_catalog_tabs_and_the_embedded_default(app_dirs: Path, tmp_path: Path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_until(pilot, lambda: screen._scanned, what="the first scan")
        names = titles(screen)
        assert names[0] == "SmolLM2 135M Instruct Q4_1 (built in)"
        assert "Qwen2.5 1.5B Instruct" in names and "Llama 3.2 3B Instruct" in names
        assert status_of(screen, names[0]).startswith("default")
        await pilot.press("3")
        assert screen.modality == "speech"
        assert "Whisper base (English)" in titles(screen)
        await pilot.press("2")
        assert {"SD-Turbo (GGUF q8_0)", "TAESD (fast previews, SD 1/2)"} <= set(titles(screen))


async def test_pull_from_the_hub_then_make_it_the_default(hub_env: HubServer, tmp_path: Path):
    hub_env.hub.add("acme/whisper", "ggml-tiny.en.bin", whisper_model().read_bytes())
    app = make_app(tmp_path)
    models = tmp_path / "models"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5", "3")
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await pilot.press("p")
        await type_text(pilot, "acme/whisper/ggml-tiny.en.bin")
        await pilot.press("enter")
        await wait_until(pilot, lambda: (models / "ggml-tiny.en.bin").exists(), what="download")
        # The file has the catalog entry's name, so that row now shows it installed.
        await wait_until(
            pilot,
            lambda: status_of(screen, "Whisper tiny (English)").startswith("installed"),
            what="the row to show the download",
        )
        await select(pilot, screen, "Whisper tiny (English)")
        await pilot.press("enter")
        await pilot.pause()
        assert app.settings.speech_model == str(models / "ggml-tiny.en.bin")
        assert Settings.load().speech_model == str(models / "ggml-tiny.en.bin")  # saved
        assert status_of(screen, "Whisper tiny (English)").startswith("default")


async def test_catalog_download_with_a_wrong_checksum_fails_visibly(
    hub_env: HubServer, tmp_path: Path
):
    entry = catalog.find("whisper-tiny-q5")
    assert entry is not None
    # The Hub serves other bytes than the catalog pinned.
    hub_env.hub.add(entry.repo, entry.file, whisper_model().read_bytes())
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5", "3")
        screen = app.screen
        await wait_until(pilot, lambda: screen._scanned)
        await select(pilot, screen, entry.name)
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: status_of(screen, entry.name).startswith("failed"),
            what="the failure to show",
        )
        detail = str(screen.query_one("#models-detail").render())
        assert "checksum mismatch" in detail
        assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


async def test_an_interrupted_download_shows_where_it_stopped(hub_env: HubServer, tmp_path: Path):
    # What a killed app leaves: the hidden partial file beside the destination.
    entry = catalog.find("whisper-base.en")
    assert entry is not None
    entry.dest().parent.mkdir(parents=True)
    part = entry.dest().with_name(f".{entry.filename}.part")
    part.write_bytes(b"\0" * (entry.size // 4 + 1))
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5", "3")
        screen = app.screen
        await wait_until(pilot, lambda: screen._scanned)
        assert status_of(screen, entry.name) == "stopped at 25% (Enter resumes)"
        assert "Whisper base (English)" in titles(screen)  # not listed as a model file


async def test_import_then_delete(hub_env: HubServer, tmp_path: Path):
    source = tmp_path / "elsewhere" / "my-whisper.bin"
    source.parent.mkdir()
    shutil.copyfile(whisper_model(), source)
    app = make_app(tmp_path)
    installed = tmp_path / "models" / "my-whisper.bin"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        screen = app.screen
        await pilot.press("i")
        await type_text(pilot, str(source))
        await pilot.press("enter")
        await wait_until(pilot, lambda: "my-whisper.bin" in titles(screen), what="import")
        assert screen.modality == "speech"  # it switched to the imported model's tab
        assert installed.exists() and source.exists()
        await select(pilot, screen, "my-whisper.bin")
        await pilot.press("delete")
        await pilot.press("y")
        await wait_until(pilot, lambda: "my-whisper.bin" not in titles(screen), what="delete")
        assert not installed.exists() and source.exists()


async def test_every_models_action_is_in_help_and_palette(app_dirs: Path, tmp_path: Path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        commands = {c.title for c in app.get_system_commands(app.screen)}
        assert "Models" in commands
        for binding in ModelsScreen.BINDINGS:
            assert f"Models: {binding.description}" in commands
        sections = {s.title: s for s in app.key_sections()}
        assert len(sections["Models"].entries) == len(ModelsScreen.BINDINGS)


def test_models_snapshot(
    snap_compare, app_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(catalog, "total_ram", lambda: 8 << 30)
    monkeypatch.setattr(gpu, "gpus", lambda: [])  # the same picture on a GPU machine
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    app = make_app(tmp_path)

    async def prepare(pilot) -> None:
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.screen._scanned)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=prepare)
