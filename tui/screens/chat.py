"""The Chat panel: conversations with a local LLM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, OptionList, Static, TextArea
from textual.worker import Worker, WorkerState

from tui import models
from tui.config import Sampling
from tui.cpu import describe_wait
from tui.engines import protocol as p
from tui.safe_text import one_line
from tui.screens.chat_settings import ChatSettingsScreen, ConversationSettings
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.store import Conversation, StoreError
from tui.store import Message as StoredMessage
from tui.widgets.conversation_list import ConversationList
from tui.widgets.engine_status import EngineStatus
from tui.widgets.message_log import WINDOW, MessageData, MessageLog, MessageView, format_stats
from tui.widgets.panel_footer import PanelFooter
from tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from tui.app import TriptychApp

SAVE_INTERVAL_S = 0.5
"""A streamed reply is written to the database at least this often."""

DRAFT_SAVE_DELAY_S = 1.0
"""Unsent prompt text is written this long after the last keystroke (and on leaving)."""

NEW_TITLE = "New chat"


def _as_data(message: StoredMessage) -> MessageData:
    return MessageData(message.id, message.role, message.content, message.state, message.stats)


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line[:40] + ("…" if len(line) > 40 else "")


class ChatScreen(Screen[None]):
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
    ]

    generating: reactive[bool] = reactive(False)

    class EngineEvent(Message):
        """An event streamed from the chat engine process."""

        def __init__(self, event: Any) -> None:
            super().__init__()
            self.event = event

    def __init__(self) -> None:
        super().__init__()
        self.conversation: Conversation | None = None
        self.editing_id: int | None = None
        self.reply_id: int | None = None
        self.reply_text = ""
        self.reply_view: MessageView | None = None
        self._last_save = 0.0
        self._saved_len = 0
        """How much of reply_text the database holds (from its start)."""
        self._save_error = ""
        """Why the last save of the streaming reply failed; empty when it succeeded."""
        self.dictation: Any = None
        self._prompt: PromptInput | None = None
        self._draft_loaded = False
        """False until the open conversation's draft is in the prompt: nothing to save before."""
        self._draft_before_edit: str | None = None
        """While editing the last message (Ctrl+G): the draft that was in the prompt."""
        self._draft_timer: Timer | None = None

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

    # --- layout -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Input(placeholder="Search (Ctrl+F)", id="search")
                yield ConversationList(id="conversations")
            with Vertical(id="main"):
                yield Static("", id="chat-header")
                yield MessageLog(id="log")
                self._prompt = PromptInput(
                    id="prompt", placeholder="Message (Enter sends, Ctrl+J newline)"
                )
                yield self._prompt
                yield Static("", id="status")
        yield EngineStatus()
        yield PanelFooter(compact=True)

    async def on_mount(self) -> None:
        self.refresh_list()
        conversations = self.tapp.store.list_conversations()
        if conversations:
            await self.open_conversation(conversations[0].id)
            # The new conversation's draft waits for Ctrl+N; say so rather than hide it.
            try:
                new_draft = self.tapp.store.get_draft(None)
            except StoreError:
                new_draft = None
            if new_draft is not None:
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
        from tui.audio import Recorder, choose_input_device, list_input_devices

        settings = self.tapp.settings
        if not settings.speech_model:
            self.notify(
                "Set a speech model first: Listen (F4), whisper model field", severity="error"
            )
            return
        chosen = choose_input_device(list_input_devices(), settings.input_device)
        if chosen is None:
            self.notify("No microphone found", severity="error")
            return
        device = chosen.name
        from tui import locations

        path = locations.data_dir() / "dictation" / f"{int(time.time() * 1000)}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        recorder = Recorder(path, device=device, samplerate=16_000, channels=1)
        try:
            recorder.start()
        except Exception as error:  # noqa: BLE001 - PortAudio raises assorted errors
            self.notify(f"could not record from {device}: {error}", severity="error")
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
        settings = self.tapp.settings
        request = p.TranscribeRequest(
            model_path=settings.speech_model,
            audio_path=str(info.path),
            language=settings.speech_language,
            n_threads=settings.threads,
            use_gpu=settings.speech_use_gpu,
        )
        self._run_dictation(request)

    @work(thread=True, group="dictation", exit_on_error=False)
    def _run_dictation(self, request: p.TranscribeRequest) -> None:
        words: list[str] = []
        error = ""
        for event in self.tapp.speech_host.submit(request):
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
        if self.dictation is not None:
            self.dictation.stop()
        self.save_for_exit()

    def save_for_exit(self) -> None:
        """Keep the reply streamed so far and the unsent prompt text (safe to call twice)."""
        if self.reply_id is not None:
            self._save_reply(content=self.reply_text, state="stopped")
        self.save_draft()

    def emergency_save(self) -> None:
        """save_for_exit for another thread, while the event loop is stuck: store writes only."""
        store = self.tapp.store
        conversation = self.conversation
        try:
            if self.reply_id is not None:
                store.update_message(self.reply_id, content=self.reply_text, state="stopped")
            if self._draft_loaded:
                store.save_draft(conversation.id if conversation else None, self._draft_text())
        except StoreError:
            pass  # nowhere left to report it

    # --- drafts: unsent prompt text, one per conversation ------------------------

    def _draft_text(self) -> str:
        """What to keep as the draft: the prompt, or while editing, what it held before."""
        if self.editing_id is not None:
            return self._draft_before_edit or ""
        # The widget itself, not a query: on unmount the screen's children are gone.
        return self._prompt.text if self._prompt is not None else ""

    def save_draft(self) -> None:
        """Write the open conversation's draft now (an empty prompt removes it)."""
        if self._draft_timer is not None:
            self._draft_timer.stop()
            self._draft_timer = None
        if not self._draft_loaded:
            return
        conversation_id = self.conversation.id if self.conversation else None
        try:
            self.tapp.store.save_draft(conversation_id, self._draft_text())
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)

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
            draft = self.tapp.store.get_draft(conversation.id if conversation else None)
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)
            draft = None
        prompt = self.query_one(PromptInput)
        prompt.text = draft.text if draft else ""
        prompt.move_cursor(prompt.document.end)
        self._draft_loaded = True

    @on(TextArea.Changed, "#prompt")
    def _prompt_changed(self) -> None:
        if self._draft_timer is not None:
            self._draft_timer.stop()
        self._draft_timer = self.set_timer(DRAFT_SAVE_DELAY_S, self.save_draft)

    # --- conversations ------------------------------------------------------------

    def refresh_list(self) -> None:
        search = self.query_one("#search", Input).value
        try:
            conversations = self.tapp.store.list_conversations(search)
        except StoreError as error:
            self.notify(str(error), severity="error")
            return
        current = self.conversation.id if self.conversation else None
        self.query_one(ConversationList).show([(c.id, c.title) for c in conversations], current)

    async def open_conversation(self, conversation_id: int) -> None:
        if self.generating:
            self.notify("A reply is still being generated: Esc stops it", severity="warning")
            return
        conversation = self.tapp.store.get_conversation(conversation_id)
        if conversation is None:
            self.refresh_list()
            return
        self._swap_draft(conversation)
        store = self.tapp.store
        total = store.count_messages(conversation.id)
        messages = store.list_messages(conversation.id, limit=WINDOW)
        await self.query_one(MessageLog).show(
            [_as_data(m) for m in messages], hidden_before=total - len(messages)
        )
        self._update_header()
        self._set_status("")

    def _new_conversation(self) -> Conversation:
        settings = self.tapp.settings
        model = self.tapp.chat_model_override or ""
        return self.tapp.store.create_conversation(
            title=NEW_TITLE,
            system_prompt=settings.system_prompt,
            model=model,
            sampling=vars(settings.sampling).copy(),
        )

    async def action_new_conversation(self) -> None:
        if self.generating:
            self.notify("A reply is still being generated: Esc stops it", severity="warning")
            return
        self._swap_draft(None)
        await self.query_one(MessageLog).show([])
        self.refresh_list()
        self._update_header()
        self._set_status("New conversation: type a message")
        self.query_one(PromptInput).focus()

    def _model_path(self, conversation: Conversation | None) -> str:
        spec = (conversation.model if conversation else "") or (
            self.tapp.chat_model_override or self.tapp.settings.chat_model
        )
        return str(models.resolve_chat_model(spec))

    def _update_header(self) -> None:
        conversation = self.conversation
        title = conversation.title if conversation else NEW_TITLE
        model = self._model_path(conversation).rsplit("/", 1)[-1]
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
                return self.tapp.store.get_conversation(int(option.id))
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
            self.tapp.store.rename_conversation(conversation.id, title)
            if self.conversation and self.conversation.id == conversation.id:
                self.conversation.title = title
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
        count = self.tapp.store.count_messages(conversation.id)
        confirmed = await self.app.push_screen_wait(
            ConfirmScreen(f"Delete “{conversation.title}” and its {count} messages?")
        )
        if not confirmed:
            return
        self.tapp.store.delete_conversation(conversation.id)
        self.notify(f"Deleted “{conversation.title}”")
        if self.conversation and self.conversation.id == conversation.id:
            remaining = self.tapp.store.list_conversations()
            if remaining:
                await self.open_conversation(remaining[0].id)
            else:
                await self.action_new_conversation()
        self.refresh_list()

    @work(exclusive=True, group="dialog")
    async def action_settings(self) -> None:
        conversation = self.conversation
        if conversation is not None:
            current = ConversationSettings(
                conversation.system_prompt,
                conversation.model,
                Sampling.from_dict(conversation.sampling),
            )
        else:
            settings = self.tapp.settings
            current = ConversationSettings(
                settings.system_prompt,
                self.tapp.chat_model_override or "",
                Sampling.from_dict(vars(settings.sampling)),
            )
        result = await self.app.push_screen_wait(ChatSettingsScreen(current))
        if result is None:
            return
        if self.conversation is None:
            self.conversation = self._new_conversation()
            # The new conversation's draft now belongs to the row just created.
            self.tapp.store.save_draft(None, "")
            self.save_draft()
        self.tapp.store.update_conversation(
            self.conversation.id,
            system_prompt=result.system_prompt,
            model=result.model,
            sampling=vars(result.sampling),
        )
        self.conversation = self.tapp.store.get_conversation(self.conversation.id)
        self.refresh_list()
        self._update_header()
        self.notify("Settings saved for this conversation")

    # --- sending and generating -----------------------------------------------

    @on(PromptInput.Submitted)
    async def _prompt_submitted(self, event: PromptInput.Submitted) -> None:
        text = event.text.strip()
        if not text:
            return
        if self.generating:
            self.notify("Wait for the reply or stop it with Esc", severity="warning")
            return
        store = self.tapp.store
        edited = self.editing_id is not None
        try:
            if self.conversation is None:
                self.conversation = self._new_conversation()
                # What was the new conversation's draft is being sent now.
                store.save_draft(None, "")
            conversation = self.conversation
            log = self.query_one(MessageLog)
            if self.editing_id is not None:
                store.delete_messages_from(conversation.id, self.editing_id)
                await log.remove_from(self.editing_id)
                self.editing_id = None
            if conversation.title == NEW_TITLE:
                conversation.title = _title_from(text)
                store.rename_conversation(conversation.id, conversation.title)
            message = store.add_message(conversation.id, "user", text)
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)
            return
        if edited:
            # Sending an edit gives back the draft that Ctrl+G set aside.
            event.prompt.text = self._draft_before_edit or ""
            event.prompt.move_cursor(event.prompt.document.end)
            self._draft_before_edit = None
        else:
            event.prompt.clear()
        self.save_draft()
        await log.add(_as_data(message))
        self._update_header()
        await self._start_reply()

    async def _start_reply(self) -> None:
        conversation = self.conversation
        assert conversation is not None
        store = self.tapp.store
        request = self._build_request(conversation, store.list_messages(conversation.id))
        log = self.query_one(MessageLog)
        try:
            models.read_gguf_info(request.model_path)
        except models.ModelFileError as error:
            await self._show_error(str(error))
            return
        try:
            reply = store.add_message(conversation.id, "assistant", "", state="streaming")
        except StoreError as error:
            # Nothing could be generated into the database (full disk, ...): say so
            # instead of streaming a reply that would not be kept.
            await self._show_error(str(error))
            return
        self.reply_id = reply.id
        self.reply_text = ""
        self._saved_len = 0
        self._save_error = ""
        self._last_save = time.monotonic()
        self.reply_view = await log.add(_as_data(reply))
        self.refresh_list()
        self.generating = True
        self._set_status("Generating… Esc stops")
        self._run_request(request)

    def _build_request(
        self, conversation: Conversation, history: list[StoredMessage]
    ) -> p.ChatRequest:
        sampling = Sampling.from_dict(conversation.sampling)
        messages = []
        if conversation.system_prompt.strip():
            messages.append(p.ChatMessage("system", conversation.system_prompt))
        for message in history:
            if (
                message.role in ("user", "assistant")
                and message.content
                and message.state != "error"
            ):
                messages.append(p.ChatMessage(message.role, message.content))
        settings = self.tapp.settings
        return p.ChatRequest(
            model_path=self._model_path(conversation),
            messages=messages,
            n_ctx=sampling.n_ctx,
            n_threads=settings.threads,
            gpu_layers=settings.gpu_layers,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
        )

    @work(thread=True, exclusive=True, group="chat", exit_on_error=False)
    def _run_request(self, request: p.ChatRequest) -> None:
        for event in self.tapp.chat_host.submit(request):
            self.post_message(self.EngineEvent(event))

    def _save_reply(self, **fields: Any) -> None:
        """Write the streaming reply; on failure the reply on screen says what is unsaved."""
        if self.reply_id is None:
            return
        try:
            self.tapp.store.update_message(self.reply_id, **fields)
        except StoreError as error:
            if not self._save_error:  # one notification, not one per half second
                self.notify(str(error), severity="error", timeout=10)
            self._save_error = str(error)
        else:
            if "content" in fields:
                self._saved_len = len(fields["content"])
            self._save_error = ""
        if self.reply_view is not None and self.reply_view.data.unsaved != (
            notice := self._unsaved_notice()
        ):
            self.reply_view.set_data(unsaved=notice)

    def _unsaved_notice(self) -> str:
        """Which part of the reply on screen the database does not hold ('' if none)."""
        if not self._save_error:
            return ""
        missing = len(self.reply_text) - self._saved_len
        if missing <= 0:
            what = "that this reply ended (its text is saved; it will show as interrupted)"
        elif self._saved_len == 0:
            what = f"all of this reply ({missing} characters)"
        else:
            start = " ".join(self.reply_text[self._saved_len :].split()[:6])
            what = f"the last {missing} characters, from “{start}…” on"
        return f"Not saved: {what}. {self._save_error}. Ctrl+Y copies the reply."

    @on(EngineEvent)
    async def _engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, p.TokenGenerated):
            self.reply_text += event.text
            if self.reply_view is not None:
                self.reply_view.append(event.text)
            now = time.monotonic()
            if now - self._last_save >= SAVE_INTERVAL_S:
                self._last_save = now
                self._save_reply(content=self.reply_text)
        elif isinstance(event, p.WaitingForCpu):
            self._set_status(describe_wait(event.behind) + "… Esc cancels")
        elif isinstance(event, p.CpuGranted):
            self._set_status("Generating… Esc stops")
        elif isinstance(event, p.ModelLoaded):
            name = escape(one_line(event.model_path.rsplit("/", 1)[-1]))
            self._set_status(f"Loaded {name} in {event.load_s:.1f}s")
        elif isinstance(event, p.ContextTrimmed):
            self.notify(
                f"Left out the {event.dropped_messages} oldest messages to fit the context",
                severity="warning",
            )
        elif isinstance(event, p.GenerationFinished):
            await self._finish_reply(event)
        elif isinstance(event, p.EngineFailed):
            await self._fail_reply(event.message)

    async def _finish_reply(self, event: p.GenerationFinished) -> None:
        stats = vars(event.stats).copy() if event.stats.tokens or event.stats.elapsed_s else None
        state = "stopped" if event.reason == "cancelled" else "complete"
        self._save_reply(content=self.reply_text, state=state, stats=stats)
        if self.reply_view is not None:
            self.reply_view.set_data(content=self.reply_text, state=state, stats=stats)
        note = {"cancelled": "Stopped. ", "length": "Reached the token limit. "}.get(
            event.reason, ""
        )
        if self._save_error:
            note = "Not saved in full (see the reply). " + note
        self._set_status(note + format_stats(stats))
        self._end_reply()

    async def _fail_reply(self, error: str) -> None:
        if self.reply_id is not None:
            if self.reply_text:
                self._save_reply(content=self.reply_text, state="error")
                if self.reply_view is not None:
                    self.reply_view.set_data(content=self.reply_text, state="error")
            else:
                try:
                    self.tapp.store.delete_messages_from(self.conversation.id, self.reply_id)
                except StoreError:
                    pass
                await self.query_one(MessageLog).remove_from(self.reply_id)
        self._end_reply()
        await self._show_error(error)

    async def _show_error(self, text: str) -> None:
        conversation = self.conversation
        data = MessageData(0, "error", text)
        if conversation is not None:
            try:
                data = _as_data(self.tapp.store.add_message(conversation.id, "error", text))
            except StoreError:
                pass
        await self.query_one(MessageLog).add(data)
        self._set_status("")
        self.notify(text, severity="error", timeout=8)

    def _end_reply(self) -> None:
        self.generating = False
        self.reply_id = None
        self.reply_view = None
        self.refresh_list()

    @on(Worker.StateChanged)
    async def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "chat" and event.state == WorkerState.ERROR and self.generating:
            await self._fail_reply(f"the chat engine failed: {event.worker.error}")

    def action_stop(self) -> None:
        if self.generating:
            self.tapp.chat_host.cancel()
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
        store = self.tapp.store
        messages = store.list_messages(self.conversation.id)
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        if last_user is None:
            self.notify("Nothing to regenerate yet", severity="warning")
            return
        after = [m for m in messages if m.id > last_user.id]
        if after:
            store.delete_messages_from(self.conversation.id, after[0].id)
            await self.query_one(MessageLog).remove_from(after[0].id)
        await self._start_reply()

    def action_edit_last(self) -> None:
        if self.generating or self.conversation is None:
            return
        messages = self.tapp.store.list_messages(self.conversation.id)
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
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
        older = self.tapp.store.list_messages(
            self.conversation.id, limit=WINDOW, before_id=views[0].data.id
        )
        hidden = max(0, log.hidden_before - len(older))
        await log.prepend([_as_data(m) for m in older], hidden)
