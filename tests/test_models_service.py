"""The Models service driven directly: scan, import, defaults, delete, folders, pulls."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.sd_fixtures import fixture
from tests.speech_fixtures import whisper_model
from tui.engines.host import EngineHost
from tui.hub import DownloadError, DownloadQueue
from tui.imaging import ImageParams, image_request
from tui.services import models as svc
from tui.services.models import ModelFileError, ModelsService
from tui.services.settings import SettingsChanged, SettingsService


@pytest.fixture
def env(app_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRIPTYCH_MODELS_DIR", str(app_dirs / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(app_dirs / "hf-cache"))
    return app_dirs


def make_service(env: Path, hosts=()) -> tuple[ModelsService, SettingsService, list[object]]:
    settings = SettingsService(env / "config" / "config.toml")
    service = ModelsService(settings, DownloadQueue(), hosts)
    events: list[object] = []
    service.subscribe(events.append)
    settings.subscribe(events.append)
    return service, settings, events


def speech_source(env: Path) -> Path:
    source = env / "elsewhere" / "my-whisper.bin"
    source.parent.mkdir(exist_ok=True)
    shutil.copyfile(whisper_model(), source)
    return source


def test_import_scan_default_and_delete_with_real_files(env: Path):
    service, settings, events = make_service(env)
    assert service.scan() == [] and service.scanned
    source = speech_source(env)

    model = service.import_file(source)
    assert model.path == env / "models" / "my-whisper.bin" and source.exists()
    assert events == [svc.LibraryScanned(()), svc.ModelImported(model)]

    found = service.scan()
    assert [(m.path, m.modality, m.source) for m in found] == [(model.path, "speech", "models")]
    row = next(r for r in service.rows("speech") if r.local is not None)
    assert row.key == f"file:{model.path}" and service.status(row) == (
        "✓",
        "installed · models folder",
    )

    events.clear()
    service.make_default(model.path)
    assert settings.current.speech_model == str(model.path)
    assert SettingsService(settings.path).current.speech_model == str(model.path)
    assert service.status(row) == ("★", "default · models folder")
    assert events[0] == SettingsChanged(frozenset({"speech_model"}))
    assert isinstance(events[1], svc.DefaultChanged) and events[1].setting == "speech_model"

    events.clear()
    assert service.delete(model) is True
    assert not model.path.exists() and source.exists()
    assert settings.current.speech_model == ""
    assert SettingsService(settings.path).current.speech_model == ""
    assert events[-1] == svc.ModelDeleted(model, was_default=True)
    assert service.scan() == []


def test_image_kinds_become_their_own_defaults(env: Path):
    service, settings, _ = make_service(env)
    service.make_default(fixture("image-model"))
    service.make_default(fixture("taesd"))
    assert settings.current.image_model == str(fixture("image-model"))
    assert settings.current.image_taesd == str(fixture("taesd"))
    assert settings.current.image_vae == ""


def test_bad_files_are_refused_and_nothing_changes(env: Path):
    service, settings, events = make_service(env)
    junk = env / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 100)
    with pytest.raises(ModelFileError):
        service.import_file(junk)
    with pytest.raises(ModelFileError):
        service.make_default(junk)
    outside = speech_source(env)
    model = service.import_file(outside)
    with pytest.raises(ModelFileError, match="not in Triptych's models folder"):
        service.delete(svc.LocalModel(outside, model.identity, model.size, "folder"))
    assert outside.exists()
    assert not settings.path.exists()  # nothing was saved
    assert not any(isinstance(e, SettingsChanged) for e in events)


def test_an_added_folder_is_saved_and_scanned(env: Path):
    service, settings, _ = make_service(env)
    source = speech_source(env)
    with pytest.raises(ValueError, match="not a folder"):
        service.add_folder(str(source))
    folder = service.add_folder(str(source.parent))
    service.add_folder(str(source.parent))  # twice: listed once
    assert settings.current.model_dirs == [str(folder)]
    assert SettingsService(settings.path).current.model_dirs == [str(folder)]
    assert [(m.path, m.source) for m in service.scan()] == [(source, "folder")]


def test_pull_refuses_bad_names_and_installed_files(env: Path):
    service, _, _ = make_service(env)
    with pytest.raises(DownloadError):
        service.pull("not a hub file")
    service.import_file(speech_source(env))
    with pytest.raises(FileExistsError, match="already installed"):
        service.pull("someone/whisper/my-whisper.bin")
    assert service.downloads.active() == []


@pytest.mark.slow
def test_delete_ends_the_engine_that_holds_the_model(env: Path):
    host = EngineHost("image")
    service, _, _ = make_service(env, hosts=[host])
    model = service.import_file(fixture("image-model"))
    try:
        params = ImageParams(prompt="a square", model=str(model.path), width=64, height=64)
        request = image_request(replace(params, steps=1), None, 1, preview=False)
        for _event in host.submit(request):
            pass
        assert host.alive and host.loaded_model == str(model.path)
        service.delete(model)
        assert not host.alive and not model.path.exists()
    finally:
        host.shutdown()
