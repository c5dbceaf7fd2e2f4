"""The image prompt the chat model wrote, shown for editing before it is drawn (F7)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

from tui.safe_text import one_line, visible
from tui.widgets.prompt_input import PromptInput


class ImaginePromptScreen(ModalScreen[str | None]):
    """Edit the image prompt: Enter or Ctrl+S draws it, Esc cancels (None)."""

    BINDINGS = [
        Binding(
            "ctrl+s",
            "generate",
            "Generate",
            id="imagine_prompt.generate",
            tooltip="Draw this prompt with the Imagine panel's model and settings",
        ),
        Binding(
            "escape",
            "cancel",
            "Cancel",
            id="imagine_prompt.cancel",
            tooltip="Close without drawing",
        ),
    ]

    DEFAULT_CSS = """
    ImaginePromptScreen > .dialog { width: 72; max-width: 95%; }
    ImaginePromptScreen #image-prompt { height: auto; max-height: 8; min-height: 3; }
    ImaginePromptScreen .dialog-note { color: $warning; }
    """

    def __init__(self, prompt: str, note: str = "", title: str = "Imagine from the chat") -> None:
        super().__init__()
        self.prompt = prompt
        self.note = note
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(visible(self.title_text), classes="dialog-text", markup=False)
            # Written by the model: shown (and drawn) with its control characters visible.
            area = PromptInput(id="image-prompt")
            area.load_text(one_line(self.prompt))
            yield area
            if self.note:
                yield Label(visible(self.note), classes="dialog-note", markup=False)
            yield Label("Enter or Ctrl+S draws it, Esc cancels", classes="dialog-hint")

    def on_mount(self) -> None:
        area = self.query_one(PromptInput)
        area.move_cursor(area.document.end)
        area.focus()

    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.action_generate()

    def action_generate(self) -> None:
        text = one_line(self.query_one(PromptInput).text)
        if not text:
            self.notify("The image prompt is empty", severity="warning")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
