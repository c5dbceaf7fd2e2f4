"""The models on this machine: what each file is, where they are, import and delete.

Every file is identified from its header alone (nothing native ever sees an
unchecked file): a GGUF is a chat model unless its architecture says it is a
diffusion model, a whisper.cpp ggml file is a speech model, and a
safetensors file is an image model, a VAE or a TAESD according to its
tensor names. Files are found in Triptych's models folder, in folders the
user adds (``model_dirs`` in the settings) and in the Hugging Face cache.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tui import locations
from tui.config import Settings
from tui.default_model import default_chat_model_path, resolve_chat_model
from tui.formats import ModelFileError, human_size
from tui.formats.gguf import GGUF_MAGIC, read_gguf_info
from tui.formats.image import PICKLE_SUFFIXES, check_image_model
from tui.formats.safetensors import read_safetensors_info
from tui.formats.whisper import WHISPER_MAGIC, read_whisper_info

MODALITIES = ("chat", "image", "speech")
MODALITY_TITLES = {"chat": "Chat", "image": "Image", "speech": "Speech"}
MODEL_SUFFIXES = (".gguf", ".safetensors", ".bin")

IMAGE_GGUF_ARCHITECTURES = frozenset(
    {"", "sd1", "sd2", "sdxl", "sd3", "flux", "aura", "ltxv", "hyvid", "wan", "lumina2", "hidream"}
)
"""GGUF architectures of diffusion models (sd.cpp's own conversions write none)."""

WHISPER_SIZES = {4: "tiny", 6: "base", 12: "small", 24: "medium", 32: "large"}

DEFAULT_FIELDS = {
    ("chat", "model"): "chat_model",
    ("image", "model"): "image_model",
    ("image", "vae"): "image_vae",
    ("image", "taesd"): "image_taesd",
    ("speech", "model"): "speech_model",
}
"""Which setting holds the default file of each modality and kind."""


@dataclass(frozen=True)
class Identity:
    modality: str
    """chat, image or speech."""
    kind: str
    """model, vae or taesd."""
    detail: str
    """What the header says, for people: "llama · SmolLM2 135M", "whisper tiny (English)"."""


_identity_cache: dict[tuple[str, int, int], Identity] = {}


def identify(path: Path | str) -> Identity:
    """Say what a model file is from its header; ModelFileError (one line) if unusable."""
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}", path) from None
    except OSError as error:
        raise ModelFileError(f"cannot read {path} ({error.strerror or error})", path) from None
    if not path.is_file():
        raise ModelFileError(f"not a file: {path}", path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    cached = _identity_cache.get(key)
    if cached is not None:
        return cached
    identity = _identify(path)
    _identity_cache[key] = identity
    return identity


def _identify(path: Path) -> Identity:
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as error:
        raise ModelFileError(f"cannot read {path} ({error.strerror or error})", path) from None
    if not head:
        raise ModelFileError(f"model file is empty: {path}", path)
    if head[:4] == GGUF_MAGIC:
        info = read_gguf_info(path)
        if info.architecture in IMAGE_GGUF_ARCHITECTURES:
            check_image_model(path)
            arch = info.architecture or "stable-diffusion.cpp"
            return Identity("image", "model", f"GGUF · {arch}")
        name = f" · {info.name}" if info.name else ""
        return Identity("chat", "model", f"{info.architecture}{name}")
    if len(head) >= 4 and struct.unpack("<I", head[:4])[0] == WHISPER_MAGIC:
        info_w = read_whisper_info(path)
        layers = info_w.hparams["n_audio_layer"]
        size = WHISPER_SIZES.get(layers, f"{layers}-layer")
        language = "English" if info_w.hparams["n_vocab"] == 51864 else "multilingual"
        return Identity("speech", "model", f"whisper {size} ({language})")
    suffix = path.suffix.lower()
    if suffix == ".safetensors" or head[8:9] == b"{":
        st = read_safetensors_info(path)
        what = {"model": "image model", "vae": "VAE", "taesd": "TAESD"}[st.role]
        return Identity("image", st.role, f"safetensors · {what} · {', '.join(st.dtypes)}")
    if suffix in PICKLE_SUFFIXES or head[:2] in (b"\x80\x02", b"\x80\x04", b"PK"):
        check_image_model(path)  # raises the pickle refusal
    raise ModelFileError(
        "not a model Triptych can use (expected a GGUF chat or image model, a whisper.cpp"
        f" ggml .bin or a .safetensors image model; it starts with {head[:8]!r}): {path}",
        path,
    )


@dataclass(frozen=True)
class LocalModel:
    """A usable model file on this machine."""

    path: Path
    identity: Identity
    size: int
    source: str
    """models (Triptych's folder), folder (one the user added) or hf-cache."""

    @property
    def modality(self) -> str:
        return self.identity.modality

    @property
    def kind(self) -> str:
        return self.identity.kind

    @property
    def name(self) -> str:
        return self.path.name


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub computes it (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface" / "hub"


def _files(root: Path, max_depth: int = 6) -> Iterator[Path]:
    """Candidate model files under root (hidden entries and partial downloads skipped)."""
    if not root.is_dir():
        return
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if depth < max_depth:
                        stack.append((Path(entry.path), depth + 1))
                elif entry.is_file() and entry.name.lower().endswith(MODEL_SUFFIXES):
                    yield Path(entry.path)
            except OSError:
                continue


def _hf_cache_files(cache: Path) -> Iterator[Path]:
    """Model files in the snapshots of each cached model repo (the newest snapshot first)."""
    if not cache.is_dir():
        return
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        if snapshots.is_dir():
            yield from _files(snapshots)


def scan(
    settings: Settings | None = None,
    models_dir: Path | None = None,
    include_hf_cache: bool = True,
) -> list[LocalModel]:
    """Every usable model file found, each once (the first place wins)."""
    settings = settings or Settings()
    root = Path(models_dir) if models_dir else locations.models_dir()
    sources: list[tuple[str, Iterable[Path]]] = [("models", _files(root))]
    for folder in settings.model_dirs:
        sources.append(("folder", _files(Path(folder).expanduser())))
    if include_hf_cache:
        sources.append(("hf-cache", _hf_cache_files(hf_cache_dir())))
    found: list[LocalModel] = []
    seen: set[Path] = set()
    for source, paths in sources:
        for path in paths:
            try:
                real = path.resolve()
                if real in seen:
                    continue
                identity = identify(path)
                size = real.stat().st_size
            except (ModelFileError, OSError):
                continue
            seen.add(real)
            found.append(LocalModel(path, identity, size, source))
    return found


def installed(
    modality: str, settings: Settings | None = None, models_dir: Path | None = None
) -> list[LocalModel]:
    return [m for m in scan(settings, models_dir) if m.modality == modality]


# --------------------------------------------------------------------------- import / delete


def import_model(source: Path | str, models_dir: Path | None = None) -> LocalModel:
    """Check a file's header, then add it to the models folder (hard link, else copy).

    The copy goes to a hidden temporary file renamed into place, so the folder
    never holds half a model. Raises ModelFileError with one readable line.
    """
    source = Path(source).expanduser()
    identity = identify(source)
    root = Path(models_dir) if models_dir else locations.models_dir()
    dest = root / source.name
    try:
        root.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            if dest.samefile(source):
                return LocalModel(dest, identity, dest.stat().st_size, "models")
            raise ModelFileError(f"a model named {dest.name} is already installed: {dest}", dest)
        size = source.stat().st_size
        try:
            os.link(source, dest)
        except OSError:
            free = shutil.disk_usage(root).free
            if size > free:
                raise ModelFileError(
                    f"not enough free space in {root} to import {source.name}:"
                    f" it needs {human_size(size)}, {human_size(free)} is free",
                    dest,
                ) from None
            tmp = root / f".{dest.name}.import"
            try:
                with source.open("rb") as src, tmp.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
    except ModelFileError:
        raise
    except OSError as error:
        raise ModelFileError(
            f"cannot import {source.name} into {root} ({error.strerror or error})", dest
        ) from None
    return LocalModel(dest, identity, size, "models")


def in_models_folder(path: Path | str, models_dir: Path | None = None) -> bool:
    """Whether a file lies in Triptych's models folder (the only place it deletes from)."""
    root = Path(models_dir) if models_dir else locations.models_dir()
    try:
        Path(path).expanduser().absolute().parent.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def delete_model(path: Path | str, models_dir: Path | None = None) -> None:
    """Delete a model file from Triptych's models folder (files elsewhere are refused)."""
    path = Path(path).expanduser()
    if not in_models_folder(path, models_dir):
        root = Path(models_dir) if models_dir else locations.models_dir()
        raise ModelFileError(
            f"{path} is not in Triptych's models folder ({root}); delete it yourself", path
        )
    try:
        path.unlink()
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}", path) from None
    except OSError as error:
        raise ModelFileError(f"cannot delete {path} ({error.strerror or error})", path) from None


def remove(settings: Settings, model: LocalModel) -> dict[str, str]:
    """Delete a model file; the settings change that clears it as a default, if it was one.

    The caller applies that change (``SettingsService.update(**change)``); it is
    empty when the file was no default.
    """
    was_default = is_default(settings, model)
    delete_model(model.path)
    return {default_field(model.modality, model.kind): ""} if was_default else {}


def expect_modality(modality: str | None) -> Callable[[Path], Identity]:
    """A download validator: the file must be a usable model of this modality (any if None)."""

    def validate(path: Path) -> Identity:
        identity = identify(path)
        if modality and identity.modality != modality:
            raise ModelFileError(f"it is a {identity.modality} model, not a {modality} one")
        return identity

    return validate


def installed_copy(
    dest: Path, names: set[str], size: int, found: Iterable[LocalModel]
) -> LocalModel | None:
    """The file found on disk that is a catalog entry: at its destination in the models
    folder, or elsewhere (an added folder, the HF cache) with its name and exact size."""
    found = list(found)
    for model in found:
        if model.path == dest:
            return model
    for model in found:
        if model.source != "models" and model.name in names and model.size == size:
            return model
    return None


# --------------------------------------------------------------------------- defaults


def default_field(modality: str, kind: str = "model") -> str:
    try:
        return DEFAULT_FIELDS[(modality, kind)]
    except KeyError:
        raise ValueError(f"no default for {modality} {kind}") from None


def default_path(settings: Settings, modality: str, kind: str = "model") -> Path | None:
    """The file a modality uses by default (the embedded model for chat when unset)."""
    value = getattr(settings, default_field(modality, kind))
    if modality == "chat" and kind == "model":
        return resolve_chat_model(value)
    return Path(value).expanduser() if value else None


def is_default(settings: Settings, model: LocalModel) -> bool:
    current = default_path(settings, model.modality, model.kind)
    if current is None:
        return False
    try:
        return current.resolve() == model.path.resolve()
    except OSError:
        return False


def default_setting(path: Path | str) -> tuple[str, str, LocalModel]:
    """(setting name, value, model) that make a file the default of its modality and kind.

    Reads the file's header; raises ModelFileError, or ValueError for a kind
    that has no default.
    """
    path = Path(path).expanduser()
    identity = identify(path)
    field_name = default_field(identity.modality, identity.kind)
    value = str(path.absolute())
    if identity.modality == "chat" and path.absolute() == default_chat_model_path().absolute():
        value = ""  # the embedded default
    return field_name, value, LocalModel(path, identity, path.stat().st_size, "models")


def set_default(settings: Settings, path: Path | str) -> LocalModel:
    """Make a file the default of its modality and kind (settings are not saved here)."""
    field_name, value, model = default_setting(path)
    setattr(settings, field_name, value)
    return model
