"""Imagine from the chat: the chat model writes an image prompt, the Imagine panel draws it.

:meth:`ChatImagine.write_prompt` asks the conversation's own model (local or
remote) to turn one exchange into a single image prompt and cleans what it
says; :meth:`ChatImagine.generate` runs that prompt through the Imagine
panel's :class:`~tui.services.imagine.ImagineService` (its current model and
settings, saved to the gallery with its parameters) and adds the image to the
conversation as a message of role ``image``. Both block: run them in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tui.engines import protocol as p
from tui.engines.protocol import Sampling
from tui.formats import ModelFileError
from tui.imaging import ImageParams
from tui.safe_text import one_line
from tui.services import imagine as svc
from tui.services.base import Service
from tui.services.chat import ChatError, ChatService, chat_request
from tui.services.imagine import ImagineService
from tui.store import ImageRecord, StoreError
from tui.store import Message as StoredMessage

NO_IMAGE_MODEL = "No image model: press F5 and pick or download one"

PROMPT_MAX_TOKENS = 80
PROMPT_TEMPERATURE = 0.2
PROMPT_MAX_CHARS = 400
"""A cleaned prompt is cut (at a word) to this length."""

EXCERPT_CHARS = 1200
"""How much of each message the prompt writer is shown."""

INSTRUCTION = (
    "You write prompts for an image generator. Given a conversation, reply with ONE "
    "image prompt that pictures it: a short, concrete, visual description (subject, "
    "setting, style, lighting) of at most 40 words, on one line. Reply with the prompt "
    "only: no preamble, no quotes, no explanation."
)

FALLBACK_NOTE = "The chat model gave no usable prompt: this one is the reply's first sentence"

_PREFIX = re.compile(
    r"^\s*(?:(?:here(?:'s| is) (?:an? |the |your )?)?(?:image )?prompt|description)\s*[:\-–]\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`*"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


# --- events --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMessageAdded:
    """The generated image is in the gallery and in the conversation."""

    message: StoredMessage
    record: ImageRecord


@dataclass(frozen=True)
class ImagePrompt:
    """An image prompt for the user to edit before it is drawn."""

    text: str
    note: str = ""
    """Why the prompt is not the model's own ('' when it is)."""

    @property
    def fallback(self) -> bool:
        return bool(self.note)


# --- prompt writing ---------------------------------------------------------------


def exchange_for(
    messages: Sequence[StoredMessage], message_id: int | None = None
) -> tuple[StoredMessage | None, StoredMessage | None]:
    """The (user message, reply) pair to picture.

    ``message_id`` names a reply (paired with the user message before it) or a
    user message (paired with the reply after it); None: the last exchange.
    Either side may be None when the conversation lacks it.
    """
    talk = [m for m in messages if m.role in ("user", "assistant") and m.content.strip()]
    index = next((i for i, m in enumerate(talk) if m.id == message_id), None)
    if index is None:
        index = next((i for i in range(len(talk) - 1, -1, -1) if talk[i].role == "assistant"), None)
        if index is None:
            user = next((m for m in reversed(talk) if m.role == "user"), None)
            return user, None
    chosen = talk[index]
    if chosen.role == "user":
        after = talk[index + 1] if index + 1 < len(talk) else None
        return chosen, after if after is not None and after.role == "assistant" else None
    before = talk[index - 1] if index > 0 and talk[index - 1].role == "user" else None
    return before, chosen


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def prompt_messages(user: StoredMessage | None, reply: StoredMessage | None) -> list[p.ChatMessage]:
    """The messages that ask the model for one image prompt picturing this exchange."""
    parts = []
    if user is not None:
        parts.append(f"User: {_excerpt(user.content)}")
    if reply is not None:
        parts.append(f"Assistant: {_excerpt(reply.content)}")
    conversation = "\n\n".join(parts)
    return [
        p.ChatMessage("system", INSTRUCTION),
        p.ChatMessage(
            "user",
            f"Conversation:\n\n{conversation}\n\nWrite one image prompt that pictures this.",
        ),
    ]


