"""The help screen: every key of the app, generated from the bindings themselves."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.keys import KeySection


def keys_table(sections: Iterable[KeySection]) -> Table:
    table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
    table.add_column("key", style="bold", no_wrap=True, width=18)
    table.add_column("action", ratio=1)
    for section in sections:
        table.add_row(Text(section.title, style="bold underline"), "")
        for entry in section.entries:
            description = entry.description
            if entry.tooltip and entry.tooltip != description:
                description = f"{description} — {entry.tooltip}"
            table.add_row(entry.keys, description)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    """Lists every key binding, grouped by where it works."""

    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close help", id="help.close")]

    def __init__(self, sections: list[KeySection]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(
                "[b]Triptych help[/b] — Esc closes. Ctrl+P opens the command palette, "
                "which lists every action too.",
                id="help-title",
            )
            yield Static(keys_table(self.sections), id="help-keys")
