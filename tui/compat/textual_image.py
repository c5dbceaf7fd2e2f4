"""textual-image internals (``textual-image==0.12.0``, pinned in pyproject.toml).

textual-image asks the terminal for its cell size in pixels once, when its widget
module is imported (before Textual owns the terminal), and keeps the answer; it
has no public function that returns it.
"""

from __future__ import annotations


def terminal_cell_size() -> tuple[int, int]:
    """(width, height) of a terminal cell in pixels, as textual-image measured it.

    Raises what textual-image raises when it cannot tell (e.g. stdout closed).
    """
    from textual_image._terminal import get_cell_size

    cell = get_cell_size()
    return int(cell.width), int(cell.height)
