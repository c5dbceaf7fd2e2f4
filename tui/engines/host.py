"""Spawns and supervises one engine process; turns its pipe into an event stream.

The host lives in the UI process (or the headless CLI) and never imports a
native binding. A crash of the engine becomes an EngineFailed event; Cancel
that the engine does not honour in time is enforced by killing the process,
which the next request respawns.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tui.cpu import CpuGate, CpuTicket, bound_threads
from tui.engines import protocol as p

CANCEL_GRACE_S = 0.6
"""How long a cancelled engine may take to stop on its own before it is killed."""

START_TIMEOUT_S = 60.0


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


class EngineHost:
    """One engine process of one kind ('chat', ...), started lazily."""

    def __init__(self, engine: str, log_dir: Path | None = None) -> None:
        self.engine = engine
        self.log_dir = log_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._events: Connection | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._active_id = 0
        self._cancel_deadline: float | None = None
        self.loaded_model: str | None = None
        self.last_used = time.monotonic()
        self.before_load: Callable[[EngineHost, Any], object] | None = None
        """Called (e.g. by the memory budget) before a request that loads a new model."""
        self.cpu_gate: CpuGate | None = None
        """Shared by the hosts of one process: requests wait until their threads fit."""
        self.waiting_for: list[str] = []
        """The engines a request of this host is queued behind (empty when not waiting)."""
        self.log_problem = ""
        """Why the engine runs without its log file (empty when it has one)."""

    # --- process management ---------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.alive and self._process else None

    @property
    def busy(self) -> bool:
        return self._active_id != 0

    def log_file(self) -> Path | None:
        return self.log_dir / f"{self.engine}-engine.log" if self.log_dir else None

    def _open_log(self) -> Any:
        """The engine's log file, or DEVNULL when it cannot be written.

        The log only keeps the native libraries' diagnostics, so a read-only,
        missing or full data folder must not stop the engine; ``log_problem``
        then says why there is no log.
        """
        log_path = self.log_file()
        if log_path is None:
            return subprocess.DEVNULL
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        except OSError as error:
            self.log_problem = f"no engine log: {log_path}: {error.strerror or error}"
            return subprocess.DEVNULL
        self.log_problem = ""
        return log

    def _spawn(self) -> None:
        log = self._open_log()
        request_read, request_write = os.pipe()
        event_read, event_write = os.pipe()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tui.engines.worker",
                    self.engine,
                    str(request_read),
                    str(event_write),
                ],
                pass_fds=(request_read, event_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(request_read)
            os.close(event_write)
            if log is not subprocess.DEVNULL:
                log.close()
        self._requests = Connection(request_write, readable=False)
        self._events = Connection(event_read, writable=False)
        self.loaded_model = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._events.poll(0.05):
                try:
                    event = self._events.recv()
                except (EOFError, OSError):
                    break
                if isinstance(event, p.EngineReady):
                    return
            elif self._process.poll() is not None:
                break
        code = self._process.poll()
        self._discard()
        raise RuntimeError(f"the {self.engine} engine could not start: it {_describe_exit(code)}")

    def _discard(self) -> None:
        for conn in (self._requests, self._events):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        self._requests = self._events = None
        self.loaded_model = None

    def kill(self) -> None:
        """Kill the engine process now (a later request starts a fresh one)."""
        process = self._process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
            process.wait()

    def shutdown(self, timeout: float = 2.0) -> None:
        """Ask the engine to exit; kill it if it does not."""
        process = self._process
        if process is not None and process.poll() is None:
            try:
                if self._requests is not None:
                    self._requests.send(p.Shutdown())
                process.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._discard()
        self._process = None

    # --- requests -------------------------------------------------------------

    def submit(self, request: Any) -> Iterator[Any]:
        """Send a request and yield its events, ending with a terminal event.

        Blocks; run it in a thread. Only one request runs at a time. With a
        cpu_gate, a request whose threads do not fit beside another engine's
        running request first yields WaitingForCpu, waits (Cancel ends the wait
        with GenerationFinished('cancelled')) and yields CpuGranted when it starts.
        """
        with self._lock:
            request_id = next(self._ids)
            request.request_id = request_id
            self._cancel_deadline = None
            if hasattr(request, "n_threads"):
                # Resolved here so that the gate counts the threads the engine will use.
                request.n_threads = bound_threads(request.n_threads)
            self._active_id = request_id
            ticket: CpuTicket | None = None
            try:
                if self.cpu_gate is not None:
                    ticket = self.cpu_gate.request(self.engine, getattr(request, "n_threads", 1))
                    if not ticket.granted:
                        started = time.monotonic()
                        behind: list[str] = []
                        while not ticket.granted:
                            now_behind = self.cpu_gate.blockers(ticket)
                            if now_behind and now_behind != behind:
                                behind = self.waiting_for = now_behind
                                yield p.WaitingForCpu(behind=behind, request_id=request_id)
                            self.cpu_gate.wait(ticket, 0.05)
                            if self._cancel_deadline is not None:
                                break
                        self.waiting_for = []
                        if self._cancel_deadline is not None:
                            yield p.GenerationFinished(reason="cancelled", request_id=request_id)
                            return
                        yield p.CpuGranted(
                            waited_s=time.monotonic() - started, request_id=request_id
                        )
                yield from self._run(request, request_id)
            finally:
                self.waiting_for = []
                if ticket is not None and self.cpu_gate is not None:
                    self.cpu_gate.release(ticket)
                self._active_id = 0
                self._cancel_deadline = None
                self.last_used = time.monotonic()

    def _run(self, request: Any, request_id: int) -> Iterator[Any]:
        """Start the engine if needed, send the request and yield its events."""
        model = getattr(request, "model_path", None)
        if self.before_load is not None and model and model != self.loaded_model:
            try:
                self.before_load(self, request)
            except Exception:  # noqa: BLE001 - the budget is advice, never a failure
                pass
        try:
            if not self.alive:
                self._discard()
                self._spawn()
            assert self._requests is not None and self._events is not None
            self._requests.send(request)
        except (RuntimeError, OSError) as error:
            yield p.EngineFailed(message=str(error), kind="crash", request_id=request_id)
            return
        completed = False
        try:
            yield from self._events_until_done(request_id)
            completed = True
        finally:
            if not completed:
                # The caller stopped listening: stop the engine as well. What it
                # still sends for this request is skipped by the next one.
                self._send(p.Cancel(request_id=request_id))

    def _events_until_done(self, request_id: int) -> Iterator[Any]:
        # Local references: shutdown() may run in another thread meanwhile.
        events, process = self._events, self._process
        assert events is not None and process is not None
        while True:
            if self._cancel_deadline is not None and time.monotonic() > self._cancel_deadline:
                self.kill()
                self._discard()
                yield p.GenerationFinished(reason="cancelled", request_id=request_id)
                return
            try:
                ready = events.poll(0.05)
                event = events.recv() if ready else None
            except (EOFError, OSError):
                event = None
                ready = True
            if ready and event is None:
                # The pipe closed: the engine died.
                code = process.wait()
                self._discard()
                if self._cancel_deadline is not None:
                    yield p.GenerationFinished(reason="cancelled", request_id=request_id)
                else:
                    yield p.EngineFailed(
                        message=f"the {self.engine} engine {_describe_exit(code)}; "
                        "the next request starts it again",
                        kind="crash",
                        request_id=request_id,
                    )
                return
            if event is None:
                continue
            if getattr(event, "request_id", 0) not in (0, request_id):
                continue  # left over from an earlier request whose caller stopped listening
            if isinstance(event, p.ModelLoaded):
                self.loaded_model = event.model_path
            yield event
            if isinstance(event, p.TERMINAL_EVENTS):
                return

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ask the running request to stop; kill the engine if it has not within grace_s."""
        if not self._active_id:
            return
        self._cancel_deadline = time.monotonic() + grace_s
        self._send(p.Cancel(request_id=self._active_id))

    def _send(self, message: Any) -> None:
        """Best effort: a dead engine is noticed (and reported) by the event loop."""
        conn = self._requests  # read once: another thread may discard it meanwhile
        if conn is not None:
            try:
                conn.send(message)
            except OSError:
                pass

    def release(self) -> bool:
        """End an idle engine process, returning all its memory; False if it is busy.

        The next request starts a fresh process and loads its model again.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if not self.alive or self.busy:
                return False
            self.shutdown(timeout=1.0)
            return True
        finally:
            self._lock.release()

    def unload(self) -> None:
        """Free the loaded model, keeping the process."""
        if self.alive and self._requests is not None and not self.busy:
            try:
                self._requests.send(p.Unload())
                self.loaded_model = None
            except OSError:
                pass
