"""The Chat panel: conversations with a local LLM."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, OptionList, Static, TextArea
from textual.worker import Worker, WorkerState

from tui.cpu import describe_wait
from tui.engines import protocol as p
from tui.safe_text import escape_markup as escape
from tui.safe_text import one_line
from tui.screens.chat_attach import AttachFromChat
from tui.screens.chat_imagine import ImagineFromChat
from tui.screens.chat_settings import ChatSettingsScreen, ConversationSettings
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.services import chat as cs
from tui.services.chat import NEW_TITLE, ChatError, ChatService
from tui.store import Conversation, StoreError
from tui.store import Message as StoredMessage
from tui.widgets.attachment_bar import AttachmentBar
from tui.widgets.conversation_list import ConversationList
from tui.widgets.engine_status import EngineStatus
from tui.widgets.message_log import WINDOW, MessageData, MessageLog, MessageView, format_stats
from tui.widgets.panel_footer import PanelFooter
from tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from tui.app import TriptychApp

DRAFT_SAVE_DELAY_S = 1.0
"""Unsent prompt text is written this long after the last keystroke (and on leaving)."""


def _as_data(message: StoredMessage) -> MessageData:
    return MessageData(
        message.id,
        message.role,
        message.content,
        message.state,
        message.stats,
        image_id=message.image_id,
    )


class ChatScreen(AttachFromChat, ImagineFromChat, Screen[None]):
    """Conversation list, message log and prompt."""

    CSS_PATH = "chat.tcss"
    AUTO_FOCUS = "#prompt"
    """Focused as soon as the screen is composed, so keys typed at once reach the prompt."""

    BINDINGS = [
        Binding(
            "escape",
            "stop",
            "Stop",
            id="chat.stop",
            priority=True,
            tooltip="Stop the reply being generated (or cancel an edit)",
        ),
        Binding(
            "ctrl+n", "new_conversation", "New", id="chat.new", tooltip="Start a new conversation"
        ),
        Binding(
            "ctrl+r",
            "regenerate",
            "Retry",
            id="chat.regenerate",
            show=False,
            tooltip="Generate the last reply again",
        ),
        Binding(
            "ctrl+g",
            "edit_last",
            "Edit last",
            id="chat.edit_last",
            show=False,
            tooltip="Edit your last message and send it again",
        ),
        Binding(
            "ctrl+o",
            "settings",
            "Settings",
            id="chat.settings",
            tooltip="System prompt, model and sampling of this conversation",
        ),
        Binding(
            "ctrl+t",
            "rename",
            "Rename",
            id="chat.rename",
            show=False,
            tooltip="Rename this conversation",
        ),
        Binding(
            "f8",
            "delete_conversation",
            "Delete chat",
            id="chat.delete",
            show=False,
            tooltip="Delete this conversation (asks first)",
        ),
        Binding(
            "ctrl+f",
            "search",
            "Search",
            id="chat.search",
            show=False,
            tooltip="Search conversations by title and text",
        ),
        Binding(
            "ctrl+l",
            "focus_list",
            "Conversations",
            id="chat.list",
            show=False,
            tooltip="Move to the conversation list",
        ),
        Binding(
            "ctrl+b",
            "toggle_sidebar",
            "Sidebar",
            id="chat.sidebar",
            show=False,
            tooltip="Show or hide the conversation list",
        ),
        Binding(
            "f9",
            "dictate",
            "Dictate",
            id="chat.dictate",
            show=False,
            tooltip="Push to talk: F9 records, F9 again inserts the words at the cursor",
        ),
        Binding(
            "ctrl+y",
            "copy_reply",
            "Copy reply",
            id="chat.copy",
            show=False,
            tooltip="Copy the selected message, or the last reply",
        ),
        Binding(
            "f7",
            "imagine",
            "Imagine from the chat",
            id="chat.imagine",
            show=False,
            priority=True,  # before the prompt's TextArea, which selects all on F7
            tooltip="Picture the last exchange (or the selected message) with the image model",
        ),
        Binding(
            "f6",
            "attach",
            "Attach file",
            id="chat.attach",
            show=False,
            priority=True,  # before the prompt's own F6 (select line)
            tooltip="Attach a text, code, Markdown, PDF or audio file, or a recording",
        ),
        Binding(
            "shift+f6",
            "detach_last",
            "Remove attachment",
            id="chat.detach",
            show=False,
            tooltip="Remove the last file attached to the next message",
        ),
    ]

    generating: reactive[bool] = reactive(False)

    class ServiceEvent(Message):
        """An event of the chat service (tui.services.chat), posted from any thread."""

        def __init__(self, event: Any) -> None:
            super().__init__()
            self.event = event

    def __init__(self) -> None:
        super().__init__()
        self._service: ChatService | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.editing_id: int | None = None
        self.reply_view: MessageView | None = None
        self.dictation: Any = None
        self._prompt: PromptInput | None = None
        self._draft_loaded = False
        """False until the open conversation's draft is in the prompt: nothing to save before."""
        self._draft_before_edit: str | None = None
        """While editing the last message (Ctrl+G): the draft that was in the prompt."""
        self._draft_timer: Timer | None = None
        self._draft_lock = threading.Lock()
        """Serialises draft writes, so an older text never lands after a newer one."""
        self._draft_version = 0
        """Counts draft saves; a queued background write skips when it is not the newest."""
        self._leave_exit_savers: Callable[[], None] | None = None
        """Leaves the app's exit savers (joined while mounted)."""

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

    @property
    def service(self) -> ChatService:
        """The Chat panel's state and logic; this screen renders it."""
        if self._service is None:
            app = self.tapp
            self._service = ChatService(
                app.store,
                app.chat_host,
                lambda: app.settings,
                lambda: app.chat_model_override,
                speech_host=app.speech_host,
            )
            # The status line of every panel says when the open conversation is remote.
            app.chat_service = self._service
        return self._service

    @property
    def conversation(self) -> Conversation | None:
        return self.service.conversation

    @conversation.setter
    def conversation(self, conversation: Conversation | None) -> None:
        current = self.service.conversation
        if (current.id if current else None) != (conversation.id if conversation else None):
            self.service.attachments.clear()  # they belong to the next message of that one
        self.service.conversation = conversation

    @property
    def reply_text(self) -> str:
        return self.service.reply_text

    @property
    def reply_id(self) -> int | None:
        return self.service.reply_id

    @property
    def _saved_len(self) -> int:
        return self.service.saved_len

    @property
    def _save_error(self) -> str:
        return self.service.save_error

    # --- layout -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Input(placeholder="Search (Ctrl+F)", id="search")
                yield ConversationList(id="conversations")
            with Vertical(id="main"):
                yield Static("", id="chat-header")
                yield MessageLog(id="log")
                yield AttachmentBar(id="attachments")
                self._prompt = PromptInput(
                    id="prompt", placeholder="Message (Enter sends, Ctrl+J newline)"
                )
                yield self._prompt
                yield Static("", id="status")
        yield EngineStatus()
        yield PanelFooter(compact=True)

    async def on_mount(self) -> None:
        # A signal ending the app saves the reply and the draft (tui.signals.ExitSavers).
        self._leave_exit_savers = self.tapp.exit_savers.join(
            self.save_for_exit, self.emergency_save
        )
        self._unsubscribe = self.service.subscribe(
            lambda event: self.post_message(self.ServiceEvent(event))
        )
        self.join_imagine()
        self.join_attachments()
        self.refresh_list()
        try:
            latest = self.service.most_recent()
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)
            latest = None
        if latest is not None:
            await self.open_conversation(latest.id)
            # The new conversation's draft waits for Ctrl+N; say so rather than hide it.
            if self.service.has_new_draft():
                self._set_status("Ctrl+N: the new conversation you were typing is kept")
        else:
            self._swap_draft(None)
            self._update_header()
        self.query_one(PromptInput).focus()

    async def open_with_prompt(self, conversation_id: int, text: str) -> None:
        """Open a conversation and put text in the prompt, ready to edit and send."""
        self.refresh_list()
        await self.open_conversation(conversation_id)
        prompt = self.query_one(PromptInput)
        prompt.text = text
        prompt.move_cursor(prompt.document.end)
        prompt.focus()

    # --- dictation -----------------------------------------------------------------

    def action_dictate(self) -> None:
        if self.dictation is not None:
            self._finish_dictation()
            return
        starting = any(w.group == "dictation-start" and w.node is self for w in self.workers)
        if not starting:
            self._start_dictation()

    @work(thread=True, group="dictation-start", exit_on_error=False)
    def _start_dictation(self) -> None:
        """The device scan and the start of the recording block: off the event loop."""
        from tui.services.listen import ListenError, start_dictation

        try:
            recorder = start_dictation(self.tapp.settings)
        except ListenError as error:
            self.app.call_from_thread(self.notify, str(error), severity="error")
            return
        self.app.call_from_thread(self._dictation_started, recorder)

    def _dictation_started(self, recorder: Any) -> None:
        if not self.is_attached:
            recorder.stop()
            return
        self.dictation = recorder
        self._set_status("Dictating… F9 stops and inserts the text")

    def _finish_dictation(self) -> None:
        recorder = self.dictation
        self.dictation = None
        if recorder is None:
            return
        info = recorder.stop()
        self._set_status("Transcribing your dictation…")
        from tui.services.listen import transcribe_request

        self._run_dictation(transcribe_request(self.tapp.settings, audio_path=info.path))

    @work(thread=True, group="dictation", exit_on_error=False)
    def _run_dictation(self, request: p.TranscribeRequest) -> None:
        from tui.backends.select import speech_backend_for
        from tui.backends.servers import BackendError

        words: list[str] = []
        error = ""
        try:
            backend = speech_backend_for(
                request.model_path, self.tapp.settings, self.tapp.speech_host
            )
        except BackendError as failure:
            backend, error = None, str(failure)
        for event in backend.submit(request) if backend is not None else ():
            if isinstance(event, p.SegmentTranscribed):
                words.append(event.text.strip())
            elif isinstance(event, p.WaitingForCpu):
                self.app.call_from_thread(self._set_status, describe_wait(event.behind) + "…")
            elif isinstance(event, p.CpuGranted):
                self.app.call_from_thread(self._set_status, "Transcribing your dictation…")
            elif isinstance(event, p.EngineFailed):
                error = event.message
        self.app.call_from_thread(self._insert_dictation, " ".join(words), error)
        Path(request.audio_path).unlink(missing_ok=True)

    def _insert_dictation(self, text: str, error: str) -> None:
        if error:
            self.notify(error, severity="error")
            self._set_status("")
            return
        if not text:
            self._set_status("No speech heard")
            return
        prompt = self.query_one(PromptInput)
        before = prompt.document.get_text_range((0, 0), prompt.cursor_location)
        if before and not before[-1].isspace():
            text = " " + text
        prompt.insert(text)
        prompt.focus()
        self._set_status("Dictation inserted: edit it, then Enter sends")

    def on_unmount(self) -> None:
        if self._leave_exit_savers is not None:
            self._leave_exit_savers()
        if self.dictation is not None:
            self.dictation.stop()
        self.save_for_exit()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.leave_imagine()

    def save_for_exit(self) -> None:
        """Keep the reply streamed so far and the unsent prompt text (safe to call twice)."""
        self.service.save_for_exit()
        self.save_draft()

    def emergency_save(self) -> None:
        """save_for_exit for another thread, while the event loop is stuck: store writes only."""
        self.service.emergency_save(self._draft_text() if self._draft_loaded else None)

    # --- drafts: unsent prompt text, one per conversation ------------------------

    def _draft_text(self) -> str:
        """What to keep as the draft: the prompt, or while editing, what it held before."""
        if self.editing_id is not None:
            return self._draft_before_edit or ""
        # The widget itself, not a query: on unmount the screen's children are gone.
        return self._prompt.text if self._prompt is not None else ""

    def save_draft(self) -> None:
        """Write the open conversation's draft now (an empty prompt removes it).

        Blocks on the store: used where the order matters (switching conversations,
        quitting). Typing saves through :meth:`_save_draft_in_background`.
        """
        if self._draft_timer is not None:
            self._draft_timer.stop()
            self._draft_timer = None
        if not self._draft_loaded:
            return
        with self._draft_lock:
            # Newer than any write still queued: those skip when their turn comes.
            self._draft_version += 1
            try:
                self.service.save_draft(self._draft_text())
            except StoreError as error:
                self.notify(str(error), severity="error", timeout=10)

    def _save_draft_in_background(self) -> None:
        """The typing pause's save: the store write runs in a thread, never on the loop."""
        self._draft_timer = None
        if not self._draft_loaded:
            return
        conversation_id = self.service.conversation.id if self.service.conversation else None
        text = self._draft_text()
        self._draft_version += 1
        version = self._draft_version

        def write() -> None:
            with self._draft_lock:
                if version != self._draft_version:
                    return  # a later save (typed or synchronous) already wrote a newer text
                try:
                    self.service.store.save_draft(conversation_id, text)
                except StoreError as error:
                    self.post_message(self.DraftNotSaved(str(error)))

        self.run_worker(write, thread=True, group="draft", exit_on_error=False)

    class DraftNotSaved(Message):
        """A background draft save failed (the store's one-line reason)."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    @on(DraftNotSaved)
    def _draft_not_saved(self, message: DraftNotSaved) -> None:
        self.notify(message.error, severity="error", timeout=10)

    def _swap_draft(self, conversation: Conversation | None) -> None:
        """Keep the open conversation's draft and show the draft of the one opening.

        Synchronous from the save to the new text: a pending draft timer always
        finds the conversation and the prompt text that belong together.
        """
        self.save_draft()
        self.conversation = conversation
        self.editing_id = None
        self._draft_before_edit = None
        try:
            draft = self.service.draft(conversation.id if conversation else None)
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)
            draft = ""
        prompt = self.query_one(PromptInput)
        prompt.text = draft
        prompt.move_cursor(prompt.document.end)
        self._draft_loaded = True

    @on(TextArea.Changed, "#prompt")
    def _prompt_changed(self) -> None:
        if self._draft_timer is not None:
            self._draft_timer.stop()
        self._draft_timer = self.set_timer(DRAFT_SAVE_DELAY_S, self._save_draft_in_background)

    # --- conversations ------------------------------------------------------------

    def refresh_list(self) -> None:
        """List the conversations again: as many pages as were loaded, the first at least."""
        listing = self.query_one(ConversationList)
        search = self.query_one("#search", Input).value
        limit = max(cs.PAGE_SIZE, listing.option_count if search == listing.search else 0)
        try:
            conversations = self.service.page(search, limit=limit)
        except StoreError as error:
            self.notify(str(error), severity="error")
            return
        current = self.conversation.id if self.conversation else None
        listing.show(conversations, current, search=search, more=len(conversations) == limit)

    @on(ConversationList.MoreWanted)
    def _load_more(self) -> None:
        listing = self.query_one(ConversationList)
        try:
            more = self.service.page(listing.search, after=listing.last)
        except StoreError as error:
            self.notify(str(error), severity="error")
            return
        listing.extend(more, more=len(more) == cs.PAGE_SIZE)

    async def open_conversation(self, conversation_id: int) -> None:
        if self.generating:
            self.notify("A reply is still being generated: Esc stops it", severity="warning")
            return
        conversation = self.service.get(conversation_id)
        if conversation is None:
            self.refresh_list()
            return
        self._swap_draft(conversation)
        messages, hidden = self.service.window(WINDOW)
        await self.query_one(MessageLog).show([_as_data(m) for m in messages], hidden_before=hidden)
        self._update_header()
        self._set_status("")

    async def action_new_conversation(self) -> None:
        if self.generating:
            self.notify("A reply is still being generated: Esc stops it", severity="warning")
            return
        self._swap_draft(None)
        self.service.attachments.clear()
        await self.query_one(MessageLog).show([])
        self.refresh_list()
        self._update_header()
        self._set_status("New conversation: type a message")
        self.query_one(PromptInput).focus()

    def _update_header(self) -> None:
        conversation = self.conversation
        title = conversation.title if conversation else NEW_TITLE
        model = self.service.model_path(conversation)
        if self.service.remote_server(conversation) is None:
            model = model.rsplit("/", 1)[-1]
        self.query_one("#chat-header", Static).update(
            f"[b]{escape(one_line(title))}[/b]  [dim]{escape(one_line(model))}[/dim]"
        )

    def _set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    @on(OptionList.OptionSelected, "#conversations")
    async def _conversation_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_id is not None:
            await self.open_conversation(int(event.option_id))
            self.query_one(PromptInput).focus()

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self.refresh_list()

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        conversations = self.query_one(ConversationList)
        conversations.focus()
        if conversations.option_count:
            conversations.highlighted = 0

    def action_search(self) -> None:
        self._show_sidebar(True)
        self.query_one("#search", Input).focus()

    def action_focus_list(self) -> None:
        self._show_sidebar(True)
        self.query_one(ConversationList).focus()

    def _show_sidebar(self, visible: bool) -> None:
        self.query_one("#sidebar").display = visible

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#sidebar")
        sidebar.display = not sidebar.display
        if not sidebar.display:
            self.query_one(PromptInput).focus()

    def _target_conversation(self) -> Conversation | None:
        """The conversation highlighted in the list when it has focus, else the open one."""
        listing = self.query_one(ConversationList)
        if listing.has_focus and listing.highlighted is not None:
            option = listing.get_option_at_index(listing.highlighted)
            if option.id is not None:
                return self.service.get(int(option.id))
        return self.conversation

    @work(exclusive=True, group="dialog")
    async def action_rename(self) -> None:
        conversation = self._target_conversation()
        if conversation is None:
            self.notify("No conversation to rename", severity="warning")
            return
        title = await self.app.push_screen_wait(
            TextPromptScreen("Rename conversation", conversation.title)
        )
        if title:
            self.service.rename(conversation.id, title)
            self._update_header()
            self.refresh_list()

    @work(exclusive=True, group="dialog")
    async def action_delete_conversation(self) -> None:
        conversation = self._target_conversation()
        if conversation is None:
            self.notify("No conversation to delete", severity="warning")
            return
        if self.generating and self.conversation and conversation.id == self.conversation.id:
            self.notify("Stop the reply (Esc) before deleting", severity="warning")
            return
        count = self.service.count_messages(conversation.id)
        confirmed = await self.app.push_screen_wait(
            ConfirmScreen(f"Delete “{conversation.title}” and its {count} messages?")
        )
        if not confirmed:
            return
        was_open = self.conversation is not None and self.conversation.id == conversation.id
        if was_open:
            # The open conversation's draft goes with it.
            self._draft_loaded = False
        self.service.delete(conversation.id)
        self.notify(f"Deleted “{conversation.title}”")
        if was_open:
            latest = self.service.most_recent()
            if latest is not None:
                await self.open_conversation(latest.id)
            else:
                await self.action_new_conversation()
        self.refresh_list()

    @work(exclusive=True, group="dialog")
    async def action_settings(self) -> None:
        current = ConversationSettings(*self.service.conversation_settings())
        result = await self.app.push_screen_wait(ChatSettingsScreen(current))
        if result is None:
            return
        self.service.save_settings(
            result.system_prompt, result.model, result.sampling, draft=self._draft_text()
        )
        self.refresh_list()
        self._update_header()
        self.notify("Settings saved for this conversation")

    # --- sending and generating -----------------------------------------------

    @on(PromptInput.Submitted)
    async def _prompt_submitted(self, event: PromptInput.Submitted) -> None:
        text = event.text.strip()
        # Attachments alone are a message too ("here is the file").
        if not text and not self.service.attachments.pending:
            return
        if self.generating:
            self.notify("Wait for the reply or stop it with Esc", severity="warning")
            return
        edited = self.editing_id
        try:
            message = self.service.add_user_message(text, replacing_id=edited)
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)
            return
        log = self.query_one(MessageLog)
        if edited is not None:
            await log.remove_from(edited)
            self.editing_id = None
            # Sending an edit gives back the draft that Ctrl+G set aside.
            event.prompt.text = self._draft_before_edit or ""
            event.prompt.move_cursor(event.prompt.document.end)
            self._draft_before_edit = None
        else:
            event.prompt.clear()
        # The engine gets the request first; storing the draft and drawing both
        # messages (about 0.1 s) happen while it reads the prompt. Its events wait
        # in this screen's queue until this handler has mounted the reply.
        started = self._begin_reply()
        await log.add(_as_data(message))
        self.save_draft()
        self._update_header()
        await self._show_reply(*started)

    async def _start_reply(self) -> None:
        await self._show_reply(*self._begin_reply())

    def _begin_reply(self) -> tuple[StoredMessage | None, str]:
        """Store the empty reply and start the request: (the reply, '') or (None, why not)."""
        try:
            reply, request = self.service.start_reply()
        except ChatError as error:
            return None, str(error)
        self.generating = True
        self._run_request(request)
        return reply, ""

    async def _show_reply(self, reply: StoredMessage | None, error: str) -> None:
        if reply is None:
            # Nothing could be generated into the database (bad model file, full
            # disk, ...): say so instead of streaming a reply that would not be kept.
            await self._show_error(error, self.service.record_error(error))
            return
        self.reply_view = await self.query_one(MessageLog).add(_as_data(reply))
        self.refresh_list()
        self._set_status("Generating… Esc stops")

    @work(thread=True, exclusive=True, group="chat", exit_on_error=False)
    def _run_request(self, request: p.ChatRequest) -> None:
        self.service.stream(request)

    @on(ServiceEvent)
    async def _service_event(self, message: ServiceEvent) -> None:
        event = message.event
        if self.attachment_event(event):
            return
        if isinstance(event, cs.TokenReceived):
            if self.reply_view is not None:
                self.reply_view.append(event.text)
        elif isinstance(event, cs.UnsavedChanged):
            if self.reply_view is not None:
                self.reply_view.set_data(unsaved=event.notice)
        elif isinstance(event, cs.ReplySaveFailed):
            self.notify(event.error, severity="error", timeout=10)
        elif isinstance(event, cs.WaitingForCpu):
            self._set_status(describe_wait(list(event.behind)) + "… Esc cancels")
        elif isinstance(event, cs.CpuGranted):
            self._set_status("Generating… Esc stops")
        elif isinstance(event, cs.ModelLoaded):
            name = escape(one_line(event.name))
            gpu = ""
            if event.gpu_layers > 0:
                of = f"/{event.gpu_layers_total}" if event.gpu_layers_total else ""
                gpu = f", {event.gpu_layers}{of} layers on the GPU"
            self._set_status(f"Loaded {name} in {event.load_s:.1f}s{gpu}")
            if event.note:
                self.notify(one_line(event.note), severity="warning", timeout=10, markup=False)
        elif isinstance(event, cs.ContextTrimmed):
            self.notify(
                f"Left out the {event.dropped_messages} oldest messages to fit the context",
                severity="warning",
            )
        elif isinstance(event, cs.ReplyFinished):
            self._finish_reply(event)
        elif isinstance(event, cs.ReplyFailed):
            await self._fail_reply(event)

    def _finish_reply(self, event: cs.ReplyFinished) -> None:
        if self.reply_view is not None:
            self.reply_view.set_data(
                content=event.content, state=event.state, stats=event.stats, unsaved=event.unsaved
            )
        note = {"cancelled": "Stopped. ", "length": "Reached the token limit. "}.get(
            event.reason, ""
        )
        if event.unsaved:
            note = "Not saved in full (see the reply). " + note
        self._set_status(note + format_stats(event.stats))
        self._end_reply()

    async def _fail_reply(self, event: cs.ReplyFailed) -> None:
        if event.reply_id is not None:
            if event.content:
                if self.reply_view is not None:
                    self.reply_view.set_data(content=event.content, state="error")
            else:
                await self.query_one(MessageLog).remove_from(event.reply_id)
        self._end_reply()
        await self._show_error(event.error, event.error_message)

    async def _show_error(self, text: str, stored: StoredMessage | None) -> None:
        data = _as_data(stored) if stored is not None else MessageData(0, "error", text)
        await self.query_one(MessageLog).add(data)
        self._set_status("")
        self.notify(text, severity="error", timeout=8)

    def _end_reply(self) -> None:
        self.generating = False
        self.reply_view = None
        self.refresh_list()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised: reset what it was doing and say so in one line."""
        if event.state != WorkerState.ERROR:
            return
        error = one_line(str(event.worker.error))
        if event.worker.group == "chat" and self.generating:
            self._end_reply()
            self._set_status("")
            self.notify(f"the chat engine failed: {error}", severity="error", timeout=8)
        elif event.worker.group in ("dictation", "dictation-start"):
            self._set_status("")
            self.notify(f"Dictation failed: {error}", severity="error", timeout=8)

    def action_stop(self) -> None:
        if self.stop_imagining():
            return
        if self.generating:
            self.service.stop()
            self._set_status("Stopping…")
            return
        if self.editing_id is not None:
            self.editing_id = None
            prompt = self.query_one(PromptInput)
            prompt.text = self._draft_before_edit or ""
            prompt.move_cursor(prompt.document.end)
            self._draft_before_edit = None
            self._set_status("Edit cancelled")
            return
        search = self.query_one("#search", Input)
        if search.has_focus and search.value:
            search.value = ""
            return
        self.query_one(PromptInput).focus()

    async def action_regenerate(self) -> None:
        if self.generating or self.conversation is None:
            return
        try:
            removed = self.service.drop_after_last_user()
        except ChatError as error:
            self.notify(str(error), severity="warning")
            return
        if removed is not None:
            await self.query_one(MessageLog).remove_from(removed)
        await self._start_reply()

    def action_edit_last(self) -> None:
        if self.generating or self.conversation is None:
            return
        last_user = self.service.last_user_message()
        if last_user is None:
            self.notify("No message of yours to edit", severity="warning")
            return
        prompt = self.query_one(PromptInput)
        if self.editing_id is None:
            # Set the draft aside while the prompt holds the message being edited.
            self._draft_before_edit = prompt.text
        prompt.text = last_user.content
        prompt.move_cursor(prompt.document.end)
        prompt.focus()
        self.editing_id = last_user.id
        self._set_status("Editing your last message: Enter resends, Esc cancels")

    def action_copy_reply(self) -> None:
        self.query_one(MessageLog).action_copy_message()

    @on(MessageLog.EarlierRequested)
    async def _load_earlier(self) -> None:
        log = self.query_one(MessageLog)
        views = log.views
        if self.conversation is None or not views:
            return
        older = self.service.earlier(views[0].data.id, WINDOW)
        hidden = max(0, log.hidden_before - len(older))
        await log.prepend([_as_data(m) for m in older], hidden)

    async def show_message(self, message_id: int) -> bool:
        """Select a message of the open conversation (loading earlier ones up to it)."""
        log = self.query_one(MessageLog)
        while log.view_for(message_id) is None and log.hidden_before:
            shown = len(log.views)
            await self._load_earlier()
            if len(log.views) == shown:
                break
        log.focus()
        return log.select_message(message_id)
