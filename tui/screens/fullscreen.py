"""Full-screen image view with term-image, outside Textual; any key returns."""

from __future__ import annotations

import os
import sys
import termios
import tty
from pathlib import Path

from textual.app import App, SuspendNotSupported


def _draw(path: Path) -> None:
    from PIL import Image
    from term_image.image import AutoImage

    with Image.open(path) as source:
        image = AutoImage(source.convert("RGB"))
        # Fit the terminal, leaving two lines for the hint below the image.
        image.set_size(frame_size=(0, -2))
        sys.stdout.write("\x1b[2J\x1b[H")
        image.draw(h_align="center", v_align="middle", pad_height=-2)
    sys.stdout.write(f"\n{path.name} — press any key to return")
    sys.stdout.flush()


def _wait_for_key() -> None:
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        os.read(fd, 32)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def show_fullscreen(app: App, path: Path) -> None:
    """Suspend the app, draw the image at the terminal's resolution, wait for a key."""
    if not path.is_file():
        app.notify(f"image not found: {path}", severity="error")
        return
    failure: Exception | None = None
    try:
        with app.suspend():
            # Nothing may escape this block: Textual only resumes the app when it ends normally.
            try:
                _draw(path)
                _wait_for_key()
            except Exception as error:  # noqa: BLE001 - reported once the app is back
                failure = error
            finally:
                sys.stdout.write("\x1b[2J\x1b[H")
                sys.stdout.flush()
    except SuspendNotSupported:
        app.notify("Full-screen view needs a real terminal", severity="warning")
        return
    if failure is not None:
        app.notify(f"could not show the image full-screen: {failure}", severity="error")
