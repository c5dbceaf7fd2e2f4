"""What every service shares: subscribers and plain events.

A screen subscribes with a callback that posts a Textual message (``post_message``
is thread-safe), so events may be emitted from any thread. The CLI subscribes
with a plain function or not at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Listener = Callable[[Any], None]


class Service:
    """Holds subscribers and hands each emitted event to all of them, in order."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event from now on; returns the unsubscribe."""
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: Any) -> None:
        """Hand ``event`` to every subscriber (a failing subscriber does not stop the rest)."""
        with self._listeners_lock:
            listeners = list(self._listeners)
        errors: list[BaseException] = []
        for listener in listeners:
            try:
                listener(event)
            except Exception as error:  # noqa: BLE001 - reraised after the others ran
                errors.append(error)
        if errors:
            raise errors[0]
