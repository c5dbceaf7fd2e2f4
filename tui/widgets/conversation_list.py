"""The sidebar list of conversations."""

from __future__ import annotations

from textual.binding import Binding
from textual.markup import escape
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.safe_text import one_line


class ConversationList(OptionList):
    """Enter opens; r renames; Delete removes (after confirmation)."""

    BINDINGS = [
        Binding("r", "screen.rename", "Rename", id="list.rename", tooltip="Rename"),
        Binding(
            "delete,d",
            "screen.delete_conversation",
            "Delete",
            id="list.delete",
            tooltip="Delete the conversation (asks first)",
        ),
    ]

    def show(self, conversations: list[tuple[int, str]], current: int | None) -> None:
        """Replace the options, keeping the current conversation highlighted."""
        # Titles are data (a first message, an import): one plain line, controls shown.
        self.set_options(
            Option(escape(one_line(title)) or "Untitled", id=str(cid))
            for cid, title in conversations
        )
        if current is not None:
            try:
                self.highlighted = self.get_option_index(str(current))
            except Exception:  # noqa: BLE001 - the current one may be filtered out
                pass
