"""The last line of defence: no control character of text reaches the terminal as such.

Every place that shows untrusted text passes it through :func:`tui.safe_text.visible`
first (which also keeps cell widths right). This guard catches what such a place
missed, and text the user is editing (an Input or TextArea value is kept exact, so
a path with odd characters still works): it wraps Textual's ``Strip.render``, the
one function that turns every widget's rendered lines into terminal output, and
makes control characters visible in the text of ordinary segments.

Two kinds of segment pass unchanged, because they carry escape sequences on
purpose and never come from text: Rich control segments (``control`` set), and a
segment holding nothing but cursor-position sequences (``ESC [ row ; col H``),
which textual-image's sixel widget places around its image data. Styles (colours,
Textual's own OSC 8 links) are rendered by Textual from the style, not the text,
and are untouched.

It fills the render cache of the strip it cleaned, through tui/compat/textual.py
(``tests/test_compat.py`` checks that internal against the pinned Textual).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rich.console import Console
from rich.segment import Segment
from textual.strip import Strip

from tui.compat.textual import set_strip_render_cache, strip_render_cache
from tui.safe_text import has_controls, visible

_CURSOR_MOVES = re.compile(r"(?:\x1b\[\d+;\d+H)+")

_original_render: Callable[[Strip, Console], str] | None = None


def _is_deliberate(segment: Segment) -> bool:
    return bool(segment.control) or _CURSOR_MOVES.fullmatch(segment.text) is not None


def safe_segments(segments: list[Segment]) -> list[Segment] | None:
    """``segments`` with control characters of text made visible, or None when none had any."""
    if not any(has_controls(segment.text) for segment in segments):
        return None
    return [
        segment
        if _is_deliberate(segment) or not has_controls(segment.text)
        else Segment(visible(segment.text), segment.style, segment.control)
        for segment in segments
    ]


def _guarded_render(self: Strip, console: Console) -> str:
    assert _original_render is not None
    if strip_render_cache(self) is None:
        safe = safe_segments(list(self))
        if safe is not None:
            set_strip_render_cache(self, _original_render(Strip(safe), console))
    return _original_render(self, console)


def install() -> None:
    """Wrap ``Strip.render`` (once; later calls do nothing)."""
    global _original_render
    if _original_render is not None:
        return
    _original_render = Strip.render
    Strip.render = _guarded_render  # type: ignore[method-assign]


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return _original_render is not None
