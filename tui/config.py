"""One typed settings object, read from a TOML file with environment overrides.

Environment variables named ``TRIPTYCH_<FIELD>`` (upper case) override the
file, e.g. ``TRIPTYCH_THEME=triptych-light`` or ``TRIPTYCH_THREADS=4``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from tui import locations

ENV_PREFIX = "TRIPTYCH_"


@dataclass
class Sampling:
    """Sampling and context settings for one chat generation."""

    temperature: float = 0.7
    """Randomness; 0 is greedy and deterministic."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest token set whose mass reaches this."""
    top_k: int = 40
    """Keep only the k most likely tokens (0 disables)."""
    min_p: float = 0.05
    """Drop tokens less likely than this fraction of the most likely one."""
    repeat_penalty: float = 1.1
    """Penalty for repeating recent tokens (1 disables)."""
    max_tokens: int = 512
    """Most tokens in one reply."""
    n_ctx: int = 4096
    """Context window in tokens (prompt plus reply)."""
    seed: int = -1
    """Random seed; -1 picks a new one each time."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Sampling:
        sampling = cls()
        for f in fields(cls):
            if data and f.name in data:
                setattr(sampling, f.name, type(getattr(sampling, f.name))(data[f.name]))
        return sampling

    def validate(self) -> None:
        """Raise ValueError with a readable message for out-of-range values."""
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError("temperature must be between 0 and 5")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top-p must be above 0 and at most 1")
        if self.top_k < 0:
            raise ValueError("top-k must be 0 or more")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError("min-p must be between 0 and 1")
        if not 0.5 <= self.repeat_penalty <= 2.0:
            raise ValueError("repeat penalty must be between 0.5 and 2")
        if not 1 <= self.max_tokens <= 131072:
            raise ValueError("max tokens must be between 1 and 131072")
        if not 128 <= self.n_ctx <= 131072:
            raise ValueError("context size must be between 128 and 131072")
        if self.seed < -1:
            raise ValueError("seed must be -1 (random) or a non-negative number")


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
    gpu_layers: int = 0
    """Layers offloaded to the GPU when the binding has a GPU backend."""
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

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """Read the settings file (missing or unreadable: defaults), then the environment."""
        path = path or locations.config_file()
        data: dict[str, Any] = {}
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            data = {}
        settings = cls()
        for f in fields(cls):
            if f.name in ("sampling", "keymap", "image_presets"):
                continue
            kind = type(getattr(settings, f.name))
            if f.name in data:
                try:
                    setattr(settings, f.name, _coerce(kind, data[f.name]))
                except (TypeError, ValueError):
                    pass
            env = os.environ.get(ENV_PREFIX + f.name.upper())
            if env is not None:
                try:
                    setattr(settings, f.name, _coerce(kind, env))
                except ValueError:
                    pass
        presets = data.get("image_presets")
        if isinstance(presets, dict):
            settings.image_presets = {
                str(k): dict(v) for k, v in presets.items() if isinstance(v, dict)
            }
        keymap = data.get("keymap")
        if isinstance(keymap, dict):
            settings.keymap = {str(k): str(v) for k, v in keymap.items()}
        try:
            settings.sampling = Sampling.from_dict(data.get("sampling"))
        except (TypeError, ValueError):
            settings.sampling = Sampling()
        return settings

    def save(self, path: Path | None = None) -> None:
        """Write the settings file atomically."""
        path = path or locations.config_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(tomli_w.dumps(asdict(self)), encoding="utf-8")
        os.replace(tmp, path)
