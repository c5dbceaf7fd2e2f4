"""The attachments waiting above the chat prompt: chips, the room left, notices.

``📎 notes.txt · 1,234 tok`` per attachment (``≈`` when a remote model's counts
are estimates), then ``N tokens left of S`` and the last notice (a trim, a
refusal). Hidden while nothing is attached and nothing is to be said.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

from tui.attachments import Candidate
from tui.safe_text import one_line
from tui.services.attach import ContextRoom


def chip(candidate: Candidate, estimated: bool = False) -> str:
    """One attachment as a chip: its name and token count."""
    approx = "≈" if estimated else ""
    return f"📎 {one_line(candidate.name)} · {approx}{candidate.tokens:,} tok"


class AttachmentBar(Static):
    """Chips for the pending attachments, the room left and the last notice."""

    DEFAULT_CSS = """
    AttachmentBar { height: auto; max-height: 4; padding: 0 1; display: none; }
    AttachmentBar.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.pending: tuple[Candidate, ...] = ()
        self.room: ContextRoom | None = None
        self.notice = ""
        self.is_error = False

    def show(
        self,
        pending: Sequence[Candidate],
        room: ContextRoom | None,
        notice: str = "",
        *,
        error: bool = False,
    ) -> None:
        """Draw these attachments, the room and a notice ('' for none)."""
        self.pending = tuple(pending)
        self.room = room
        self.notice = notice
        self.is_error = error
        self.set_class(bool(self.pending or notice), "-shown")
        self.update(self._text())

    def on_resize(self) -> None:
        self.update(self._text())

    def say(self, notice: str, *, error: bool = False) -> None:
        """Show a notice, keeping the chips."""
        self.show(self.pending, self.room, notice, error=error)

    def _text(self) -> Text:
        text = Text()
        estimated = bool(self.room and self.room.estimated)
        width = max(self.content_size.width, 20)
        used = 0
        for index, candidate in enumerate(self.pending):
            label = chip(candidate, estimated)
            # A chip that would not fit the line starts the next one (never split in two).
            if index and used + 2 + cell_len(label) > width:
                text.append("\n")
                used = 0
            elif index:
                text.append("  ")
                used += 2
            text.append(label, style="reverse")
            used += cell_len(label)
        if self.pending and self.room is not None:
            approx = "≈" if estimated else ""
            left = max(self.room.left, 0)
            text.append(
                f"\n{approx}{left:,} tokens left of {self.room.n_ctx:,} · Shift+F6 drops one",
                style="dim",
            )
        if self.notice:
            text.append("\n" if text else "")
            text.append(one_line(self.notice), style="bold red" if self.is_error else "yellow")
        return text
