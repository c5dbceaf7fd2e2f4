"""Load Triptych's themes (TOML files in the themes directory) as Textual themes."""

from __future__ import annotations

import tomllib
from pathlib import Path

from textual.theme import Theme

from tui import locations

THEME_FIELDS = (
    "primary",
    "secondary",
    "accent",
    "warning",
    "error",
    "success",
    "foreground",
    "background",
    "surface",
    "panel",
)


def load_theme(path: Path) -> Theme:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    colours = {key: data[key] for key in THEME_FIELDS if key in data}
    return Theme(name=data.get("name", path.stem), dark=bool(data.get("dark", True)), **colours)


def bundled_themes(directory: Path | None = None) -> list[Theme]:
    """Every theme shipped with Triptych, sorted by name."""
    directory = directory or locations.themes_dir()
    return [load_theme(path) for path in sorted(directory.glob("*.toml"))]
