"""Which panel a server's model serves: c Chat, i Imagine, l Listen, Esc cancels."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from tui.safe_text import one_line

PANELS = {"chat": "Chat", "image": "Imagine", "speech": "Listen"}
"""Modality -> the panel that uses its default model."""


class ModalityChoiceScreen(ModalScreen[str | None]):
    """Ask which modality's default a server model becomes.

    Answers ``'chat'``, ``'image'`` or ``'speech'``; None when cancelled.
    """

    BINDINGS = [
        Binding("c", "choose('chat')", "Chat", id="modality_choice.chat",
                tooltip="Make the server's model the default chat model"),
        Binding("i", "choose('image')", "Imagine", id="modality_choice.image",
                tooltip="Make the server's model the default image model"),
        Binding("l", "choose('speech')", "Listen", id="modality_choice.speech",
                tooltip="Make the server's model the default speech model"),
        Binding("escape", "choose('')", "Cancel", id="modality_choice.cancel",
                tooltip="Change no default"),
    ]  # fmt: skip

    def __init__(self, spec: str, in_use: list[str] | None = None) -> None:
        """``spec``: the ``server:NAME/MODEL`` offered; ``in_use``: modalities using it now."""
        super().__init__()
        self.spec = spec
        self.in_use = list(in_use or [])

    def compose(self) -> ComposeResult:
        now = ", ".join(PANELS[m] for m in self.in_use if m in PANELS) or "no panel"
        with Vertical(classes="dialog wide"):
            # The model id comes from a server: one plain line, controls shown.
            yield Label(
                f"Use {one_line(self.spec)} as the default model of:",
                classes="dialog-text",
                markup=False,
            )
            yield Label(f"Now used by: {now}", classes="dialog-hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                for modality, panel in PANELS.items():
                    yield Button(f"{panel} ({panel[0].lower()})", id=f"choose-{modality}")
                yield Button("Cancel (Esc)", id="choose-cancel")

    def on_mount(self) -> None:
        self.query_one("#choose-cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose((event.button.id or "").removeprefix("choose-"))

    def action_choose(self, modality: str) -> None:
        self.dismiss(modality if modality in PANELS else None)
