"""Small helpers shared by scripts/bench-chat and scripts/bench-ui (standard library only)."""

from __future__ import annotations

import json
import os
import statistics
import sys
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
    from tui.models import default_chat_model_path

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
    note = f"{cpus} CPUs, load average {load:.2f} (1 min)"
    if load > 0.5 * cpus:
        note += " - the machine is busy: timings will be noisy"
    return note


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain, right-aligned text table (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
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
