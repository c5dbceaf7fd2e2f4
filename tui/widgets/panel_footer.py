"""The key footer at the bottom of every panel, without Textual's footer leak.

Textual's ``Footer`` recomposes its keys whenever the screen's bindings change
(every panel switch, every focus change). Each ``FooterKey`` it composes is
``data_bind``-ed to the footer's ``compact`` reactive, which stores a watcher
holding the key on the footer itself; Textual prunes watchers of removed
widgets only when the watched value changes, and ``compact`` never does. So
every key ever shown stayed alive, with its render caches: about 0.3 MB per
panel switch at 80x24 (Textual issue #6666, open in 8.2.8).
"""

from __future__ import annotations

from textual.widgets import Footer


class PanelFooter(Footer):
    """``Footer`` that releases the keys it replaces when it recomposes."""

    async def recompose(self) -> None:
        await super().recompose()
        # Running the `compact` watchers makes Textual drop those of removed keys; the
        # live keys just receive the value they already have.
        self.mutate_reactive(Footer.compact)
