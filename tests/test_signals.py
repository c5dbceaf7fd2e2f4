"""tui.signals.SignalExit in a child process: the clean path and the watchdog."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import REPO

CHILD = textwrap.dedent(
    """
    import asyncio, signal, sys, time
    from pathlib import Path
    from tui.signals import SignalExit

    out = Path(sys.argv[1])
    mode = sys.argv[2]

    async def main():
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def on_signal(signum):
            out.write_text(f"clean {signum}")
            if mode == "clean":
                exits.finished()
                done.set()
            else:
                time.sleep(60)  # a loop stuck (on a terminal that hung up, say)

        def emergency():
            out.write_text(out.read_text() + " rescued")

        exits = SignalExit(on_signal, emergency, force_after_s=0.5)
        assert exits.install(loop)
        print("ready", flush=True)
        await done.wait()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        sys.exit(7)

    asyncio.run(main())
    """
)


def run_child(tmp_path: Path, mode: str, signum: int) -> tuple[int, str, float]:
    out = tmp_path / "out.txt"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    started = time.monotonic()
    child.send_signal(signum)
    code = child.wait(timeout=20)
    return code, out.read_text() if out.exists() else "", time.monotonic() - started


def test_a_signal_runs_the_callback_on_the_loop(tmp_path: Path) -> None:
    code, out, _ = run_child(tmp_path, "clean", signal.SIGTERM)
    assert out == f"clean {int(signal.SIGTERM)}"
    assert code == 7  # the program's own exit: the signal did not end it


def test_a_stuck_loop_is_rescued_and_ends_with_128_plus_the_signal(tmp_path: Path) -> None:
    code, out, seconds = run_child(tmp_path, "stuck", signal.SIGHUP)
    assert out == f"clean {int(signal.SIGHUP)} rescued"
    assert code == 128 + signal.SIGHUP
    assert seconds < 10, seconds  # force_after_s (0.5 s), not the 60 s sleep
