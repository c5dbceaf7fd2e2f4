"""Textual internals (``textual==8.2.8``, pinned in pyproject.toml).

``Strip.render`` caches its terminal output in ``Strip._render_cache``. The
terminal guard (tui/terminal_guard.py) fills that cache with the output of a
cleaned copy, so a strip with control characters in its text is cleaned once,
and every later render of it returns the clean output.

``App._unnotify`` removes one notification (Textual's own Toast calls it when its
timer ends); the first-start tip uses it to go away at the next key.
"""

from __future__ import annotations

from typing import Any

from textual.strip import Strip


def strip_render_cache(strip: Strip) -> str | None:
    """What ``strip.render`` will return without rendering again; None before the first render."""
    return strip._render_cache


def set_strip_render_cache(strip: Strip, rendered: str) -> None:
    """Make ``strip.render`` return ``rendered`` from now on."""
    strip._render_cache = rendered


def dismiss_notification(app: Any, notification: Any) -> None:
    """Take ``notification`` off the screen now, as its own timeout would."""
    app._unnotify(notification)
