"""Imagine with the real binding on the random-weight fixture, driven with Pilot."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tests.helpers import wait_until
from tests.sd_fixtures import fixture
from tui import imaging
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.gallery import GalleryScreen
from tui.screens.imagine import ImagineScreen
from tui.store import Store
from tui.widgets.image_view import ImageView

pytestmark = pytest.mark.slow
SIZE = (80, 24)


def make_app() -> TriptychApp:
    settings = Settings()
    settings.image_protocol = "halfcell"
    settings.threads = 1
    return TriptychApp(settings=settings, store=Store())


async def imagine(pilot, *, width=64, height=64, steps=2, seed=5, taesd=False) -> ImagineScreen:
    if not isinstance(pilot.app.screen, ImagineScreen):
        await pilot.press("f3")
        await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, ImagineScreen)
    values = {
        "#model": str(fixture("image-model")),
        "#width": str(width),
        "#height": str(height),
        "#steps": str(steps),
        "#cfg_scale": "1.0",
        "#seed": str(seed),
        "#taesd": str(fixture("taesd")) if taesd else "",
    }
    for selector, value in values.items():
        screen.query_one(selector).value = value
    screen.query_one("#prompt").text = "a lighthouse at dusk"
    return screen


async def generate(pilot, screen: ImagineScreen, timeout: float = 60) -> None:
    before = len(pilot.app.store.list_images())
    await pilot.press("ctrl+g")
    await wait_until(
        pilot,
        lambda: not screen.generating and len(pilot.app.store.list_images()) > before,
        timeout,
        "the image",
    )


def pixels(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


async def test_generate_shows_saves_and_reproduces(app_dirs):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await imagine(pilot, width=128, height=64, steps=2, seed=5, taesd=True)
        previews = []
        original = screen._show_png
        screen._show_png = lambda png: (previews.append(png), original(png))
        await generate(pilot, screen)
        record = app.store.list_images()[0]
        assert (record.width, record.height, record.seed) == (128, 64, 5)
        assert pixels(record.path).size == (128, 64)
        assert previews, "no live preview arrived"
        params = imaging.read_params(Path(record.path))
        assert params.prompt == "a lighthouse at dusk" and params.seed == 5
        assert params.steps == 2 and params.width == 128
        bar = screen.query_one("#progress")
        assert bar.progress == bar.total == 2
        assert "seed 5" in str(screen.query_one("#info").render())
        assert screen.query_one("#image", ImageView).source == record.path
        # Same again from the gallery: identical pixels.
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 5)
        await pilot.press("a")
        await wait_until(pilot, lambda: app.screen is screen, 5)
        await wait_until(
            pilot, lambda: not screen.generating and len(app.store.list_images()) == 2, 60
        )
        again = app.store.list_images()[0]
        assert again.seed == 5 and again.path != record.path
        assert ImageChops.difference(pixels(record.path), pixels(again.path)).getbbox() is None
        # Vary seed: new seed, different pixels.
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 5)
        await pilot.press("s")
        await wait_until(pilot, lambda: app.screen is screen, 5)
        await wait_until(
            pilot, lambda: not screen.generating and len(app.store.list_images()) == 3, 60
        )
        varied = app.store.list_images()[0]
        assert varied.seed != 5
        assert ImageChops.difference(pixels(record.path), pixels(varied.path)).getbbox()


async def test_stop_within_a_second_then_generate_again(app_dirs):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await imagine(pilot, width=256, height=256, steps=30, seed=1)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: screen.query_one("#progress").progress >= 1, 60)
        await pilot.press("escape")
        took = await wait_until(pilot, lambda: not screen.generating, 5, "the stop")
        assert took < 1.0
        assert "Stopped" in str(screen.query_one("#info").render())
        assert app.store.list_images() == []
        screen = await imagine(pilot, seed=2)
        await generate(pilot, screen)
        assert len(app.store.list_images()) == 1


async def test_engine_crash_leaves_the_app_usable(app_dirs):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await imagine(pilot, width=256, height=256, steps=30, seed=1)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: screen.query_one("#progress").progress >= 1, 60)
        os.kill(app.image_host.pid, signal.SIGKILL)
        await wait_until(pilot, lambda: not screen.generating, 5)
        assert "killed" in str(screen.query_one("#info").render())
        screen = await imagine(pilot, seed=3)
        await generate(pilot, screen)
        assert len(app.store.list_images()) == 1


async def test_image_to_image_from_the_gallery(app_dirs):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await imagine(pilot, steps=4, seed=9)
        await generate(pilot, screen)
        source = app.store.list_images()[0]
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 5)
        await pilot.press("i")
        await wait_until(pilot, lambda: app.screen is screen, 5)
        assert screen.query_one("#init_image").value == source.path
        screen.query_one("#strength").value = "0.5"
        await generate(pilot, screen)
        result = app.store.list_images()[0]
        params = imaging.read_params(Path(result.path))
        assert params.init_image == source.path and params.strength == 0.5
        assert pixels(result.path).size == (64, 64)
