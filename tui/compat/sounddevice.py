"""sounddevice internals (``sounddevice==0.5.6``, pinned in pyproject.toml).

PortAudio lists the audio devices present when it was initialised, and
sounddevice initialises it once, at import. Seeing a microphone plugged in
later takes terminating and initialising PortAudio again, which sounddevice
does only through its private ``_terminate`` and ``_initialize``. Doing it
while a stream is open kills that stream: the caller must make sure none is.
"""

from __future__ import annotations

import contextlib
from types import ModuleType


def reinitialize_portaudio(sd: ModuleType) -> bool:
    """Terminate and initialise PortAudio again, so it lists the devices present now.

    ``sd`` is the imported ``sounddevice`` module (passed in: importing it loads
    PortAudio, which the caller does lazily). Returns False, changing nothing,
    when this sounddevice lacks the functions. Raises ``sd.PortAudioError`` when
    PortAudio cannot be initialised again.
    """
    terminate = getattr(sd, "_terminate", None)
    initialize = getattr(sd, "_initialize", None)
    if terminate is None or initialize is None:
        return False
    # PortAudio may already be terminated (a failed earlier initialise).
    with contextlib.suppress(Exception):
        terminate()
    initialize()
    return True
