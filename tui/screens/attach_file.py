"""The Chat panel's F6 dialog: the path of a file to attach, or a recording.

Tab completes the path (as far as it is unambiguous) and the rest of the
completion is suggested as one types (→ or End accepts it); ``recording:``
completes with the recordings of the Listen panel, which are also listed below
the path to pick with ↓ and Enter. Answers the path or ``recording:ID`` (None
when cancelled).
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from tui.attachments import RECORDING_PREFIX, complete_path
from tui.safe_text import one_line
from tui.store import Recording


class PathSuggester(Suggester):
    """Suggests the completion of a path, or of ``recording:`` with the recordings."""

    def __init__(self, recordings: list[str]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.recordings = recordings

    async def get_suggestion(self, value: str) -> str | None:
        completed = complete_path(value, self.recordings)
        return completed if len(completed) > len(value) else None


class AttachFileScreen(ModalScreen[str | None]):
    """Ask for a file (or recording) to attach to the next message. Esc cancels."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="attach_dialog.cancel"),
        Binding(
            "tab",
            "complete",
            "Complete",
            id="attach_dialog.complete",
            tooltip="Complete the path",
            priority=True,
        ),
    ]

    DEFAULT_CSS = """
    AttachFileScreen #attach-recordings { height: auto; max-height: 6; border: none; }
    """

    def __init__(self, recordings: list[Recording], start: str = "") -> None:
        super().__init__()
        self.recordings = recordings
        self.start = start

    def _names(self) -> list[str]:
        return [f"{RECORDING_PREFIX}{record.id}" for record in self.recordings]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(
                "Attach a file: text, source code, Markdown, PDF or audio", classes="dialog-text"
            )
            yield Input(
                value=self.start,
                placeholder="path, e.g. ~/notes.txt (Tab completes) or recording:ID",
                suggester=PathSuggester(self._names()),
                id="attach-path",
            )
            if self.recordings:
                yield OptionList(
                    *[
                        Option(
                            f"{RECORDING_PREFIX}{record.id}  {one_line(record.name)}"
                            + (" (transcribed)" if record.transcript else ""),
                            id=f"{RECORDING_PREFIX}{record.id}",
                        )
                        for record in self.recordings
                    ],
                    id="attach-recordings",
                )
            yield Label(
                "Enter attaches · Tab completes · ↓ recordings · Esc cancels",
                classes="dialog-hint",
            )

    def on_mount(self) -> None:
        field = self.query_one("#attach-path", Input)
        field.focus()
        field.cursor_position = len(field.value)

    def action_complete(self) -> None:
        """Tab: complete the path in the field; elsewhere move on as Tab does."""
        field = self.query_one("#attach-path", Input)
        if self.focused is not field:
            self.focus_next()
            return
        completed = complete_path(field.value, self._names())
        if len(completed) > len(field.value):
            field.value = completed
            field.cursor_position = len(completed)
        elif self.recordings:
            self.query_one("#attach-recordings", OptionList).focus()

    @on(Input.Submitted, "#attach-path")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        self.dismiss(text or None)

    @on(OptionList.OptionSelected, "#attach-recordings")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_id)

    def key_down(self) -> None:
        if self.recordings and isinstance(self.focused, Input):
            self.query_one("#attach-recordings", OptionList).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)
