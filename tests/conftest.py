"""Shared fixtures: the real test model and isolated data/config directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    return tmp_path
