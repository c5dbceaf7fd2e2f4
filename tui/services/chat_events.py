"""Chat service events that the attachment tray sends too (its own module: no cycle).

:mod:`tui.services.chat` imports :mod:`tui.services.attach`; both emit a model's load.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui.engines import protocol as p


@dataclass(frozen=True)
class ModelLoaded:
    name: str
    """The model file's name."""
    load_s: float
    gpu_layers: int = 0
    """Layers on the GPU (0: all on the CPU)."""
    gpu_layers_total: int = 0
    note: str = ""
    """Why fewer layers than asked went to the GPU ('' when nothing to say): shown once."""


def model_loaded(event: p.ModelLoaded) -> ModelLoaded:
    """The service event for an engine's ModelLoaded (a reply's, or a token count's)."""
    return ModelLoaded(
        event.model_path.rsplit("/", 1)[-1],
        event.load_s,
        event.gpu_layers,
        event.gpu_layers_total,
        event.note,
    )
