"""The sidebar list of conversations, loaded a page at a time."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.safe_text import escape_markup as escape
from tui.safe_text import one_line
from tui.store import Conversation

LOAD_MARGIN = 5
"""Rows before the end of the list at which the next page is asked for."""


class ConversationList(OptionList):
    """Enter opens; r renames; Delete removes (after confirmation).

    Holds the pages loaded so far; when the highlight or the scroll position
    comes near the end and more conversations exist, it posts MoreWanted and
    the screen adds the next page with :meth:`extend`.
    """

    BINDINGS = [
        Binding("r", "screen.rename", "Rename", id="list.rename", tooltip="Rename"),
        Binding(
            "delete,d",
            "screen.delete_conversation",
            "Delete",
            id="list.delete",
            tooltip="Delete the conversation (asks first)",
        ),
        Binding(
            "e",
            "export",
            "Export",
            id="list.export",
            tooltip="Export the conversation as Markdown (.md) or JSON (.json)",
        ),
        Binding(
            "slash",
            "app.search_everything",
            "Search all",
            id="list.search_all",
            tooltip="Search conversations, attachments, transcripts and image prompts",
        ),
    ]

    class MoreWanted(Message):
        """The list is near its end and more conversations exist."""

    class ExportRequested(Message):
        """The user asked to export the highlighted conversation (the app asks where)."""

        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.search = ""
        """The search the listed conversations match ('' for all)."""
        self.last: Conversation | None = None
        """The last conversation listed: the next page starts after it."""
        self.more = False
        """More conversations than those listed match the search."""
        self._asked = False

    def show(
        self,
        conversations: list[Conversation],
        current: int | None,
        *,
        search: str = "",
        more: bool = False,
    ) -> None:
        """Replace the options, keeping the current conversation highlighted."""
        self.search = search
        self._set_page(conversations, more)
        self.set_options(self._options_for(conversations))
        if current is not None:
            try:
                self.highlighted = self.get_option_index(str(current))
            except Exception:  # noqa: BLE001 - the current one may be filtered out or not loaded
                pass

    def extend(self, conversations: list[Conversation], *, more: bool) -> None:
        """Add the next page after the options listed."""
        self._set_page(conversations, more, keep_last=True)
        self.add_options(self._options_for(conversations))

    def _set_page(
        self, conversations: list[Conversation], more: bool, keep_last: bool = False
    ) -> None:
        if conversations or not keep_last:
            self.last = conversations[-1] if conversations else None
        self.more = more
        self._asked = False

    @staticmethod
    def _options_for(conversations: list[Conversation]) -> list[Option]:
        # Titles are data (a first message, an import): one plain line, controls shown.
        return [
            Option(escape(one_line(c.title)) or "Untitled", id=str(c.id)) for c in conversations
        ]

    def action_export(self) -> None:
        option = self.highlighted_option
        if option is None or option.id is None:
            self.notify("No conversation to export", severity="warning")
            return
        self.post_message(self.ExportRequested(int(option.id)))

    def _near_end(self) -> bool:
        if self.highlighted is not None and self.highlighted >= self.option_count - LOAD_MARGIN:
            return True
        return self.max_scroll_y > 0 and self.scroll_y >= self.max_scroll_y - LOAD_MARGIN

    def _ask_if_near_end(self) -> None:
        if self.more and not self._asked and self._near_end():
            self._asked = True
            self.post_message(self.MoreWanted())

    def watch_highlighted(self, highlighted: int | None) -> None:
        super().watch_highlighted(highlighted)
        self._ask_if_near_end()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._ask_if_near_end()
