"""The one owner of the settings: every change goes through it, and it announces each.

The settings come in three layers: defaults, the settings file, and environment
overrides (``TRIPTYCH_<FIELD>``). :attr:`SettingsService.current` is all three
merged. :meth:`SettingsService.update` changes the current settings and writes
only the changed keys into the file, editing the file's own TOML document (with
tomlkit) so its comments, its order and keys this version does not know stay as
they were. An environment override is never written.

A settings file that cannot be read or parsed is never written: the app runs on
defaults (plus the environment), :attr:`SettingsService.problems` names the
file, the line and the error, and changes last for this run only. Values of
the wrong type or out of range are named there too (the default is used).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from tui import locations
from tui.config import Sampling, Settings, load_layers
from tui.services.base import Service


@dataclass(frozen=True)
class SettingsChanged:
    """Settings were changed through :meth:`SettingsService.update`."""

    changed: frozenset[str]
    """Names of the fields that changed (``sampling`` for any sampling field)."""


@dataclass(frozen=True)
class SettingsProblem:
    """The settings file could not be read, parsed or written: one line for the user."""

    message: str


class SettingsService(Service):
    """Reads the settings once, hands out :attr:`current`, writes changes back."""

    def __init__(self, path: Path | None = None, *, settings: Settings | None = None) -> None:
        """Load ``path`` (the config file by default).

        ``settings`` (tests, benchmarks) replaces what was loaded as :attr:`current`;
        changes are still saved to ``path`` as usual.
        """
        super().__init__()
        self.path = path or locations.config_file()
        layers = load_layers(self.path)
        self.current: Settings = settings if settings is not None else layers.settings
        """The merged settings. Read them here; change them only with :meth:`update`."""
        self.problems: list[str] = list(layers.problems)
        """One line per problem found in the file (empty when it is fine)."""
        self.writable = layers.file_ok
        """False when the file could not be read or parsed: it is then never written."""
        self.env_fields = frozenset(layers.env_fields)
        """Fields set from the environment for this run."""
        self._update_lock = threading.Lock()
        self._unsaved: dict[str, Any] = {}
        """Fields changed but not yet written (a save failed): name -> value in the file."""

    def update(self, **changes: Any) -> None:
        """Apply ``changes`` (field name -> value), save the changed keys, announce them.

        Raises ValueError for an unknown field. A file that cannot be written
        becomes a :class:`SettingsProblem` event, not an exception: the change
        still holds for this run.
        """
        names = {f.name for f in fields(Settings)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown setting: {', '.join(sorted(unknown))}")
        with self._update_lock:
            before = {name: getattr(self.current, name) for name in changes}
            changed = {name: value for name, value in changes.items() if before[name] != value}
            if not changed:
                return
            for name, value in changed.items():
                setattr(self.current, name, value)
            # A change whose save failed is written with the next one that succeeds.
            for name in changed:
                self._unsaved.setdefault(name, before[name])
            pending = {name: getattr(self.current, name) for name in self._unsaved}
            problem = self._save(pending, self._unsaved)
            if not problem:
                self._unsaved.clear()
        self.emit(SettingsChanged(frozenset(changed)))
        if problem:
            self.emit(SettingsProblem(problem))

    def _save(self, changed: dict[str, Any], before: dict[str, Any]) -> str:
        """Write the changed keys into the file; the problem in one line, or ''."""
        if not self.writable:
            return (
                f"settings not saved: {self.path} could not be read"
                " (fix or move it; the change holds until you quit)"
            )
        # Through a symlink: the file it points at is edited, the link stays.
        target = Path(os.path.realpath(self.path))
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            try:
                text = target.read_text(encoding="utf-8")
                mode = stat.S_IMODE(target.stat().st_mode)
            except FileNotFoundError:
                text, mode = "", None
            if mode is not None and not mode & stat.S_IWUSR:
                return f"settings not saved: {self.path} is read-only"
            document = tomlkit.parse(text)
            for name, value in changed.items():
                _assign(document, name, _plain(before[name]), _plain(value))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(tomlkit.dumps(document), encoding="utf-8")
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        except (OSError, UnicodeDecodeError, tomlkit.exceptions.TOMLKitError) as error:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            detail = getattr(error, "strerror", None) or str(error)
            return f"settings not saved to {self.path}: {' '.join(str(detail).split())}"
        return ""


def _plain(value: Any) -> Any:
    """A settings value as plain TOML data (dataclasses as tables, tuples as lists)."""
    if isinstance(value, Sampling):
        return asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _assign(table: Any, name: str, old: Any, new: Any) -> None:
    """Set ``table[name]`` from ``old`` to ``new``, touching only what differs.

    A table in the file is edited key by key, so its comments and the keys this
    version does not know stay; a key the app removed (present in ``old``, gone
    from ``new``) is removed.
    """
    existing = table.get(name)
    if isinstance(new, dict) and isinstance(existing, dict):
        old = old if isinstance(old, dict) else {}
        for key, value in new.items():
            if key not in old or old[key] != value:
                _assign(existing, key, old.get(key), value)
        for key in old:
            if key not in new and key in existing:
                del existing[key]
        return
    table[name] = new
