"""The Imagine service driven directly: real generation, saving, presets, gallery pages."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.sd_fixtures import fixture
from tui import imaging
from tui.engines.host import EngineHost
from tui.formats import ModelFileError
from tui.imaging import ImageParams
from tui.services import imagine as svc
from tui.services.imagine import GALLERY_PAGE, ImagineService
from tui.services.settings import SettingsChanged, SettingsService
from tui.store import Store


@pytest.fixture
def settings_service(app_dirs: Path) -> SettingsService:
    service = SettingsService(app_dirs / "config" / "config.toml")
    service.update(threads=1)
    return service


@pytest.fixture
def store(app_dirs: Path):
    with Store(app_dirs / "data" / "triptych.db") as store:
        yield store


def params(**changes) -> ImageParams:
    values = dict(
        prompt="a lighthouse at dusk",
        model=str(fixture("image-model")),
        width=64,
        height=64,
        steps=2,
        cfg_scale=1.0,
        seed=5,
    )
    values.update(changes)
    return ImageParams(**values)


def pixels(path: str | Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


@pytest.mark.slow
def test_a_generation_saves_a_png_with_its_parameters_and_a_gallery_row(
    settings_service: SettingsService, store: Store, app_dirs: Path
):
    host = EngineHost("image")
    service = ImagineService(host, store, settings_service)
    events: list[object] = []
    service.subscribe(events.append)
    try:
        service.generate(params())
        kinds = [type(e) for e in events]
        assert kinds[0] is svc.GenerationStarted and events[0].loading
        steps = [e for e in events if isinstance(e, svc.StepDone)]
        assert [(s.step, s.done, s.total) for s in steps] == [(1, 1, 2), (2, 2, 2)]
        saved = [e for e in events if isinstance(e, svc.ImageSaved)]
        assert len(saved) == 1 and kinds[-1] is svc.GenerationEnded
        assert events[-1].reason == "stop"
        record = saved[0].record
        path = Path(record.path)
        assert path.parent == app_dirs / "data" / "images" and path.is_file()
        embedded = imaging.read_params(path)
        assert embedded is not None and embedded.seed == 5 and embedded.steps == 2
        assert embedded.prompt == "a lighthouse at dusk"
        with Image.open(path) as image:
            assert "Seed: 5" in image.info["parameters"]
        assert [r.id for r in store.list_images()] == [record.id]
        assert record.params["seed"] == 5 and (record.width, record.height) == (64, 64)

        # Same again makes identical pixels; vary seed asks for a random one.
        events.clear()
        service.generate(ImagineService.same_again(record))
        again = next(e.record for e in events if isinstance(e, svc.ImageSaved))
        assert pixels(again.path) == pixels(record.path)
        assert ImagineService.vary_seed(record).seed == -1

        # A folder that cannot be written: the image is announced as not saved.
        blocker = app_dirs / "blocker"
        blocker.write_text("a file where the images folder should be")
        service.folder = blocker / "images"
        events.clear()
        service.generate(params())
        assert any(isinstance(e, svc.ImageNotSaved) for e in events)
        assert isinstance(events[-1], svc.GenerationEnded)
        assert len(store.list_images()) == 2 and not service.generating
    finally:
        host.shutdown()


def test_an_unreadable_init_image_fails_the_generation_in_one_line(
    settings_service: SettingsService, store: Store, app_dirs: Path
):
    host = EngineHost("image")
    service = ImagineService(host, store, settings_service)
    events: list[object] = []
    service.subscribe(events.append)
    not_image = app_dirs / "notes.txt"
    not_image.write_text("hello")
    service.generate(params(init_image=str(not_image)))
    assert len(events) == 1 and isinstance(events[0], svc.GenerationFailed)
    assert "not an image" in events[0].message
    assert not host.alive and not service.generating


def test_check_refuses_bad_parameters_and_missing_models(settings_service, store):
    service = ImagineService(EngineHost("image"), store, settings_service)
    with pytest.raises(ValueError, match="multiple of 64"):
        service.check(params(width=100))
    with pytest.raises(ValueError, match="choose an image model"):
        service.check(params(model=""))
    with pytest.raises(ModelFileError, match="not found"):
        service.check(params(model="/nonexistent.safetensors"))
    service.check(params())


def test_presets_and_models_are_saved_through_the_settings_service(
    settings_service: SettingsService, store: Store
):
    service = ImagineService(EngineHost("image"), store, settings_service)
    changes: list[object] = []
    settings_service.subscribe(changes.append)
    service.save_preset("mine", params(steps=6, width=256))
    assert service.preset("mine") == {
        "width": 256, "height": 64, "steps": 6, "cfg_scale": 1.0,
        "sampler": "default", "scheduler": "default",
    }  # fmt: skip
    assert service.preset_names()[-1] == "mine"
    assert service.preset("Quality")["steps"] == 30
    service.remember_models(params(taesd=str(fixture("taesd"))))
    assert changes == [
        SettingsChanged(frozenset({"image_presets"})),
        SettingsChanged(frozenset({"image_model", "image_taesd"})),
    ]
    reread = SettingsService(settings_service.path).current
    assert reread.image_presets["mine"]["steps"] == 6
    assert reread.image_taesd == str(fixture("taesd"))


def add_rows(db: Path, count: int) -> None:
    """Index ``count`` images straight into the database (one transaction)."""
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO images (path, prompt, seed, width, height, params, seconds, created)"
            " VALUES (?, ?, ?, 64, 64, '{}', 0, ?)",
            [(f"/images/{n}.png", f"prompt {n}", n, 1000.0 + n) for n in range(count)],
        )


def test_the_gallery_reads_a_page_at_a_time(settings_service, store: Store):
    add_rows(store.path, 250)
    service = ImagineService(EngineHost("image"), store, settings_service)
    first = service.gallery_page()
    assert len(first) == GALLERY_PAGE and first[0].seed == 249
    last = service.gallery_page(offset=200)
    assert [r.seed for r in last] == list(range(49, -1, -1))
    assert [r.seed for r in service.gallery_page("prompt 24")] == [*range(249, 239, -1), 24]


def test_delete_removes_the_file_and_the_row(settings_service, store: Store, tmp_path: Path):
    service = ImagineService(EngineHost("image"), store, settings_service)
    path = tmp_path / "one.png"
    Image.new("RGB", (64, 64), "red").save(path)
    record = store.add_image(str(path), params().to_dict(), seed=5, width=64, height=64)
    service.delete_image(record)
    assert not path.exists() and store.list_images() == []


async def test_the_gallery_opens_as_fast_with_ten_thousand_images(app_dirs: Path):
    """Opening the gallery reads one page, so 10,000 images cost what 10 do."""
    from tests.helpers import wait_until
    from tui.app import TriptychApp
    from tui.config import Settings
    from tui.screens.gallery import GalleryScreen

    async def open_gallery(count: int) -> tuple[float, int, int]:
        db = app_dirs / f"gallery-{count}.db"
        Store(db).close()
        add_rows(db, count)
        settings = Settings()
        settings.image_protocol = "halfcell"
        app = TriptychApp(settings=settings, store=Store(db))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("f3")
            await pilot.pause()
            started = time.perf_counter()
            await pilot.press("ctrl+l")
            await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 10)
            took = time.perf_counter() - started
            gallery = app.screen
            assert isinstance(gallery, GalleryScreen)
            loaded = len(gallery.records)
            # Moving to the end of what is read reads the next page.
            await pilot.press("end")
            await pilot.pause()
            more = len(gallery.records)
        return took, loaded, more

    small, small_loaded, small_more = await open_gallery(10)
    large, large_loaded, large_more = await open_gallery(10_000)
    assert (small_loaded, small_more) == (10, 10)
    assert (large_loaded, large_more) == (GALLERY_PAGE, 2 * GALLERY_PAGE)
    assert large < small * 3 + 0.3, f"10,000 images: {large:.2f}s, 10: {small:.2f}s"
