"""Files attached to the next chat message: read, counted, fitted, then sent with it.

:class:`AttachmentTray` belongs to a :class:`~tui.services.chat.ChatService`. It
reads a path (or a recording of the Listen panel) into an attachment
(:mod:`tui.attachments`), counts its tokens with the conversation's chat model
(the engine's real tokenizer; a remote server's counts are estimates), and keeps
it only when it fits the room left in the context, trimmed with a notice if it
must be. Every step is announced as an event of the chat service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui import attachments as att
from tui.engines import protocol as p
from tui.formats import ModelFileError
from tui.formats.gguf import read_gguf_info
from tui.safe_text import one_line
from tui.store import Recording, StoreError

if TYPE_CHECKING:
    from tui.services.chat import ChatService

TOKENS_PER_MESSAGE = 8
"""Tokens the chat template adds around each message, roughly (role markers, ends)."""


# --- events --------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextRoom:
    """How the context of the open conversation is used by the next message."""

    n_ctx: int
    used: int
    """Tokens of the system prompt, the history, the typed prompt and the attachments."""
    reserved: int
    """Tokens kept for the reply (the conversation's max tokens)."""
    estimated: bool
    """True when the counts are estimates (a remote model)."""

    @property
    def left(self) -> int:
        return self.n_ctx - self.used - self.reserved


@dataclass(frozen=True)
class Attaching:
    """A file is being read (or transcribed) and counted."""

    name: str


@dataclass(frozen=True)
class AttachmentsChanged:
    """The pending attachments changed; ``notice`` says how (a trim, a removal) or ''."""

    pending: tuple[att.Candidate, ...]
    room: ContextRoom | None
    notice: str = ""


@dataclass(frozen=True)
class AttachmentRefused:
    """A file was not attached: one line saying why (nothing was added)."""

    message: str


# --- the tray ------------------------------------------------------------------------


class AttachmentTray:
    """The attachments waiting for the next message of a ChatService."""

    def __init__(self, service: ChatService, speech_host: Any = None) -> None:
        self._service = service
        self.speech_host = speech_host
        """The speech EngineHost that transcribes audio attachments (None: audio refused)."""
        self.pending: list[att.Candidate] = []
        self.room: ContextRoom | None = None
        """The room last counted (None before the first attachment)."""
        self._base_tokens = 0
        """Tokens of what the last count held besides the attachments."""

    # --- adding and removing -----------------------------------------------------------

    def attach(self, target: str, prompt: str = "") -> att.Candidate | None:
        """Blocks: read ``target`` (a path or ``recording:ID``), count and fit it.

        ``prompt`` is the text typed so far (it takes room too). Emits Attaching,
        then AttachmentsChanged (attached, maybe trimmed) or AttachmentRefused;
        returns what was attached, None when refused.
        """
        service = self._service
        shown = one_line(target.strip()) or "(nothing)"
        service.emit(Attaching(shown))
        try:
            if service.generating:
                raise att.AttachmentError("wait for the reply to finish before attaching")
            candidate = self._read(target)
            room = self.count_room(prompt)
            fitted = att.fit(candidate, room.left, self._counter(), room.n_ctx)
        except att.AttachmentError as error:
            service.emit(AttachmentRefused(str(error)))
            return None
        self.pending.append(fitted)
        self.room = self._room(room.n_ctx, room.reserved, room.estimated)
        notice = f"{fitted.name}: {fitted.note}" if "trimmed to" in fitted.note else ""
        service.emit(AttachmentsChanged(tuple(self.pending), self.room, notice))
        return fitted

    def remove_last(self) -> att.Candidate | None:
        """Drop the newest pending attachment (None when there is none)."""
        if not self.pending:
            return None
        removed = self.pending.pop()
        if self.room is not None:
            self.room = self._room(self.room.n_ctx, self.room.reserved, self.room.estimated)
        self._service.emit(
            AttachmentsChanged(tuple(self.pending), self.room, f"removed {removed.name}")
        )
        return removed

    def clear(self) -> None:
        """Drop every pending attachment (the conversation changed)."""
        self.pending.clear()
        self.room = None
        # Also without attachments: a refusal notice belongs to the old conversation.
        self._service.emit(AttachmentsChanged((), None))

    def take(self) -> list[att.Candidate]:
        """The pending attachments, which are no longer pending (they are being sent)."""
        taken, self.pending = self.pending, []
        self.room = None
        # Also without attachments: a refusal notice is old news once a message is sent.
        self._service.emit(AttachmentsChanged((), None))
        return taken

    def recordings(self, limit: int = 50) -> list[Recording]:
        """The newest recordings of the Listen panel (to attach as ``recording:ID``)."""
        try:
            return self._service.store.list_recordings(limit=limit)
        except StoreError:
            return []

    # --- reading -----------------------------------------------------------------------

    def _read(self, target: str) -> att.Candidate:
        recording_id = att.recording_id(target)
        if recording_id is not None:
            try:
                record = self._service.store.get_recording(recording_id)
            except StoreError as error:
                raise att.AttachmentError(str(error)) from None
            if record is None:
                raise att.AttachmentError(f"no recording {recording_id}")
            return att.from_recording(record, self._transcribe)
        if target.strip().lower().startswith(att.RECORDING_PREFIX):
            raise att.AttachmentError("a recording is named recording:ID, e.g. recording:3")
        return att.read_path(target, self._transcribe)

    def _transcribe(self, path: Path) -> str:
        """Blocks: the transcript of an audio file, as ``triptych transcribe`` makes it."""
        return transcribe_file(path, self._service.settings, self.speech_host)

    # --- counting ------------------------------------------------------------------------

    def count_room(self, prompt: str = "") -> ContextRoom:
        """Blocks: count what the next message takes of the context (AttachmentError on failure)."""
        service = self._service
        _system, _model, sampling = service.conversation_settings()
        texts = [m.content for m in service.messages_with(prompt or " ")]
        counts, n_ctx, estimated = self._count(texts)
        self._base_tokens = sum(counts) + TOKENS_PER_MESSAGE * len(texts)
        return self._room(n_ctx, sampling.max_tokens, estimated)

    def _room(self, n_ctx: int, reserved: int, estimated: bool) -> ContextRoom:
        used = self._base_tokens + sum(c.tokens for c in self.pending)
        return ContextRoom(n_ctx, used, reserved, estimated)

    def _counter(self) -> att.Counter:
        def count(texts: Sequence[str]) -> list[int]:
            return self._count(list(texts))[0]

        return count

    def _count(self, texts: list[str]) -> tuple[list[int], int, bool]:
        """Token counts of ``texts`` by the conversation's model, its context size, estimated?"""
        service = self._service
        _system, _model, sampling = service.conversation_settings()
        settings = service.settings
        try:
            model_path = service.model_path()
        except (ValueError, OSError) as error:
            raise att.AttachmentError(one_line(str(error))) from None
        try:
            backend = service.backend_for(model_path)
        except Exception as error:  # noqa: BLE001 - ChatError, one line
            raise att.AttachmentError(str(error)) from None
        if backend is service.host:
            try:
                read_gguf_info(model_path)
            except ModelFileError as error:
                raise att.AttachmentError(str(error)) from None
        request = p.CountTokens(
            model_path=str(model_path),
            texts=texts,
            n_ctx=sampling.n_ctx,
            n_threads=settings.threads,
            gpu_layers=settings.gpu_layers,
        )
        from tui.services.chat_events import model_loaded

        try:
            # A count may be what loads the model: its GPU note is shown as a reply's is.
            counted = count_tokens(
                backend, request, lambda event: service.emit(model_loaded(event))
            )
        finally:
            if backend is not service.host:
                backend.shutdown()
        return counted.counts, counted.n_ctx, counted.estimated


def count_tokens(
    backend: Any,
    request: p.CountTokens,
    on_loaded: Callable[[p.ModelLoaded], object] | None = None,
) -> p.TokensCounted:
    """Blocks: ``request`` answered by a chat backend; AttachmentError (one line) if not.

    ``on_loaded`` gets the ModelLoaded event when the count loads the model.
    """
    counted: p.TokensCounted | None = None
    for event in backend.submit(request):
        if isinstance(event, p.TokensCounted):
            counted = event
        elif isinstance(event, p.ModelLoaded) and on_loaded is not None:
            on_loaded(event)
        elif isinstance(event, p.EngineFailed):
            raise att.AttachmentError(f"could not count tokens: {event.message}")
    if counted is None:
        raise att.AttachmentError("could not count tokens: the chat engine did not answer")
    return counted


def transcribe_file(path: Path, settings: Any, speech_host: Any) -> str:
    """Blocks: the transcript of an audio file, as ``triptych transcribe`` makes it.

    ``speech_host`` is the local speech EngineHost (a server spec in the
    settings' speech model uses that server instead). ValueError in one line.
    """
    from tui import transcript
    from tui.backends.select import speech_backend_for
    from tui.backends.servers import BackendError
    from tui.services.listen import ListenError, check_speech_model, transcribe_request

    try:
        model = check_speech_model(settings.speech_model)
        backend = speech_backend_for(str(model), settings, speech_host)
    except (ListenError, BackendError) as error:
        raise ValueError(str(error)) from None
    if backend is None:
        raise ValueError("no speech engine is at hand to transcribe audio")
    request = transcribe_request(settings, audio_path=path, model=model)
    segments: list[transcript.Segment] = []
    try:
        for event in backend.submit(request):
            if isinstance(event, p.SegmentTranscribed):
                segments.append(transcript.Segment(event.start_s, event.end_s, event.text))
            elif isinstance(event, p.EngineFailed):
                raise ValueError(event.message)
    finally:
        if backend is not speech_host:
            backend.shutdown()
    return transcript.to_txt(segments)


def attach_files(
    paths: Sequence[str],
    *,
    backend: Any,
    request: p.ChatRequest,
    speech_host: Any = None,
    settings: Any = None,
    on_loaded: Callable[[p.ModelLoaded], object] | None = None,
) -> tuple[list[att.Candidate], list[str]]:
    """Blocks: read, count and fit ``paths`` for the last user message of ``request``.

    What ``triptych chat --attach`` does: returns the attachments and the
    notices of what was trimmed; AttachmentError (one line) for the first file
    refused. Audio is transcribed with ``speech_host`` and ``settings``.
    """

    def transcribe(path: Path) -> str:
        return transcribe_file(path, settings, speech_host)

    def count(texts: Sequence[str]) -> list[int]:
        return count_tokens(backend, _count_request(request, list(texts)), on_loaded).counts

    base = count_tokens(
        backend, _count_request(request, [m.content for m in request.messages]), on_loaded
    )
    used = sum(base.counts) + TOKENS_PER_MESSAGE * len(request.messages)
    fitted: list[att.Candidate] = []
    notices: list[str] = []
    for path in paths:
        candidate = att.read_path(path, transcribe if speech_host is not None else None)
        left = base.n_ctx - used - request.max_tokens
        done = att.fit(candidate, left, count, base.n_ctx)
        used += done.tokens
        fitted.append(done)
        if "trimmed to" in done.note:
            notices.append(f"{done.name}: {done.note}")
    return fitted, notices


def _count_request(request: p.ChatRequest, texts: list[str]) -> p.CountTokens:
    return p.CountTokens(
        model_path=request.model_path,
        texts=texts,
        n_ctx=request.n_ctx,
        n_threads=request.n_threads,
        gpu_layers=request.gpu_layers,
    )
