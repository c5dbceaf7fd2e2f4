"""Test helpers shared by the Pilot tests."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
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


def wait_for_http(
    process: subprocess.Popen[bytes],
    url: str,
    what: str,
    log: Path,
    stop: Callable[[], object],
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> None:
    """Wait until a server a test started answers ``url`` with 200.

    Fails the test, with the end of the server's log, when the process exits or
    does not answer within ``timeout`` (after calling ``stop``).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}; see {log}:\n{_tail(log)}")
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    stop()
    pytest.fail(f"{what} did not answer within {timeout:g} s; see {log}:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""
