"""Multi-line prompt: Enter sends, Ctrl+J (or Alt/Shift+Enter) inserts a newline."""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea
from textual.widgets.text_area import Edit, EditResult

from tui.safe_text import visible

NEWLINE_KEYS = ("ctrl+j", "shift+enter", "alt+enter")


class PromptInput(TextArea):
    """The chat input. Posts PromptInput.Submitted on Enter."""

    BINDINGS = [
        Binding(
            "enter", "submit", "Send", id="prompt.send", show=False, tooltip="Send the message"
        ),
        Binding(
            "ctrl+j",
            "newline",
            "Newline",
            id="prompt.newline",
            show=False,
            tooltip="Insert a newline (also Alt+Enter, or Shift+Enter where the terminal sends it)",
        ),
    ]

    class Submitted(Message):
        """The user pressed Enter in the prompt."""

        def __init__(self, prompt: PromptInput, text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

        @property
        def control(self) -> PromptInput:
            return self.prompt

    def __init__(self, *, id: str | None = None, placeholder: str = "") -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            placeholder=placeholder,
            compact=True,
        )

    def on_key(self, event: events.Key) -> None:
        # Runs before TextArea's own key handler, which prevent_default() skips.
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.action_submit()
        elif event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_newline()

    # Every change of the text (typing, paste, insert, undo) is an Edit and loading
    # replaces the document: control characters (a paste of terminal output, an
    # edited stored message, dictated words) become visible stand-ins, so the prompt
    # shows, and sends, exactly what the user sees.
    def edit(self, edit: Edit) -> EditResult:
        edit.text = visible(edit.text)
        return super().edit(edit)

    def load_text(self, text: str) -> None:
        super().load_text(visible(text))

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def clear(self) -> EditResult:
        """Empty the prompt (after a message is sent) and forget its undo history.

        TextArea's history keeps every edit's text, the deletion included, for 50
        checkpoints: a sent megabyte paste would otherwise stay in memory twice.
        """
        result = super().clear()
        self.history.clear()
        return result

    def action_newline(self) -> None:
        self.insert("\n")
