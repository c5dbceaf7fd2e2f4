"""Every path Triptych reads or writes comes from here.

Defaults follow platformdirs; each can be overridden by an environment
variable, which is how tests point the app at temporary directories.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_config_path, user_data_path

APP_NAME = "triptych"


def _override(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Conversations database and generated files (TRIPTYCH_DATA_DIR)."""
    return _override("TRIPTYCH_DATA_DIR") or user_data_path(APP_NAME)


def config_dir() -> Path:
    """Settings (TRIPTYCH_CONFIG_DIR)."""
    return _override("TRIPTYCH_CONFIG_DIR") or user_config_path(APP_NAME)


def config_file() -> Path:
    """The settings file (TRIPTYCH_CONFIG)."""
    return _override("TRIPTYCH_CONFIG") or config_dir() / "config.toml"


def models_dir() -> Path:
    """Downloaded and imported model files (TRIPTYCH_MODELS_DIR)."""
    return _override("TRIPTYCH_MODELS_DIR") or data_dir() / "models"


def database_file() -> Path:
    """The SQLite database (TRIPTYCH_DB)."""
    return _override("TRIPTYCH_DB") or data_dir() / "triptych.db"


def first_start_file() -> Path:
    """Written when the first-start model tip was shown (not a setting; never rewritten)."""
    return data_dir() / "first-start.json"


def logs_dir() -> Path:
    """Engine process logs (native libraries write their diagnostics here)."""
    return data_dir() / "logs"


def themes_dir() -> Path:
    """Theme files shipped with the package (inside the wheel or the source tree)."""
    here = Path(__file__).resolve().parent
    packaged = here / "themes"
    return packaged if packaged.is_dir() else here.parent / "themes"
