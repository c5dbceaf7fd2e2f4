"""What an engine sees of its process: emit events, check for cancellation.

Its own module so that the engines (imported by ``tui.engines.worker`` when it
starts one) need not import the worker back.
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection
from typing import Any


class Channel:
    """What an engine sees of its process: emit events, check for cancellation."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self.cancelled = threading.Event()

    def emit(self, event: Any) -> None:
        with self._send_lock:
            self._conn.send(event)
