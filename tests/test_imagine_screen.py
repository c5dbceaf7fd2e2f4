"""The Imagine panel and gallery driven with Pilot (UI logic; the engine runs in
tests/test_imagine_generate.py and tests/test_image_engine.py)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.helpers import wait_until
from tui import imaging
from tui.app import TriptychApp
from tui.config import Settings
from tui.imaging import ImageParams
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.screens.gallery import GalleryScreen
from tui.screens.imagine import ImagineScreen
from tui.store import Store

SIZE = (80, 24)


def make_app(**settings_changes) -> TriptychApp:
    settings = Settings()
    settings.image_protocol = "halfcell"
    for key, value in settings_changes.items():
        setattr(settings, key, value)
    return TriptychApp(settings=settings, store=Store())


def add_gallery_image(store: Store, tmp_path: Path, seed: int, colour: str) -> Path:
    params = ImageParams(prompt=f"a {colour} square", model="/models/m.safetensors", seed=seed)
    path = tmp_path / f"{colour}.png"
    image = Image.new("RGB", (64, 64), colour)
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    imaging.save_png(buffer.getvalue(), path, params)
    store.add_image(str(path), params.to_dict(), seed=seed, width=64, height=64)
    return path


async def open_imagine(pilot) -> ImagineScreen:
    await pilot.press("f3")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, ImagineScreen)
    return screen


async def test_invalid_parameters_are_refused_before_anything_runs(app_dirs):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_imagine(pilot)
        screen.query_one("#prompt").text = "a lighthouse"
        screen.query_one("#model").value = "/nonexistent.safetensors"
        screen.query_one("#width").value = "100"
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert "multiple of 64" in str(screen.query_one("#info").render())
        assert not screen.generating and not app.image_host.alive
        screen.query_one("#width").value = "64"
        screen.query_one("#steps").value = "0"
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert "steps" in str(screen.query_one("#info").render())
        screen.query_one("#steps").value = "2"
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert "not found" in str(screen.query_one("#info").render())
        assert not app.image_host.alive


async def test_presets_fill_the_form_and_user_presets_are_saved(app_dirs):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_imagine(pilot)
        screen.query_one("#preset").value = "Turbo (SD-Turbo, SDXS)"
        await pilot.pause()
        assert screen.query_one("#steps").value == "2"
        assert screen.query_one("#cfg_scale").value == "1.0"
        screen.query_one("#steps").value = "6"
        screen.query_one("#width").value = "256"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
        await pilot.press(*"mine", "enter")
        await pilot.pause()
    saved = Settings.load().image_presets["mine"]
    assert saved["steps"] == 6 and saved["width"] == 256


async def test_gallery_actions(app_dirs, tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        red = add_gallery_image(app.store, tmp_path, 11, "red")
        blue = add_gallery_image(app.store, tmp_path, 22, "blue")
        screen = await open_imagine(pilot)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 5)
        gallery = app.screen
        assert [r.seed for r in gallery.records] == [22, 11]
        # Copy the path of the newest.
        await pilot.press("y")
        assert app.clipboard == str(blue)
        # Use the older one as the init image.
        await pilot.press("down", "i")
        await wait_until(pilot, lambda: app.screen is screen, 5)
        assert screen.query_one("#init_image").value == str(red)
        # Open: the form takes the image's parameters.
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, 5)
        assert screen.query_one("#prompt").text == "a blue square"
        assert screen.query_one("#seed").value == "22"
        # Delete asks first and removes file and record.
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 5)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("y")
        await wait_until(pilot, lambda: len(app.store.list_images()) == 1, 5)
        assert not blue.exists() and red.exists()
        # Search by prompt.
        await pilot.press("slash", *"zebra")
        await pilot.pause()
        assert app.screen.records == []
        await pilot.press("escape", "escape")
        await wait_until(pilot, lambda: app.screen is screen, 5)


async def test_full_screen_view_without_a_terminal_says_so(app_dirs, tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        add_gallery_image(app.store, tmp_path, 5, "green")
        await open_imagine(pilot)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 5)
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, GalleryScreen)  # still running, nothing crashed


def test_imagine_snapshot(snap_compare, app_dirs):
    async def prepare(pilot):
        await pilot.press("f3")
        await pilot.pause()
        pilot.app.screen.query_one("#prompt").cursor_blink = False
        pilot.app.screen.query_one("#prompt").text = "a lighthouse at dusk, oil painting"

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=prepare)


def test_gallery_snapshot(snap_compare, app_dirs, tmp_path):
    app = make_app()
    add_gallery_image(app.store, tmp_path, 11, "red")
    add_gallery_image(app.store, tmp_path, 22, "blue")

    async def prepare(pilot):
        await pilot.press("f3")
        await pilot.pause()
        pilot.app.screen.query_one("#prompt").cursor_blink = False
        await pilot.press("ctrl+l")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=prepare)
