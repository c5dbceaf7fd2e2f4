"""Settings file, environment overrides and locations."""

from __future__ import annotations

import pytest

from tui import locations
from tui.config import Sampling, Settings
from tui.services.settings import SettingsService


def test_defaults_when_no_file(app_dirs):
    settings = Settings.load()
    assert settings.theme == "triptych-dark"
    assert settings.sampling == Sampling()


def test_file_and_environment(app_dirs, monkeypatch):
    path = locations.config_file()
    path.parent.mkdir(parents=True)
    path.write_text(
        'theme = "triptych-light"\nthreads = 3\n[sampling]\ntemperature = 0.0\n'
        '[keymap]\n"chat.new" = "f9"\n'
    )
    settings = Settings.load()
    assert settings.theme == "triptych-light" and settings.threads == 3
    assert settings.sampling.temperature == 0.0
    assert settings.keymap == {"chat.new": "f9"}
    monkeypatch.setenv("TRIPTYCH_THREADS", "5")
    assert Settings.load().threads == 5


def test_corrupt_file_falls_back_to_defaults(app_dirs):
    path = locations.config_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe not toml [[[")
    assert Settings.load() == Settings()


def test_save_round_trip(app_dirs):
    service = SettingsService()
    service.update(theme="triptych-light", sampling=Sampling(seed=11))
    assert Settings.load() == service.current
    assert Settings.load().sampling.seed == 11


def test_locations_follow_environment(app_dirs, monkeypatch, tmp_path):
    assert locations.database_file().parent == tmp_path / "data"
    monkeypatch.setenv("TRIPTYCH_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert locations.config_file() == tmp_path / "elsewhere.toml"
    assert (locations.themes_dir() / "triptych-dark.toml").is_file()


@pytest.mark.parametrize(
    "field,value",
    [("temperature", -1), ("top_p", 0), ("top_k", -1), ("max_tokens", 0), ("n_ctx", 16)],
)
def test_sampling_validation(field, value):
    sampling = Sampling()
    setattr(sampling, field, value)
    with pytest.raises(ValueError):
        sampling.validate()
