"""SIGTERM and SIGHUP end Triptych the way Ctrl+Q does, with a last-resort fallback.

A system shutdown or ``kill`` sends SIGTERM; a closed terminal sends SIGHUP.
Python's default for both ends the process on the spot: the terminal stays in
the alternate screen with mouse tracking on and the cursor hidden, and the
reply being streamed is not marked as ended.

:class:`SignalExit` runs ``on_signal(signum)`` on the app's event loop instead,
which saves and exits as Ctrl+Q does. A watchdog thread covers a loop that
cannot get there (it may block writing to a terminal that has hung up): if the
process still runs ``FORCE_AFTER_S`` after the signal, it calls ``emergency()``
from its own thread and ends the process with status 128 + the signal number,
as a shell reports a process killed by that signal.

This module does not import textual.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""The signals that end the app cleanly."""

FORCE_AFTER_S = 8.0
"""How long a clean exit may take before the watchdog ends the process.

A clean exit stops a reply (0.3 s grace) and asks each engine to exit (2 s
each at most), so a few seconds is normal on a busy machine.
"""


RESCUE_S = 3.0
"""How long the watchdog lets emergency() run before it ends the process anyway."""


def exit_status(signum: int) -> int:
    """The exit status for an exit caused by signal signum (the shell's convention)."""
    return 128 + signum


class SignalExit:
    """Routes EXIT_SIGNALS to a callback on an event loop, with a watchdog behind it."""

    def __init__(
        self,
        on_signal: Callable[[int], None],
        emergency: Callable[[], None],
        force_after_s: float = FORCE_AFTER_S,
    ) -> None:
        self.on_signal = on_signal
        self.emergency = emergency
        self.force_after_s = force_after_s
        self.signum: int | None = None
        """The first exit signal received, if any."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}
        self._fired = threading.Event()
        self._finished = threading.Event()
        self._watchdog: threading.Thread | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Handle the exit signals from now on; False where that is impossible.

        Call from the main thread (only it may set signal handlers). The watchdog
        thread starts here, so that the handler itself only sets an Event.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        self._loop = loop
        for signum in EXIT_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        self._watchdog = threading.Thread(target=self._watch, name="signal-watchdog", daemon=True)
        self._watchdog.start()
        return True

    def finished(self) -> None:
        """The clean exit got through saving and stopping engines: no watchdog needed.

        Restores the handlers that were there before install.
        """
        self._finished.set()
        self._fired.set()  # wakes the watchdog, which sees _finished and ends
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous)
            except (ValueError, TypeError):
                pass  # not the main thread, or no Python-level handler before
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between any two bytecodes, possibly inside the
        # event loop's own code: only set flags and schedule the real work.
        if self.signum is not None:
            return  # a second signal while exiting changes nothing
        self.signum = signum
        self._fired.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.on_signal, signum)

    def _watch(self) -> None:
        self._fired.wait()
        if self._finished.wait(self.force_after_s) or self.signum is None:
            return
        # emergency() may block (e.g. on a lock the stuck loop holds): give it a
        # few seconds in its own thread, then end the process regardless.
        rescue = threading.Thread(target=self.emergency, name="signal-rescue", daemon=True)
        rescue.start()
        rescue.join(RESCUE_S)
        os._exit(exit_status(self.signum))


class ExitSavers:
    """What to save when a signal ends the app: each open screen with unsaved work.

    A screen joins when it mounts and leaves (with the function join returned)
    when it unmounts, so the app never has to look for its screens.
    """

    def __init__(self) -> None:
        self._savers: dict[int, tuple[Callable[[], None], Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def join(self, save: Callable[[], None], emergency: Callable[[], None]) -> Callable[[], None]:
        """Register ``save`` (on the event loop) and ``emergency`` (any thread, loop stuck).

        Returns the function that leaves again.
        """
        with self._lock:
            key = self._next
            self._next += 1
            self._savers[key] = (save, emergency)

        def leave() -> None:
            with self._lock:
                self._savers.pop(key, None)

        return leave

    def __len__(self) -> int:
        with self._lock:
            return len(self._savers)

    def _all(self) -> list[tuple[Callable[[], None], Callable[[], None]]]:
        with self._lock:
            return list(self._savers.values())

    def save_all(self) -> None:
        """Run every ``save`` (on the event loop); a failing one is raised after the rest ran."""
        errors: list[Exception] = []
        for save, _ in self._all():
            try:
                save()
            except Exception as error:  # noqa: BLE001 - reraised after the others ran
                errors.append(error)
        if errors:
            raise errors[0]

    def emergency_all(self) -> None:
        """Run every ``emergency`` (from the watchdog's thread); one failing stops no other."""
        for _, emergency in self._all():
            try:
                emergency()
            except Exception:  # noqa: BLE001, S112 - nowhere left to report it
                continue
