"""The Chat panel's F6: attach files (or recordings) to the next message.

F6 asks for a path (:class:`~tui.screens.attach_file.AttachFileScreen`); the file
is read, transcribed or extracted, counted and fitted off the event loop by the
chat service's :class:`~tui.services.attach.AttachmentTray`, whose events draw
the chips above the prompt (:class:`~tui.widgets.attachment_bar.AttachmentBar`).
Shift+F6 drops the newest. The message log shows each sent message's
attachments (collapsed; ``o`` on a selected message shows their text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tui.safe_text import one_line
from tui.screens.attach_file import AttachFileScreen
from tui.services import attach as ta
from tui.widgets.attachment_bar import AttachmentBar
from tui.widgets.message_log import AttachmentData, MessageLog
from tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from tui.screens.chat import ChatScreen


class AttachFromChat:
    """What ChatScreen gains for F6 (a mixin: it uses the screen's service and widgets)."""

    attaching = False
    """True while a file is being read, transcribed or counted."""

    def join_attachments(self: ChatScreen) -> None:
        """On mount: the message log shows the attachments of user messages."""
        store = self.tapp.store

        def lookup(message_ids: list[int]) -> dict[int, list[AttachmentData]]:
            found = store.attachments_for(message_ids)
            return {
                message_id: [
                    AttachmentData(a.name, a.kind, a.content, a.tokens, a.note) for a in items
                ]
                for message_id, items in found.items()
            }

        self.query_one(MessageLog).attachments_for = lookup

    def action_attach(self: ChatScreen) -> None:
        if self.attaching:
            self.notify("Still attaching the last file", severity="warning")
            return
        if self.generating:
            self.notify("Wait for the reply or stop it with Esc", severity="warning")
            return
        recordings = self.service.attachments.recordings()
        self.app.push_screen(AttachFileScreen(recordings), self._attach_chosen)

    def _attach_chosen(self: ChatScreen, target: str | None) -> None:
        if not target:
            return
        self.attaching = True
        prompt = self.query_one(PromptInput).text
        self.run_worker(
            lambda: self._attach_in_thread(target, prompt),
            thread=True,
            group="attach",
            exit_on_error=False,
        )

    def _attach_in_thread(self: ChatScreen, target: str, prompt: str) -> None:
        try:
            self.service.attachments.attach(target, prompt)
        except Exception as error:  # noqa: BLE001 - any failure is one line, nothing attached
            self.post_message(self.ServiceEvent(ta.AttachmentRefused(f"could not attach: {error}")))

    def action_detach_last(self: ChatScreen) -> None:
        if self.service.attachments.remove_last() is None:
            self.notify("No attachment to remove", severity="warning")

    def attachment_event(self: ChatScreen, event: Any) -> bool:
        """Draw an event of the attachment tray; False when ``event`` is not one."""
        bar = self.query_one(AttachmentBar)
        if isinstance(event, ta.Attaching):
            bar.say(f"Attaching {event.name}…")
            self._set_status(f"Attaching {one_line(event.name)}…")
        elif isinstance(event, ta.AttachmentsChanged):
            if self.attaching:  # the "Attaching …" status is over; other statuses stay
                self._set_status("")
            self.attaching = False
            bar.show(event.pending, event.room, event.notice)
        elif isinstance(event, ta.AttachmentRefused):
            self.attaching = False
            bar.say(event.message, error=True)
            self._set_status("")
            self.notify(one_line(event.message), severity="warning", timeout=8)
        else:
            return False
        return True
