"""Search everything: conversations, messages, attachments, recordings and image prompts.

:class:`SearchScreen` asks :meth:`tui.store.Store.search` as the user types (a
short pause after the last key, in a thread) and returns the chosen hit;
:func:`open_search_hit` takes the app to it: the conversation (with the message
selected), the recording in Listen, or the image in Imagine's gallery.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.safe_text import one_line
from tui.store import SearchHit, Store, StoreError

if TYPE_CHECKING:
    from tui.app import TriptychApp

SEARCH_DELAY_S = 0.2
"""The search runs this long after the last key (not once per key)."""

SEARCH_LIMIT = 100
"""Most hits listed."""

KIND_LABELS = {
    "conversation": "Chat",
    "message": "Message",
    "attachment": "Attachment",
    "recording": "Recording",
    "image": "Image",
}


def hit_label(hit: SearchHit) -> Text:
    """Two plain lines for the result list: what and where, then the text around the match."""
    when = datetime.fromtimestamp(hit.time).strftime("%Y-%m-%d %H:%M") if hit.time else ""
    label = Text.assemble(
        (f"{KIND_LABELS.get(hit.kind, hit.kind)} ", "bold"),
        one_line(hit.title)[:80] or "Untitled",
        (f"  {when}", "dim"),
    )
    if hit.snippet and hit.snippet != hit.title:
        label.append("\n")
        label.append(one_line(hit.snippet), style="italic")
    return label


class SearchScreen(ModalScreen[SearchHit | None]):
    """Type to search everything; Enter opens the highlighted result, Esc closes."""

    CSS_PATH = "search.tcss"

    BINDINGS = [
        Binding("escape", "close", "Close", id="search_all.close", tooltip="Close the search"),
        Binding(
            "down",
            "results",
            "Results",
            id="search_all.results",
            show=False,
            tooltip="Move from the query to the results",
        ),
    ]

    def __init__(self, store: Store, query: str = "") -> None:
        super().__init__()
        self.store = store
        self.initial_query = query
        self.hits: list[SearchHit] = []
        """The results listed, in the list's order."""
        self.searched = ""
        """The query the listed results are for."""
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="search-all", classes="dialog wide"):
            yield Label("Search everything", classes="dialog-text")
            yield Input(
                value=self.initial_query,
                placeholder="Conversations, attachments, transcripts, image prompts",
                id="search-query",
            )
            yield OptionList(id="search-results")
            yield Static(
                "Enter opens · ↓ to the results · Esc closes",
                id="search-status",
                classes="dialog-hint",
            )

    def on_mount(self) -> None:
        self.query_one("#search-query", Input).focus()
        if self.initial_query:
            self._search(self.initial_query)

    @on(Input.Changed, "#search-query")
    def _query_changed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(SEARCH_DELAY_S, self._search_now)

    def _search_now(self) -> None:
        self._timer = None
        self._search(self.query_one("#search-query", Input).value)

    @work(thread=True, exclusive=True, group="search-all", exit_on_error=False)
    def _search(self, query: str) -> None:
        try:
            hits = self.store.search(query, limit=SEARCH_LIMIT)
        except StoreError as error:
            self.app.call_from_thread(self._failed, str(error))
            return
        self.app.call_from_thread(self._show, query, hits)

    def _failed(self, error: str) -> None:
        self.query_one("#search-status", Static).update(Text(one_line(error), style="red"))

    def _show(self, query: str, hits: list[SearchHit]) -> None:
        if query != self.query_one("#search-query", Input).value:
            return  # typed on since: the newer search shows its own results
        self.searched = query
        self.hits = hits
        results = self.query_one("#search-results", OptionList)
        results.set_options(Option(hit_label(hit)) for hit in hits)
        if hits:
            results.highlighted = 0
        if not query.strip():
            status = "Enter opens · ↓ to the results · Esc closes"
        elif not hits:
            status = "Nothing found"
        else:
            more = "+" if len(hits) >= SEARCH_LIMIT else ""
            status = f"{len(hits)}{more} found · Enter opens · Esc closes"
        self.query_one("#search-status", Static).update(status)

    @on(Input.Submitted, "#search-query")
    def _submitted(self) -> None:
        results = self.query_one("#search-results", OptionList)
        if self.hits and self.searched == self.query_one("#search-query", Input).value:
            self.dismiss(self.hits[results.highlighted or 0])

    @on(OptionList.OptionSelected, "#search-results")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if 0 <= event.option_index < len(self.hits):
            self.dismiss(self.hits[event.option_index])

    def action_results(self) -> None:
        results = self.query_one("#search-results", OptionList)
        if results.option_count:
            results.focus()

    def action_close(self) -> None:
        self.dismiss(None)


async def open_search_hit(app: TriptychApp, hit: SearchHit) -> None:
    """Go to what a search found: its conversation, recording or gallery image."""
    from tui.screens.chat import ChatScreen
    from tui.screens.imagine import ImagineScreen
    from tui.screens.listen import ListenScreen

    if hit.kind in ("conversation", "message", "attachment") and hit.conversation_id:
        await app.switch_mode("chat")
        screen = app.screen
        if isinstance(screen, ChatScreen):
            await screen.open_conversation(hit.conversation_id)
            if hit.message_id is not None:
                await screen.show_message(hit.message_id)
    elif hit.kind == "recording":
        await app.switch_mode("listen")
        screen = app.screen
        if isinstance(screen, ListenScreen) and not screen.show_recording(hit.id):
            app.notify("That recording is no longer there", severity="warning")
    elif hit.kind == "image":
        if app.store.get_image(hit.id) is None:
            app.notify("That image is no longer in the gallery", severity="warning")
            return
        await app.switch_mode("imagine")
        screen = app.screen
        if isinstance(screen, ImagineScreen):
            screen.action_gallery(hit.id)
