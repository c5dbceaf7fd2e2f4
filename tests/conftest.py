"""Shared fixtures: the real test model, isolated data/config directories, a store, a chat host."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui.engines.host import EngineHost
from tui.store import Store

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / ".fixtures"
CHAT_MODEL = FIXTURES / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def chat_model() -> Path:
    """The real SmolLM2-135M model that scripts/test fetches into .fixtures/models."""
    if not CHAT_MODEL.is_file():
        pytest.fail(f"{CHAT_MODEL} is missing: run scripts/test (it fetches the test model)")
    return CHAT_MODEL


@pytest.fixture
def app_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every Triptych location at a temporary directory."""
    monkeypatch.setenv("TRIPTYCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRIPTYCH_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TRIPTYCH_MODELS_DIR", str(FIXTURES / "models"))
    for name in list(os.environ):
        if name.startswith("TRIPTYCH_") and name not in (
            "TRIPTYCH_DATA_DIR",
            "TRIPTYCH_CONFIG_DIR",
            "TRIPTYCH_MODELS_DIR",
        ):
            monkeypatch.delenv(name)
    # The first-start model tip was "shown" already: tests that want it remove this.
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "first-start.json").write_text("{}\n")
    return tmp_path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real SQLite store in a temporary folder."""
    with Store(tmp_path / "triptych.db") as opened:
        yield opened


@pytest.fixture(scope="module")
def chat_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineHost]:
    """One chat engine process for the module."""
    engine = EngineHost("chat", log_dir=tmp_path_factory.mktemp("logs"))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """espeak-ng saying speech_fixtures.SENTENCE, as a 16 kHz mono WAV."""
    import speech_fixtures

    folder = tmp_path_factory.mktemp("speech")
    return speech_fixtures.speak(speech_fixtures.SENTENCE, folder / "speech.wav")
