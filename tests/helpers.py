"""Test helpers shared by the Pilot tests."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import IO

from textual.pilot import Pilot


async def wait_until(
    pilot: Pilot, predicate: Callable[[], bool], timeout: float = 30.0, what: str = ""
) -> float:
    """Let the app run until predicate() holds; return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.02)
        await asyncio.sleep(0)
    return time.monotonic() - started


def stop_process(process: subprocess.Popen[bytes], log: IO[str] | None = None) -> None:
    """Terminate a server a test started (kill it after 10 s), then close its log."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if log is not None:
        log.close()
