"""CPU threads for the engines: how many they may use, and a gate that shares the cores.

llama.cpp, stable-diffusion.cpp and whisper.cpp all compute with ggml, whose
worker threads spin at every barrier. Two engines whose threads together
outnumber the cores do not each run at half speed: a thread that is not
scheduled holds up all the others of its engine at the next barrier (measured
on 2 cores: SmolLM2's first token came 0.24 s after the request alone, 5.3 s
after it beside a 320x320 image generation). Threads beyond the cores the
process may run on do not help either, and very many of them crash the engines.

So :func:`bound_threads` keeps every request within the CPUs this process may
use, and :class:`CpuGate` (one per process, shared by the engine hosts) lets a
request start only when its threads fit beside those of the requests already
running; otherwise it waits, first come first served, and the first request
keeps its full speed. On a machine with enough cores for both, both run.

Standard library only; no Textual, no native binding.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; cgroup quotas are not read)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Physical cores, roughly: all CPUs we may use, halved on big SMT machines."""
    cpus = available_cpus()
    return max(1, cpus // 2 if cpus > 4 else cpus)


def bound_threads(requested: int) -> int:
    """The threads an engine actually uses: 0 (or less) means the default, and
    more than the available CPUs means all of them."""
    if requested <= 0:
        return default_threads()
    return min(requested, available_cpus())


@dataclass(eq=False)
class CpuTicket:
    """One request's claim on the cores: queued until granted, then held until released."""

    owner: str
    """The engine that asks (chat, image, speech)."""
    threads: int
    granted: bool = False


class CpuGate:
    """Admits requests whose threads fit beside the running ones; queues the rest in order.

    A request alone always runs (its threads are bounded by the CPUs). The queue is
    strictly first come first served, so a large request is never overtaken forever by
    small ones.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity if capacity is not None else available_cpus()
        self._changed = threading.Condition()
        self._running: list[CpuTicket] = []
        self._queue: list[CpuTicket] = []

    def request(self, owner: str, threads: int) -> CpuTicket:
        """Queue a claim for threads; it is granted at once when they fit."""
        ticket = CpuTicket(owner, max(1, min(threads, self.capacity)))
        with self._changed:
            self._queue.append(ticket)
            self._grant()
        return ticket

    def wait(self, ticket: CpuTicket, timeout: float | None = None) -> bool:
        """Block until the ticket is granted or timeout passes; whether it was granted."""
        with self._changed:
            return self._changed.wait_for(lambda: ticket.granted, timeout)

    def release(self, ticket: CpuTicket) -> None:
        """Give the threads back (or leave the queue); the next claims that fit start."""
        with self._changed:
            if ticket in self._running:
                self._running.remove(ticket)
            elif ticket in self._queue:
                self._queue.remove(ticket)
            ticket.granted = False
            self._grant()

    def blockers(self, ticket: CpuTicket) -> list[str]:
        """The engines a queued ticket waits for: those running, then those ahead of it."""
        with self._changed:
            if ticket.granted or ticket not in self._queue:
                return []
            ahead = self._queue[: self._queue.index(ticket)]
            names: list[str] = []
            for other in self._running + ahead:
                if other.owner not in names and other.owner != ticket.owner:
                    names.append(other.owner)
            return names

    def running(self) -> list[str]:
        """Engines holding threads now."""
        with self._changed:
            return [t.owner for t in self._running]

    def queued(self) -> list[str]:
        """Engines waiting, in order."""
        with self._changed:
            return [t.owner for t in self._queue]

    def _grant(self) -> None:
        """Start queued claims in order while they fit (caller holds the lock)."""
        used = sum(t.threads for t in self._running)
        while self._queue:
            head = self._queue[0]
            if self._running and used + head.threads > self.capacity:
                break
            self._queue.pop(0)
            head.granted = True
            self._running.append(head)
            used += head.threads
        self._changed.notify_all()


def describe_wait(behind: list[str]) -> str:
    """'Waiting for the image engine to finish' (for status lines)."""
    names = " and ".join(behind) or "another"
    engines = "engines" if len(behind) > 1 else "engine"
    return f"Waiting for the {names} {engines} to finish (the cores are busy)"
