"""The Chat panel's domain: conversations, drafts, the chat request and a streaming reply.

:func:`chat_request` is the one place a :class:`~tui.engines.protocol.ChatRequest`
is built (the Chat screen and ``triptych chat`` both use it), and
:func:`resolve_sampling` the one place sampling overrides are applied and checked.
:class:`ChatService` holds the open conversation and the reply being generated;
:meth:`ChatService.stream` runs a request and writes the reply to the database as it
streams, from the thread that calls it, and announces each step as an event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from tui.attachments import with_attachments
from tui.backends.chat import chat_backend_for
from tui.backends.servers import BackendError, parse_remote_spec
from tui.config import Settings
from tui.default_model import resolve_chat_model
from tui.engines import protocol as p
from tui.engines.protocol import Sampling
from tui.formats import ModelFileError
from tui.formats.gguf import read_gguf_info
from tui.services.attach import AttachmentTray
from tui.services.base import Service
from tui.services.chat_events import ModelLoaded as ModelLoaded  # the screens use cs.ModelLoaded
from tui.services.chat_events import model_loaded
from tui.store import Conversation, Store, StoreError
from tui.store import Message as StoredMessage

SAVE_INTERVAL_S = 0.5
"""A streamed reply is written to the database at least this often."""

PAGE_SIZE = 50
"""Conversations listed per page (the first page at start, more as the list scrolls)."""

NEW_TITLE = "New chat"


class ChatError(Exception):
    """Why a reply could not start, in one line fit to show to the user."""


class _Host(Protocol):
    def submit(self, request: Any) -> Iterable[Any]: ...
    def cancel(self) -> None: ...


# --- events ------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenReceived:
    text: str


@dataclass(frozen=True)
class WaitingForCpu:
    """The reply waits for the engines named in ``behind`` to free the cores."""

    behind: tuple[str, ...]


@dataclass(frozen=True)
class CpuGranted:
    """A reply that waited for the cores starts now."""


@dataclass(frozen=True)
class ContextTrimmed:
    dropped_messages: int


@dataclass(frozen=True)
class ReplySaveFailed:
    """The first failed write of the streaming reply since the last one that worked."""

    error: str


@dataclass(frozen=True)
class UnsavedChanged:
    """Which part of the reply the database does not hold changed ('' when it holds all)."""

    notice: str


@dataclass(frozen=True)
class ReplyFinished:
    """The reply ended: reason 'stop' (natural end), 'length' or 'cancelled' (stopped)."""

    reply_id: int
    content: str
    state: str
    """'complete' or 'stopped', as stored."""
    stats: dict[str, Any] | None
    reason: str
    unsaved: str
    """What the database does not hold of this reply ('' when it holds all of it)."""


@dataclass(frozen=True)
class ReplyFailed:
    """The reply could not be generated (the engine failed or crashed)."""

    reply_id: int | None
    content: str
    """What was generated before the failure; kept with state 'error' when not empty."""
    error: str
    error_message: StoredMessage | None
    """The error as stored in the conversation (None when it could not be stored)."""


# --- the one request builder ---------------------------------------------------------


def title_from(text: str) -> str:
    """A conversation title from its first message: one line, at most 40 characters."""
    line = " ".join(text.split())
    return line[:40] + ("…" if len(line) > 40 else "")


def resolve_sampling(base: Sampling, overrides: dict[str, Any] | None = None) -> Sampling:
    """``base`` with the non-None ``overrides`` applied; ValueError names a bad value."""
    known = {f.name for f in fields(Sampling)}
    changes = {k: v for k, v in (overrides or {}).items() if v is not None and k in known}
    sampling = replace(base.sampling(), **changes)
    sampling.validate()
    return sampling


def chat_request(
    *,
    model_path: str | Path,
    system_prompt: str,
    history: Iterable[StoredMessage | p.ChatMessage],
    sampling: Sampling,
    settings: Settings,
    threads: int | None = None,
    attachments: Mapping[int, Sequence[Any]] | None = None,
) -> p.ChatRequest:
    """The request for the next assistant reply to ``history``.

    Messages with an error (stored errors, replies that failed) and empty ones
    are left out; ``threads`` overrides the settings' thread count.
    ``attachments`` (by message id) follow their user message's text as
    ``<file name="...">`` blocks (tui.attachments.with_attachments).
    """
    messages = []
    if system_prompt.strip():
        messages.append(p.ChatMessage("system", system_prompt))
    for message in history:
        if (
            message.role in ("user", "assistant")
            and message.content
            and getattr(message, "state", "complete") != "error"
        ):
            content = message.content
            if attachments and message.role == "user":
                content = with_attachments(content, attachments.get(getattr(message, "id", 0), ()))
            messages.append(p.ChatMessage(message.role, content))
    return p.ChatRequest(
        model_path=str(model_path),
        messages=messages,
        n_threads=settings.threads if threads is None else threads,
        gpu_layers=settings.gpu_layers,
        **asdict(sampling.sampling()),
    )


# --- the service ---------------------------------------------------------------------


class ChatService(Service):
    """The open conversation and the reply being generated.

    ``settings`` and ``model_override`` are read when needed, so a settings change
    applies to the next conversation and request. Store methods raise StoreError
    (one line) and may block up to the store's busy timeout.
    """

    def __init__(
        self,
        store: Store,
        host: _Host,
        settings: Callable[[], Settings],
        model_override: Callable[[], str | None] = lambda: None,
        speech_host: Any = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.host = host
        self._settings = settings
        self._model_override = model_override
        self.attachments = AttachmentTray(self, speech_host)
        """Files waiting to be sent with the next message (``speech_host`` transcribes audio)."""
        self.conversation: Conversation | None = None
        """The open conversation; None until the first message of a new one."""
        self.generating = False
        self.reply_id: int | None = None
        self.reply_text = ""
        """The reply streamed so far (kept after it ends, until the next one)."""
        self.saved_len = 0
        """How much of reply_text the database holds (from its start)."""
        self.save_error = ""
        """Why the last write of the streaming reply failed; empty when it worked."""
        self._notice = ""
        self._last_save = 0.0
        self._save_lock = threading.RLock()
        """Serialises reply writes of the streaming thread and of the exit saves."""
        self._backend: Any = None
        """What answers the reply being started or generated (None between replies)."""

    # --- conversations ---------------------------------------------------------------

    def page(
        self, search: str = "", after: Conversation | None = None, limit: int = PAGE_SIZE
    ) -> list[Conversation]:
        """One page of conversations, most recent first, from where ``after`` ended."""
        return self.store.list_conversations(search, limit=limit, after=after)

    def most_recent(self) -> Conversation | None:
        found = self.store.list_conversations(limit=1)
        return found[0] if found else None

    def get(self, conversation_id: int) -> Conversation | None:
        return self.store.get_conversation(conversation_id)

    def open(self, conversation_id: int) -> Conversation | None:
        """Make the conversation the open one (None when it no longer exists)."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation is not None:
            if self.conversation is None or self.conversation.id != conversation.id:
                self.attachments.clear()
            self.conversation = conversation
        return conversation

    def window(self, limit: int) -> tuple[list[StoredMessage], int]:
        """The newest ``limit`` messages of the open conversation and how many precede them."""
        if self.conversation is None:
            return [], 0
        total = self.store.count_messages(self.conversation.id)
        messages = self.store.list_messages(self.conversation.id, limit=limit)
        return messages, total - len(messages)

    def earlier(self, before_id: int, limit: int) -> list[StoredMessage]:
        if self.conversation is None:
            return []
        return self.store.list_messages(self.conversation.id, limit=limit, before_id=before_id)

    def create(self) -> Conversation:
        """A new stored conversation with the settings' defaults; it becomes the open one."""
        settings = self._settings()
        self.conversation = self.store.create_conversation(
            title=NEW_TITLE,
            system_prompt=settings.system_prompt,
            model=self._model_override() or "",
            sampling=asdict(settings.sampling.sampling()),
        )
        return self.conversation

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename_conversation(conversation_id, title)
        if self.conversation and self.conversation.id == conversation_id:
            self.conversation.title = title

    def count_messages(self, conversation_id: int) -> int:
        return self.store.count_messages(conversation_id)

    def delete(self, conversation_id: int) -> bool:
        """Delete a conversation; True when it was the open one (now none is open)."""
        self.store.delete_conversation(conversation_id)
        if self.conversation and self.conversation.id == conversation_id:
            self.conversation = None
            return True
        return False

    def conversation_settings(self) -> tuple[str, str, Sampling]:
        """System prompt, model ('' for the default) and sampling of the open conversation.

        Without one: those a new conversation would get.
        """
        conversation = self.conversation
        if conversation is not None:
            sampling = Sampling.from_dict(conversation.sampling)
            return conversation.system_prompt, conversation.model, sampling
        settings = self._settings()
        sampling = settings.sampling.sampling()
        return settings.system_prompt, self._model_override() or "", sampling

    def save_settings(self, system_prompt: str, model: str, sampling: Sampling, draft: str) -> None:
        """Store the open conversation's settings, creating it (with ``draft``) if needed."""
        if self.conversation is None:
            self.create()
            # The new conversation's draft now belongs to the row just created.
            self.store.save_draft(None, "")
            self.save_draft(draft)
        assert self.conversation is not None
        self.store.update_conversation(
            self.conversation.id,
            system_prompt=system_prompt,
            model=model,
            sampling=asdict(sampling),
        )
        self.conversation = self.store.get_conversation(self.conversation.id)

    def model_spec(self, conversation: Conversation | None = None) -> str:
        """The model spec a conversation (default: the open one) replies with, as set."""
        conversation = conversation or self.conversation
        return (conversation.model if conversation else "") or (
            self._model_override() or self._settings().chat_model
        )

    def model_path(self, conversation: Conversation | None = None) -> str:
        """The model file a conversation (default: the open one) replies with.

        A remote spec (``server:NAME[/MODEL]``, see tui/backends) is returned as it is.
        """
        spec = self.model_spec(conversation)
        if parse_remote_spec(spec) is not None:
            return spec
        return str(resolve_chat_model(spec))

    def remote_server(self, conversation: Conversation | None = None) -> str | None:
        """The server a conversation (default: the open one) replies from; None when local."""
        parsed = parse_remote_spec(self.model_spec(conversation))
        return parsed[0] if parsed else None

    def backend_for(self, model_spec: str) -> Any:
        """The local engine host or a remote backend for ``model_spec``; ChatError if unusable."""
        try:
            return chat_backend_for(model_spec, self._settings(), self.host)
        except BackendError as error:
            raise ChatError(str(error)) from error

    # --- drafts: unsent prompt text, one per conversation ----------------------------

    def draft(self, conversation_id: int | None) -> str:
        """The unsent text of a conversation (None: the new one), '' when there is none."""
        found = self.store.get_draft(conversation_id)
        return found.text if found else ""

    def has_new_draft(self) -> bool:
        """Whether a new conversation's unsent text waits for Ctrl+N."""
        try:
            return self.store.get_draft(None) is not None
        except StoreError:
            return False

    def save_draft(self, text: str) -> None:
        """Keep ``text`` as the open conversation's draft (empty removes it)."""
        self.store.save_draft(self.conversation.id if self.conversation else None, text)

    # --- sending -----------------------------------------------------------------------

    def add_user_message(self, text: str, replacing_id: int | None = None) -> StoredMessage:
        """Store a message of the user, first removing ``replacing_id`` and all after it.

        Creates the conversation on its first message and titles it after that message.
        """
        store = self.store
        if self.conversation is None:
            self.create()
            # What was the new conversation's draft is being sent now.
            store.save_draft(None, "")
        conversation = self.conversation
        assert conversation is not None
        if replacing_id is not None:
            store.delete_messages_from(conversation.id, replacing_id)
        pending = self.attachments.pending
        if conversation.title == NEW_TITLE:
            conversation.title = title_from(text or (pending[0].name if pending else ""))
            store.rename_conversation(conversation.id, conversation.title)
        message = store.add_message(conversation.id, "user", text)
        for item in pending:
            store.add_attachment(
                message.id,
                item.name,
                item.kind,
                item.content,
                source=item.source,
                tokens=item.tokens,
                note=item.note,
            )
        self.attachments.take()
        return message

    def last_user_message(self) -> StoredMessage | None:
        if self.conversation is None:
            return None
        messages = self.store.list_messages(self.conversation.id)
        return next((m for m in reversed(messages) if m.role == "user"), None)

    def drop_after_last_user(self) -> int | None:
        """Delete what follows the last user message (to generate it again).

        Returns the id of the first deleted message, None when nothing followed;
        ChatError when there is no user message.
        """
        if self.conversation is None:
            raise ChatError("Nothing to regenerate yet")
        messages = self.store.list_messages(self.conversation.id)
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        if last_user is None:
            raise ChatError("Nothing to regenerate yet")
        after = [m for m in messages if m.id > last_user.id]
        if not after:
            return None
        self.store.delete_messages_from(self.conversation.id, after[0].id)
        return after[0].id

    def build_request(self) -> p.ChatRequest:
        """The request for the open conversation's next reply."""
        conversation = self.conversation
        if conversation is None:
            raise ChatError("No conversation is open")
        return chat_request(
            model_path=self.model_path(conversation),
            system_prompt=conversation.system_prompt,
            history=self.sendable_history(),
            sampling=Sampling.from_dict(conversation.sampling),
            settings=self._settings(),
            attachments=self.stored_attachments(),
        )

    @property
    def settings(self) -> Settings:
        """The settings as they are now."""
        return self._settings()

    def messages_with(self, prompt: str) -> list[p.ChatMessage]:
        """The messages a reply to ``prompt`` (sent next) would be asked with."""
        system_prompt, _model, sampling = self.conversation_settings()
        return chat_request(
            model_path="",
            system_prompt=system_prompt,
            history=[*self.sendable_history(), p.ChatMessage("user", prompt)],
            sampling=sampling,
            settings=self._settings(),
            attachments=self.stored_attachments(),
        ).messages

    def sendable_history(self) -> list[StoredMessage]:
        """Every message of the open conversation ([] when none is open)."""
        if self.conversation is None:
            return []
        return self.store.list_messages(self.conversation.id)

    def stored_attachments(self) -> dict[int, list[Any]]:
        """The attachments of the open conversation's messages, by message id."""
        if self.conversation is None:
            return {}
        return self.store.attachments_for(m.id for m in self.sendable_history())

    def start_reply(self) -> tuple[StoredMessage, p.ChatRequest]:
        """Store an empty streaming reply and return it with the request to run.

        ChatError (one line) when the model file is unusable or the database
        refuses the reply: nothing would be kept, so nothing is generated.
        """
        request = self.build_request()
        backend = self.backend_for(request.model_path)
        if backend is self.host:
            try:
                read_gguf_info(request.model_path)
            except ModelFileError as error:
                raise ChatError(str(error)) from error
        assert self.conversation is not None
        try:
            reply = self.store.add_message(self.conversation.id, "assistant", "", state="streaming")
        except StoreError as error:
            raise ChatError(str(error)) from error
        with self._save_lock:
            self.reply_id = reply.id
            self.reply_text = ""
            self.saved_len = 0
            self.save_error = ""
            self._notice = ""
            self._last_save = time.monotonic()
            self._backend = backend
            self.generating = True
        return reply, request

    def record_error(self, text: str) -> StoredMessage | None:
        """Store an error in the open conversation (None when it cannot be stored)."""
        if self.conversation is None:
            return None
        try:
            return self.store.add_message(self.conversation.id, "error", text)
        except StoreError:
            return None

    def stream(self, request: p.ChatRequest) -> None:
        """Run the request started by :meth:`start_reply` to its end, emitting events.

        Blocks (the engine and the database writes); run it in a thread. Writes
        the reply at least every SAVE_INTERVAL_S and once at the end; always
        ends with ReplyFinished or ReplyFailed.
        """
        terminal: Any = None
        backend = self._backend
        try:
            if backend is None:
                backend = self._backend = self.backend_for(request.model_path)
            for event in backend.submit(request):
                if isinstance(event, p.TERMINAL_EVENTS):
                    # Handled once the host has finished the request (below), so a
                    # reply started on this announcement finds the host free.
                    terminal = event
                else:
                    self._handle(event)
        except Exception as error:  # noqa: BLE001 - any failure ends the reply the same way
            terminal = terminal or p.EngineFailed(f"the chat engine failed: {error}")
        finally:
            if backend is not None and backend is not self.host:
                backend.shutdown()
        self._handle(terminal or p.EngineFailed("the chat engine ended without a reply"))

    def stop(self) -> bool:
        """Ask the engine to stop the reply (it ends as 'stopped'); False when none runs."""
        if not self.generating:
            return False
        (self._backend or self.host).cancel()
        return True

    def _handle(self, event: Any) -> None:
        if isinstance(event, p.TokenGenerated):
            with self._save_lock:
                self.reply_text += event.text
            self.emit(TokenReceived(event.text))
            now = time.monotonic()
            if now - self._last_save >= SAVE_INTERVAL_S:
                self._last_save = now
                self._save(content=self.reply_text)
        elif isinstance(event, p.WaitingForCpu):
            self.emit(WaitingForCpu(tuple(event.behind)))
        elif isinstance(event, p.CpuGranted):
            self.emit(CpuGranted())
        elif isinstance(event, p.ModelLoaded):
            self.emit(model_loaded(event))
        elif isinstance(event, p.ContextTrimmed):
            self.emit(ContextTrimmed(event.dropped_messages))
        elif isinstance(event, p.GenerationFinished):
            self._finish(event)
        elif isinstance(event, p.EngineFailed):
            self._fail(event.message)

    def _finish(self, event: p.GenerationFinished) -> None:
        stats = vars(event.stats).copy() if event.stats.tokens or event.stats.elapsed_s else None
        state = "stopped" if event.reason == "cancelled" else "complete"
        with self._save_lock:
            reply_id = self.reply_id
            text = self.reply_text
            self._save(content=text, state=state, stats=stats)
            finished = ReplyFinished(
                reply_id or 0, text, state, stats, event.reason, self.unsaved_notice()
            )
            self._end()
        self.emit(finished)

    def _fail(self, error: str) -> None:
        with self._save_lock:
            reply_id = self.reply_id
            text = self.reply_text
            if reply_id is not None:
                if text:
                    self._save(content=text, state="error")
                elif self.conversation is not None:
                    try:
                        self.store.delete_messages_from(self.conversation.id, reply_id)
                    except StoreError:
                        pass  # an empty streaming row: the next start marks it interrupted
            self._end()
        self.emit(ReplyFailed(reply_id, text, error, self.record_error(error)))

    def _end(self) -> None:
        self.generating = False
        self.reply_id = None
        self._backend = None

    # --- writing the reply -------------------------------------------------------------

    def _save(self, **changes: Any) -> None:
        """Write the streaming reply; a failure is kept and announced, never raised."""
        with self._save_lock:
            if self.reply_id is None:
                return
            try:
                self.store.update_message(self.reply_id, **changes)
            except StoreError as error:
                first = not self.save_error
                self.save_error = str(error)
                if first:  # one announcement, not one per half second
                    self.emit(ReplySaveFailed(self.save_error))
            else:
                if "content" in changes:
                    self.saved_len = len(changes["content"])
                self.save_error = ""
            notice = self.unsaved_notice()
            if notice != self._notice:
                self._notice = notice
                self.emit(UnsavedChanged(notice))

    def unsaved_notice(self) -> str:
        """Which part of the reply the database does not hold ('' if none)."""
        if not self.save_error:
            return ""
        missing = len(self.reply_text) - self.saved_len
        if missing <= 0:
            what = "that this reply ended (its text is saved; it will show as interrupted)"
        elif self.saved_len == 0:
            what = f"all of this reply ({missing} characters)"
        else:
            start = " ".join(self.reply_text[self.saved_len :].split()[:6])
            what = f"the last {missing} characters, from “{start}…” on"
        return f"Not saved: {what}. {self.save_error}. Ctrl+Y copies the reply."

    def save_for_exit(self) -> None:
        """Keep the reply streamed so far as 'stopped'. Blocks (a store write)."""
        if self.reply_id is not None:
            self._save(content=self.reply_text, state="stopped")

    def emergency_save(self, draft: str | None) -> None:
        """save_for_exit (and ``draft``, unless None) from any thread, while the UI is stuck.

        Store writes only, no events; errors are dropped: nowhere is left to report them.
        """
        conversation = self.conversation
        try:
            if self.reply_id is not None:
                self.store.update_message(self.reply_id, content=self.reply_text, state="stopped")
            if draft is not None:
                self.store.save_draft(conversation.id if conversation else None, draft)
        except StoreError:
            pass
