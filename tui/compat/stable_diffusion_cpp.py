"""stable-diffusion-cpp-python internals (``stable-diffusion-cpp-python==0.4.7``, pinned).

Runs only in the image engine process. When stable-diffusion.cpp cannot load a
model, ``new_sd_ctx`` returns a NULL pointer, which the binding keeps as a
ctypes pointer object (not None) in ``StableDiffusion._model.model``: its own
"did it load" check passes, and closing it later calls ``free_sd_ctx(NULL)``,
which crashes. The public ``StableDiffusion.model`` property returns the same
pointer but cannot clear it.
"""

from __future__ import annotations

from typing import Any


def drop_unloaded_context(sd: Any) -> bool:
    """Whether ``sd`` (a ``StableDiffusion``) holds a loaded sd.cpp context.

    When it holds a NULL one, forget it first, so that closing ``sd`` frees
    nothing instead of crashing.
    """
    native = getattr(sd, "_model", None)
    if native is None:
        return False
    if not native.model:
        native.model = None
        return False
    return True
