"""One typed settings object, read from a TOML file with environment overrides.

Environment variables named ``TRIPTYCH_<FIELD>`` (upper case) override the
file, e.g. ``TRIPTYCH_THEME=triptych-light`` or ``TRIPTYCH_THREADS=4``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from tui import locations
from tui.engines.protocol import Sampling
from tui.gpu import AUTO, GPU_LAYERS_HELP, parse_gpu_layers

ENV_PREFIX = "TRIPTYCH_"


def _coerce(kind: type, value: Any) -> Any:
    """A file or environment value as the field's type (ValueError if it is not one)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a yes/no value: {value!r}")
    if kind is list:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        if isinstance(value, list):
            return [str(item) for item in value]
        raise ValueError(f"not a list: {value!r}")
    return kind(value)


@dataclass
class Settings:
    """Application settings. Every field may be overridden by TRIPTYCH_<FIELD>."""

    theme: str = "triptych-dark"
    """Name of the Textual theme."""
    chat_model: str = ""
    """Path of the default chat model; empty means the embedded default."""
    threads: int = 0
    """CPU threads for each engine; 0 means all physical cores. More than the CPUs
    this process may use counts as all of them."""
    gpu_layers: int | str = AUTO
    """Chat model layers offloaded when llama.cpp has a GPU backend: "auto" (as many as fit
    in free VRAM), -1 (all), 0 (CPU only) or a number of layers."""
    system_prompt: str = "You are a helpful assistant."
    """System prompt of new conversations."""
    sampling: Sampling = field(default_factory=Sampling)
    """Sampling defaults of new conversations."""
    image_protocol: str = "auto"
    """Inline images: auto, kitty, sixel, halfcell or unicode."""
    image_model: str = ""
    """Last image model used (Imagine remembers it)."""
    image_vae: str = ""
    """Last separate VAE used, if any."""
    image_taesd: str = ""
    """Last TAESD used for fast decode and previews, if any."""
    speech_model: str = ""
    """whisper.cpp ggml model for Listen and dictation."""
    speech_language: str = "auto"
    """Language code for transcription, or auto."""
    input_device: str = ""
    """Microphone (PortAudio device name); empty means the system default."""
    image_presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """User presets of Imagine parameters, by name."""
    keymap: dict[str, str] = field(default_factory=dict)
    """Remapped keys: binding id -> keys, e.g. {"chat.regenerate" = "ctrl+r,f7"}."""
    model_dirs: list[str] = field(default_factory=list)
    """More folders the Models screen searches for model files."""
    memory_budget_mb: int = 0
    """Memory the loaded models may share; 0 means 75% of RAM. When a model
    would not fit, idle engines are unloaded first."""
    idle_unload_minutes: int = 15
    """Unload a model nobody used for this long (0 keeps models loaded)."""
    image_offload_to_cpu: bool = False
    """Image engine on a GPU build: keep weights in RAM, move them to VRAM as needed."""
    image_keep_clip_on_cpu: bool = False
    """Image engine on a GPU build: run the text encoder on the CPU (saves VRAM)."""
    image_keep_vae_on_cpu: bool = False
    """Image engine on a GPU build: run the VAE on the CPU (saves VRAM)."""
    speech_use_gpu: bool = True
    """Speech engine: use the GPU when whisper.cpp was built with one."""
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Remote OpenAI-compatible servers by name: {url, api_key_env, api_key_file, model, timeout_s,
    image_api ('auto', 'sdcpp' or 'openai')}. A model spec ``server:NAME`` or
    ``server:NAME/MODEL`` uses one (tui/backends). The API key itself is never stored
    here: api_key_env names the variable holding it, api_key_file the 0600 file a key
    typed once is kept in (tui/backends/keys.py)."""

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """The settings file (when readable) and the environment over the defaults.

        Problems are ignored here; :class:`tui.services.settings.SettingsService`
        (the app) and the CLI report them through :func:`load_layers`.
        """
        return load_layers(path or locations.config_file()).settings


@dataclass
class Layers:
    """What :func:`load_layers` found."""

    settings: Settings
    """Defaults, then the file, then the environment."""
    problems: list[str]
    """One line per problem: the file unreadable or unparsable, a bad value, an unknown key."""
    file_ok: bool
    """The file is missing (fine: it is created on the first save) or was read and parsed."""
    env_fields: list[str]
    """Fields whose value came from the environment."""


_TABLES = ("sampling", "keymap", "image_presets", "servers")
_PARSED: dict[str, tuple[Any, str]] = {"gpu_layers": (parse_gpu_layers, GPU_LAYERS_HELP)}
"""Fields of more than one type: the function that checks and converts a file or
environment value (ValueError when bad), and what the value may be, for the problem line."""


def _from_file(kind: type, value: Any) -> Any:
    """A value from the file as the field's type; ValueError unless TOML gave that type.

    The environment only has text, so :func:`_coerce` converts; a file has
    types, and ``threads = "many"`` or ``theme = 5`` is a mistake to name.
    """
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is list:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(f"not {_KIND_NAMES.get(kind, kind.__name__)}")
    return kind(value)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_layers(path: Path) -> Layers:
    """Read the settings file and the environment, naming every problem in one line each."""
    settings = Settings()
    problems: list[str] = []
    data: dict[str, Any] = {}
    file_ok = True
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        file_ok = False
        problems.append(f"{path} is a folder, not a settings file; using the defaults")
    except OSError as error:
        file_ok = False
        problems.append(f"cannot read {path}: {error.strerror or error}; using the defaults")
    except UnicodeDecodeError as error:
        file_ok = False
        problems.append(f"{path} is not UTF-8 text ({error.reason}); using the defaults")
    except tomllib.TOMLDecodeError as error:
        file_ok = False
        # tomllib's message already ends with "(at line N, column M)".
        problems.append(
            f"{path}: {error}; using the defaults, the file is left as it is until fixed"
        )

    known = {f.name for f in fields(Settings)}
    for key in data:
        if key not in known:
            problems.append(f"{path}: unknown setting {key!r} (kept, not used)")
    for f in fields(Settings):
        if f.name in _TABLES:
            continue
        kind = type(getattr(settings, f.name))
        parse, allowed = _PARSED.get(f.name, (partial(_from_file, kind), _kind_name(kind)))
        if f.name in data:
            try:
                setattr(settings, f.name, parse(data[f.name]))
            except (TypeError, ValueError):
                problems.append(
                    f"{path}: {f.name} = {_describe(data[f.name])} is not"
                    f" {allowed}; using {getattr(settings, f.name)!r}"
                )
    presets = data.get("image_presets")
    if isinstance(presets, dict):
        settings.image_presets = {
            str(k): dict(v) for k, v in presets.items() if isinstance(v, dict)
        }
    elif presets is not None:
        problems.append(f"{path}: image_presets is not a table; ignored")
    servers = data.get("servers")
    if isinstance(servers, dict):
        settings.servers = {str(k): dict(v) for k, v in servers.items() if isinstance(v, dict)}
        for name, entry in servers.items():
            if not isinstance(entry, dict):
                problems.append(f"{path}: servers.{name} is not a table; ignored")
    elif servers is not None:
        problems.append(f"{path}: servers is not a table; ignored")
    keymap = data.get("keymap")
    if isinstance(keymap, dict):
        settings.keymap = {str(k): str(v) for k, v in keymap.items()}
    elif keymap is not None:
        problems.append(f"{path}: keymap is not a table; ignored")
    sampling = data.get("sampling")
    if sampling is not None and not isinstance(sampling, dict):
        problems.append(f"{path}: sampling is not a table; using the default sampling")
    elif sampling:
        for key in sampling:
            if key not in {f.name for f in fields(Sampling)}:
                problems.append(f"{path}: unknown setting 'sampling.{key}' (kept, not used)")
        for f in fields(Sampling):
            if f.name not in sampling:
                continue
            kind = type(getattr(settings.sampling, f.name))
            value = sampling[f.name]
            try:
                if isinstance(value, str | bool) or (kind is int and isinstance(value, float)):
                    raise ValueError
                setattr(settings.sampling, f.name, kind(value))
            except (TypeError, ValueError):
                problems.append(
                    f"{path}: sampling.{f.name} = {_describe(value)} is not"
                    f" {_KIND_NAMES.get(kind, kind.__name__)};"
                    f" using {getattr(settings.sampling, f.name)!r}"
                )
        try:
            settings.sampling.validate()
        except ValueError as error:
            problems.append(f"{path}: sampling: {error}; using the default sampling")
            settings.sampling = Sampling()

    env_fields: list[str] = []
    for f in fields(Settings):
        if f.name in _TABLES:
            continue
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if env is None:
            continue
        kind = type(getattr(settings, f.name))
        parse, allowed = _PARSED.get(f.name, (partial(_coerce, kind), _kind_name(kind)))
        try:
            setattr(settings, f.name, parse(env))
            env_fields.append(f.name)
        except ValueError:
            problems.append(
                f"{ENV_PREFIX}{f.name.upper()}={_describe(env)} is not {allowed}; ignored"
            )
    return Layers(settings, problems, file_ok, env_fields)


def _kind_name(kind: type) -> str:
    return _KIND_NAMES.get(kind, kind.__name__)


_KIND_NAMES = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "text",
    list: "a list",
}
