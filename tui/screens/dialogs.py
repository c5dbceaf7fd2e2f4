"""Small modal dialogs that return typed results."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from tui.safe_text import one_line, visible


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question. Enter or y confirms; Esc or n cancels."""

    BINDINGS = [
        Binding("escape,n", "answer(False)", "Cancel", id="confirm.no"),
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
    ]

    def __init__(self, question: str, confirm_label: str = "Delete") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            # Questions quote titles and file names: plain text, controls shown.
            yield Label(visible(self.question), classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class TextPromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (e.g. a new title). Esc cancels (None)."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="prompt_dialog.cancel"),
        Binding("tab", "complete", "Complete the path", id="prompt_dialog.complete", show=False,
                tooltip="In a dialog asking for a file: complete the path"),
    ]  # fmt: skip

    def __init__(
        self,
        title: str,
        value: str = "",
        placeholder: str = "",
        *,
        allow_empty: bool = False,
        paths: bool = False,
    ) -> None:
        """``allow_empty``: Enter on an empty line answers '' (else None, as Esc does).

        ``paths``: the answer is a file path; Tab completes it.
        """
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.allow_empty = allow_empty
        self.paths = paths

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(visible(self.title_text), classes="dialog-text", markup=False)
            # The value offered for editing (a title, a name) is shown as it will be saved.
            yield Input(value=one_line(self.value), placeholder=self.placeholder, id="text")
            completes = "Tab completes the path, " if self.paths else ""
            yield Label(f"Enter to save, {completes}Esc to cancel", classes="dialog-hint")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        self.dismiss(text if text or self.allow_empty else None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Tab moves focus as usual unless the answer is a path.
        return self.paths if action == "complete" else True

    def action_complete(self) -> None:
        from tui.attachments import complete_path

        field = self.query_one("#text", Input)
        completed = complete_path(field.value)
        if len(completed) > len(field.value):
            field.value = completed
            field.cursor_position = len(completed)

    def action_cancel(self) -> None:
        self.dismiss(None)