def clean_prompt(text: str) -> str:
    """The model's answer as one image prompt: first paragraph, no label, no quotes.

    Returns '' when nothing usable is left.
    """
    paragraphs = [block for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]
    if not paragraphs:
        return ""
    first = paragraphs[0]
    if _PREFIX.match(first) and not _PREFIX.sub("", first).strip() and len(paragraphs) > 1:
        first = paragraphs[1]  # "Prompt:" alone on its line, the prompt below
    line = one_line(first)
    for _ in range(3):
        line = _PREFIX.sub("", line).strip().strip(_QUOTES).strip()
    if len(line) > PROMPT_MAX_CHARS:
        line = line[:PROMPT_MAX_CHARS].rsplit(" ", 1)[0]
    return line if sum(ch.isalpha() for ch in line) >= 3 else ""


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` on one line (cut at PROMPT_MAX_CHARS)."""
    line = one_line(text).strip(_QUOTES + " ")
    sentence = _SENTENCE_END.split(line, maxsplit=1)[0]
    if len(sentence) > PROMPT_MAX_CHARS:
        sentence = sentence[:PROMPT_MAX_CHARS].rsplit(" ", 1)[0]
    return sentence


def fallback_prompt(user: StoredMessage | None, reply: StoredMessage | None) -> str:
    """A prompt made without the model: the reply's first sentence (or the user's)."""
    for message in (reply, user):
        if message is not None and first_sentence(message.content):
            return first_sentence(message.content)
    return ""


# --- the service ----------------------------------------------------------------------


class ChatImagine(Service):
    """Pictures for a conversation: prompt by its chat model, image by the Imagine service.

    While :meth:`generate` runs, the Imagine service's events (StepDone,
    PreviewReady, GenerationEnded, GenerationFailed, ...) are emitted here too,
    followed by :class:`ImageMessageAdded` when the image was kept.
    """

    def __init__(
        self,
        chat: ChatService,
        imagine: ImagineService,
        form_params: Callable[[], ImageParams | None] = lambda: None,
    ) -> None:
        """``form_params``: the Imagine panel's current parameters (None: not built yet)."""
        super().__init__()
        self.chat = chat
        self.imagine = imagine
        self._form_params = form_params
        self._prompt_backend: Any = None
        self.writing = False
        self.generating = False

    # --- the image model ---------------------------------------------------------------

    def params(self, prompt: str) -> ImageParams:
        """The Imagine panel's parameters for ``prompt`` (one image, text to image)."""
        base = self._form_params()
        if base is None:
            settings = self.imagine.settings
            base = ImageParams(
                prompt="",
                model=settings.image_model,
                vae=settings.image_vae,
                taesd=settings.image_taesd,
            )
        return replace(base, prompt=prompt, batch_count=1, init_image="")

    def check_image_model(self) -> None:
        """ChatError with one line when there is no usable image model (nothing is sent)."""
        params = self.params("a picture")
        if not params.model:
            raise ChatError(NO_IMAGE_MODEL)
        try:
            self.imagine.check(params)
        except ModelFileError as error:
            raise ChatError(f"{NO_IMAGE_MODEL} ({one_line(str(error))})") from error
        except ValueError as error:
            raise ChatError(one_line(str(error))) from error

    # --- writing the prompt ------------------------------------------------------------

    def prompt_request(self, message_id: int | None = None) -> tuple[p.ChatRequest, str]:
        """The request that writes the prompt, and the fallback prompt. ChatError if none."""
        conversation = self.chat.conversation
        if conversation is None:
            raise ChatError("Nothing to picture yet: send a message first")
        user, reply = exchange_for(self.chat.store.list_messages(conversation.id), message_id)
        if user is None and reply is None:
            raise ChatError("Nothing to picture yet: send a message first")
        sampling = replace(
            Sampling.from_dict(conversation.sampling),
            temperature=PROMPT_TEMPERATURE,
            max_tokens=PROMPT_MAX_TOKENS,
        )
        request = chat_request(
            model_path=self.chat.model_path(conversation),
            system_prompt="",
            history=prompt_messages(user, reply),
            sampling=sampling,
            settings=self.imagine.settings,
        )
        return request, fallback_prompt(user, reply)

    def write_prompt(self, message_id: int | None = None) -> ImagePrompt:
        """Ask the conversation's model for an image prompt. Blocks; ChatError (one line).

        Falls back to the reply's first sentence (and says so) when the model's
        answer holds no usable prompt.
        """
        request, fallback = self.prompt_request(message_id)
        backend = self.chat.backend_for(request.model_path)
        self._prompt_backend = backend
        self.writing = True
        text: list[str] = []
        failure = ""
        cancelled = False
        try:
            for event in backend.submit(request):
                if isinstance(event, p.TokenGenerated):
                    text.append(event.text)
                elif isinstance(event, p.EngineFailed):
                    failure = event.message
                elif isinstance(event, p.GenerationFinished):
                    cancelled = event.reason == "cancelled"
        except Exception as error:  # noqa: BLE001 - any failure ends the same way
            failure = f"the chat engine failed: {error}"
        finally:
            self.writing = False
            self._prompt_backend = None
            if backend is not self.chat.host:
                backend.shutdown()
        if cancelled:
            raise ChatError("Stopped writing the image prompt")
        if failure:
            raise ChatError(one_line(failure))
        prompt = clean_prompt("".join(text))
        if prompt:
            return ImagePrompt(prompt)
        if not fallback:
            raise ChatError("The chat model gave no usable image prompt")
        return ImagePrompt(fallback, FALLBACK_NOTE)

    # --- generating --------------------------------------------------------------------

    def generate(self, conversation_id: int, prompt: str) -> StoredMessage | None:
        """Draw ``prompt`` with the Imagine service and add it to the conversation.

        Blocks until the engine ends. Returns the stored 'image' message, None when
        the generation failed or was stopped (its events say which). Raises
        ChatError (one line) when it cannot start.
        """
        prompt = one_line(prompt)
        if not prompt:
            raise ChatError("The image prompt is empty")
        if self.imagine.generating:
            raise ChatError("The Imagine panel is generating: wait for it or stop it there (F3)")
        self.check_image_model()
        params = self.params(prompt)
        try:
            params.validate()
        except ValueError as error:
            raise ChatError(f"Imagine panel settings: {one_line(str(error))}") from error
        saved: list[ImageRecord] = []

        def forward(event: Any) -> None:
            if isinstance(event, svc.ImageSaved):
                saved.append(event.record)
            self.emit(event)

        self.generating = True
        unsubscribe = self.imagine.subscribe(forward)
        try:
            self.imagine.generate(params)
        finally:
            unsubscribe()
            self.generating = False
        if not saved:
            return None
        record = saved[-1]
        try:
            message = self.chat.store.add_message(
                conversation_id, "image", prompt, image_id=record.id
            )
        except StoreError as error:
            raise ChatError(
                f"The image is in the gallery but not in the conversation: {error}"
            ) from error
        self.emit(ImageMessageAdded(message, record))
        return message

    def stop(self) -> bool:
        """Stop the prompt writing or the generation; False when neither runs."""
        backend = self._prompt_backend
        if self.writing and backend is not None:
            backend.cancel()
            return True
        if self.generating:
            self.imagine.stop()
            return True
        return False


def image_path(store: Any, image_id: int | None) -> str:
    """The file of a gallery image ('' when it was deleted from the gallery)."""
    if image_id is None:
        return ""
    try:
        record = store.get_image(image_id)
    except StoreError:
        return ""
    return record.path if record is not None and Path(record.path).is_file() else ""
