"""Small helpers shared by scripts/bench-chat and scripts/bench-ui (standard library only)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
FIXTURE_MODEL = REPO / ".fixtures" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_venv() -> None:
    """Re-run this script with the project's virtual environment if started by another Python.

    Lets ``scripts/bench-chat`` work through its ``#!/usr/bin/env python3`` shebang as well
    as ``.venv/bin/python scripts/bench-chat``. Also makes ``tui`` importable from the repo.
    """
    python = VENV / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        if not os.environ.get("TRIPTYCH_BENCH_REEXEC"):
            os.environ["TRIPTYCH_BENCH_REEXEC"] = "1"
            os.execv(str(python), [str(python), sys.argv[0], *sys.argv[1:]])
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def default_model() -> Path:
    """The test model, or the app's default chat model when the fixture is missing."""
    if FIXTURE_MODEL.is_file():
        return FIXTURE_MODEL
    from tui.default_model import default_chat_model_path

    return default_chat_model_path()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_note() -> str:
    """CPU count and load, so a reader can tell a busy machine from a slow code path."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpus} CPUs, load average {load:.2f} (1 min, includes recent runs of ours)"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain, right-aligned text table (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if value is None:
        return "-"
    return str(value)


def print_json_summary(summary: dict[str, Any]) -> None:
    """The last line of a benchmark: one JSON object (NaN becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return None if value != value else round(value, 4)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    print(json.dumps(clean(summary), sort_keys=False), flush=True)


class CpuWatch:
    """How much CPU processes other than this one (and its waited-for children) took.

    Reads /proc (Linux); elsewhere other_share() is NaN. Call other_share() after the
    children were waited for, so their CPU time counts as ours.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        busy = user + nice + system + irq + softirq
        # Fields 14-17 of /proc/PID/stat (utime stime cutime cstime); index from after ')'.
        mine = sum(int(v) for v in own[11:15])
        return busy, float(mine), float(steal), time.monotonic()

    def other_share(self) -> tuple[float, float]:
        """(CPU share used by other processes, share stolen by the hypervisor), 0..1 each."""
        end = self._sample()
        if self.start is None or end is None:
            return float("nan"), float("nan")
        ticks = os.sysconf("SC_CLK_TCK")
        wall = end[3] - self.start[3]
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count() or 1
        capacity = wall * ticks * cpus
        if capacity <= 0:
            return float("nan"), float("nan")
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(0.0, other / capacity), max(0.0, (end[2] - self.start[2]) / capacity)
