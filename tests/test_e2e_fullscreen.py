"""The full-screen image view in a real terminal (tmux): it draws, and any key returns."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tui import imaging
from tui.imaging import ImageParams
from tui.store import Store

pytestmark = pytest.mark.slow
TRIPTYCH = Path(sys.executable).with_name("triptych")


def test_full_screen_view_draws_and_returns(tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing: scripts/test installs it")
    data = tmp_path / "data"
    params = ImageParams(prompt="a green square", model="m.safetensors", seed=3)
    buffer = io.BytesIO()
    stripes = Image.new("RGB", (64, 64), "green")
    for y in range(0, 64, 2):
        stripes.paste((200, 30, 30), (0, y, 64, y + 1))
    stripes.save(buffer, format="PNG")
    path = imaging.save_png(buffer.getvalue(), data / "images" / "green.png", params)
    with Store(data / "triptych.db") as store:
        store.add_image(str(path), params.to_dict(), seed=3, width=64, height=64)
    socket = f"triptych-fs-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = f"TERM=xterm-256color TRIPTYCH_DATA_DIR={data} TRIPTYCH_CONFIG_DIR={tmp_path / 'cfg'}"
    tmux = ["tmux", "-L", socket]

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout

    def wait_for(text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} did not appear:\n{screen()}")

    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "80", "-y", "24", f"{env} {TRIPTYCH}; sleep 60"],
        check=True,
    )
    try:
        wait_for("Message")
        subprocess.run([*tmux, "send-keys", "F3"], check=True)
        wait_for("Generate")
        subprocess.run([*tmux, "send-keys", "C-l"], check=True)
        wait_for("a green square")
        subprocess.run([*tmux, "send-keys", "v"], check=True)
        shown = wait_for("press any key to return")
        assert "▀" in shown or "▄" in shown  # the image itself (block characters in tmux)
        subprocess.run([*tmux, "send-keys", "x"], check=True)
        back = wait_for("Same again")  # the gallery's footer: the app is back and responsive
        assert "press any key" not in back
        subprocess.run([*tmux, "send-keys", "Escape"], check=True)
        wait_for("Generate")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
