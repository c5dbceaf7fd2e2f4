"""The Chat panel's F7: picture the conversation with the Imagine panel's model.

The chat model writes an image prompt from the last exchange (or from the
selected message: "Imagine this"), the user edits it in
:class:`~tui.screens.imagine_prompt.ImaginePromptScreen`, and the image is
drawn into the message log: a placeholder with step progress and the live
preview, then the image message itself. Esc stops either step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

from tui.safe_text import escape_markup as escape
from tui.safe_text import one_line
from tui.screens.imagine_prompt import ImaginePromptScreen
from tui.services import chat_imagine as ci
from tui.services import imagine as image_events
from tui.services.chat import ChatError
from tui.store import Message as StoredMessage
from tui.widgets.message_log import ImageMessageView, MessageData, MessageLog

if TYPE_CHECKING:
    from tui.screens.chat import ChatScreen


class ImagineProgress(Message):
    """An event of imagining from the chat, posted from its worker thread.

    Step progress and previews collapse in the queue: only the newest is drawn.
    """

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(message, ImagineProgress)
            and isinstance(self.event, image_events.StepDone | image_events.PreviewReady)
            and type(message.event) is type(self.event)
        )


@dataclass(frozen=True)
class PromptWritten:
    prompt: ci.ImagePrompt | None
    error: str = ""


@dataclass(frozen=True)
class ImageDrawn:
    message: StoredMessage | None
    error: str = ""


class ImagineFromChat:
    """What ChatScreen gains for F7 (a mixin: it uses the screen's service and widgets)."""

    imagine_phase = ""
    """'' (idle), 'writing' (the prompt), 'editing' (the dialog) or 'drawing'."""
    imagine_view: ImageMessageView | None = None
    """The placeholder of the image being drawn."""
    _chat_imagine: ci.ChatImagine | None = None
    _leave_imagine_events: Any = None

    @property
    def chat_imagine(self: ChatScreen) -> ci.ChatImagine:
        if self._chat_imagine is None:
            app = self.tapp
            self._chat_imagine = ci.ChatImagine(
                self.service, app.imagine_service, lambda: app.imagine_form()
            )
        return self._chat_imagine

    def join_imagine(self: ChatScreen) -> None:
        """On mount: image messages draw their pictures; imagining events reach the screen."""
        log = self.query_one(MessageLog)
        log.image_protocol = self.tapp.settings.image_protocol
        store = self.tapp.store
        log.image_path = lambda image_id: ci.image_path(store, image_id)
        self._leave_imagine_events = self.chat_imagine.subscribe(
            lambda event: self.post_message(ImagineProgress(event))
        )

    def leave_imagine(self) -> None:
        if self._leave_imagine_events is not None:
            self._leave_imagine_events()
            self._leave_imagine_events = None

    def stop_imagining(self: ChatScreen) -> bool:
        """Esc: stop writing the prompt or drawing; False when neither runs."""
        if self.imagine_phase in ("writing", "drawing") and self.chat_imagine.stop():
            self._set_status("Stopping…")
            return True
        return False

    # --- F7 ------------------------------------------------------------------------

    def action_imagine(self: ChatScreen) -> None:
        if self.imagine_phase:
            self.notify("Already imagining: Esc stops it", severity="warning")
            return
        if self.generating:
            self.notify("Wait for the reply or stop it with Esc", severity="warning")
            return
        if self.service.conversation is None:
            self.notify("Nothing to picture yet: send a message first", severity="warning")
            return
        log = self.query_one(MessageLog)
        selected = log.selected_message() if log.selected is not None else None
        message_id = selected.id if selected and selected.role in ("user", "assistant") else None
        try:
            self.chat_imagine.check_image_model()
        except ChatError as error:
            self._set_status(escape(one_line(str(error))))
            self.notify(str(error), severity="warning")
            return
        self.imagine_phase = "writing"
        this = "this message" if message_id is not None else "the last exchange"
        self._set_status(f"Writing an image prompt for {this}… Esc stops")
        self.run_worker(
            lambda: self._write_image_prompt(message_id),
            thread=True,
            group="imagine",
            exclusive=True,
            exit_on_error=False,
        )

    def _write_image_prompt(self: ChatScreen, message_id: int | None) -> None:
        try:
            written = PromptWritten(self.chat_imagine.write_prompt(message_id))
        except ChatError as error:
            written = PromptWritten(None, str(error))
        self.post_message(ImagineProgress(written))

    def _prompt_written(self: ChatScreen, written: PromptWritten) -> None:
        if written.prompt is None:
            self.imagine_phase = ""
            self._set_status(escape(one_line(written.error)))
            self.notify(written.error, severity="warning")
            return
        self.imagine_phase = "editing"
        self._set_status("Edit the image prompt: Enter draws it, Esc cancels")
        conversation = self.service.conversation
        conversation_id = conversation.id if conversation else None
        self.app.push_screen(
            ImaginePromptScreen(written.prompt.text, written.prompt.note),
            callback=lambda text: self._prompt_edited(conversation_id, text),
        )

    async def _prompt_edited(
        self: ChatScreen, conversation_id: int | None, text: str | None
    ) -> None:
        if not text or conversation_id is None:
            self.imagine_phase = ""
            self._set_status("Imagine cancelled")
            return
        self.imagine_phase = "drawing"
        open_one = self.service.conversation
        if open_one is not None and open_one.id == conversation_id:
            placeholder = MessageData(0, "image", text, state="streaming")
            view = await self.query_one(MessageLog).add(placeholder)
            self.imagine_view = view if isinstance(view, ImageMessageView) else None
        self._set_status("Drawing… Esc stops")
        self.run_worker(
            lambda: self._draw(conversation_id, text),
            thread=True,
            group="imagine",
            exclusive=True,
            exit_on_error=False,
        )

    def _draw(self: ChatScreen, conversation_id: int, prompt: str) -> None:
        try:
            drawn = ImageDrawn(self.chat_imagine.generate(conversation_id, prompt))
        except ChatError as error:
            drawn = ImageDrawn(None, str(error))
        except Exception as error:  # noqa: BLE001 - any failure ends the drawing visibly
            drawn = ImageDrawn(None, f"the image engine failed: {error}")
        self.post_message(ImagineProgress(drawn))

    # --- progress ----------------------------------------------------------------------

    async def on_imagine_progress(self: ChatScreen, message: ImagineProgress) -> None:
        event = message.event
        view = self.imagine_view if self.imagine_view and self.imagine_view.is_attached else None
        if isinstance(event, PromptWritten):
            self._prompt_written(event)
        elif isinstance(event, image_events.StepDone):
            if view is not None:
                view.set_progress(f"step {event.done}/{event.total}")
            self._set_status(
                f"Drawing: step {event.done}/{event.total} · ETA {event.eta_s:.0f}s · Esc stops"
            )
        elif isinstance(event, image_events.PreviewReady):
            if view is not None:
                view.show_preview(event.png)
        elif isinstance(event, image_events.WaitingForCpu):
            self._set_status(escape(one_line(event.text)) + "… Esc cancels")
        elif isinstance(event, image_events.GenerationStarted):
            self._set_status("Loading the image model…" if event.loading else "Drawing…")
        elif isinstance(event, image_events.ImageNotSaved | image_events.GenerationFailed):
            self.notify(event.message, severity="error", timeout=8)
        elif isinstance(event, image_events.GenerationEnded) and event.reason == "cancelled":
            self._set_status("Stopped: no image")
        elif isinstance(event, ci.ImageMessageAdded):
            self._image_added(event.message)
        elif isinstance(event, ImageDrawn):
            await self._drawing_ended(event)

    def _image_added(self: ChatScreen, stored: StoredMessage) -> None:
        view = self.imagine_view
        if view is not None and view.is_attached:
            view.set_data(
                id=stored.id, content=stored.content, state="complete", image_id=stored.image_id
            )
        self.imagine_view = None
        self._set_status("The image is in the conversation and the gallery")

    async def _drawing_ended(self: ChatScreen, drawn: ImageDrawn) -> None:
        self.imagine_phase = ""
        view = self.imagine_view
        self.imagine_view = None
        if drawn.message is not None:
            return
        if view is not None and view.is_attached:
            await view.remove()
        if drawn.error:
            self._set_status(escape(one_line(drawn.error)))
            self.notify(drawn.error, severity="error", timeout=8)
