"""The chat service without Textual: the real SmolLM2 model and real SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from tui.config import Settings
from tui.engines import protocol as p
from tui.engines.host import EngineHost
from tui.services import chat as cs
from tui.services.chat import ChatService, chat_request, resolve_sampling
from tui.store import Store, StoreError

PARIS_QUESTION = "Name the capital city of France."


def settings_for_tests() -> Settings:
    settings = Settings()
    settings.threads = 2
    settings.sampling.temperature = 0.0
    settings.sampling.max_tokens = 32
    settings.sampling.n_ctx = 1024
    return settings


class Recorder:
    """Subscribes to a service and keeps every event it emits."""

    def __init__(self, service: ChatService) -> None:
        self.events: list[Any] = []
        service.subscribe(self.events.append)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def host(chat_host: EngineHost) -> EngineHost:
    return chat_host


def service_for(
    store: Store, host: Any, chat_model: Path, settings: Settings | None = None
) -> ChatService:
    chosen = settings or settings_for_tests()
    return ChatService(store, host, lambda: chosen, lambda: str(chat_model))


# --- the request, without a model run ---------------------------------------------------


def test_request_carries_the_conversations_sampling_and_the_settings(
    store: Store, chat_model: Path
) -> None:
    service = service_for(store, None, chat_model)
    conversation = service.create()
    # A distinct value per sampling field: each must reach the request unchanged.
    sampling = {"temperature": 0.25, "top_p": 0.5, "top_k": 7, "min_p": 0.01}
    sampling |= {"repeat_penalty": 1.3, "max_tokens": 77, "n_ctx": 1536, "seed": 42}
    assert set(sampling) == {f.name for f in fields(p.Sampling)}
    store.update_conversation(conversation.id, system_prompt="Be brief.", sampling=sampling)
    service.open(conversation.id)
    store.add_message(conversation.id, "user", "first question")
    store.add_message(conversation.id, "assistant", "first answer")
    store.add_message(conversation.id, "error", "the engine failed")
    store.add_message(conversation.id, "assistant", "half", state="error")
    store.add_message(conversation.id, "assistant", "", state="streaming")
    store.add_message(conversation.id, "user", "second question")

    request = service.build_request()

    assert {f.name: getattr(request, f.name) for f in fields(p.Sampling)} == sampling
    assert request.n_threads == 2 and request.gpu_layers == "auto"
    assert request.model_path == str(chat_model)
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]


def test_the_cli_and_the_screen_build_the_same_request(store: Store, chat_model: Path) -> None:
    settings = settings_for_tests()
    service = ChatService(store, None, lambda: settings, lambda: str(chat_model))
    service.add_user_message(PARIS_QUESTION)
    from_service = service.build_request()
    from_cli = chat_request(
        model_path=chat_model,
        system_prompt=settings.system_prompt,
        history=[p.ChatMessage("user", PARIS_QUESTION)],
        sampling=settings.sampling,
        settings=settings,
    )
    assert from_service == from_cli


def test_sampling_overrides_apply_and_are_checked() -> None:
    base = p.Sampling(temperature=0.7, top_k=40)
    resolved = resolve_sampling(base, {"temperature": 0.0, "top_k": None, "unknown": 3})
    assert resolved == p.Sampling(temperature=0.0, top_k=40)
    assert base.temperature == 0.7, "the base is left as it was"
    with pytest.raises(ValueError, match="temperature"):
        resolve_sampling(base, {"temperature": 9.0})


def test_a_host_that_raises_ends_the_reply_with_a_stored_error(
    store: Store, chat_model: Path
) -> None:
    class BrokenHost:
        def submit(self, request: p.ChatRequest) -> Iterator[Any]:
            raise RuntimeError("pipe closed")

        def cancel(self) -> None:
            pass

    service = service_for(store, BrokenHost(), chat_model)
    events = Recorder(service)
    service.add_user_message(PARIS_QUESTION)
    reply, request = service.start_reply()
    service.stream(request)

    [failed] = events.of(cs.ReplyFailed)
    assert failed.error == "the chat engine failed: pipe closed"
    assert not service.generating and service.reply_id is None
    assert conversation_roles(service) == [("user", "complete"), ("error", "complete")]
    assert store.get_message(reply.id) is None, "the empty reply is not kept"
    assert failed.error_message is not None and failed.error_message.content == failed.error


def test_a_bad_model_file_refuses_to_start(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    service = service_for(store, None, bad)
    service.add_user_message(PARIS_QUESTION)
    with pytest.raises(cs.ChatError):
        service.start_reply()
    assert not service.generating
    assert conversation_roles(service) == [("user", "complete")]


def conversation_roles(service: ChatService) -> list[tuple[str, str]]:
    assert service.conversation is not None
    return [(m.role, m.state) for m in service.store.list_messages(service.conversation.id)]


# --- with the real model ------------------------------------------------------------------


@pytest.mark.slow
def test_a_reply_streams_and_is_saved_complete(
    store: Store, host: EngineHost, chat_model: Path
) -> None:
    service = service_for(store, host, chat_model)
    events = Recorder(service)
    service.add_user_message(PARIS_QUESTION)
    assert service.conversation is not None
    assert service.conversation.title == PARIS_QUESTION
    reply, request = service.start_reply()
    assert service.generating and reply.state == "streaming"

    service.stream(request)

    tokens = "".join(e.text for e in events.of(cs.TokenReceived))
    [finished] = events.of(cs.ReplyFinished)
    assert "Paris" in tokens
    assert finished.content == tokens == service.reply_text
    assert finished.state == "complete" and finished.unsaved == ""
    assert finished.stats and finished.stats["tokens"] > 0
    saved = store.get_message(reply.id)
    assert saved is not None
    assert (saved.content, saved.state) == (tokens, "complete")
    assert saved.stats == finished.stats
    assert not service.generating and service.save_error == ""
    assert isinstance(events.events[-1], cs.ReplyFinished), "the reply ends with one event"


@pytest.mark.slow
def test_stop_keeps_what_was_streamed(store: Store, host: EngineHost, chat_model: Path) -> None:
    settings = settings_for_tests()
    settings.sampling.max_tokens = 400
    service = service_for(store, host, chat_model, settings)
    service.add_user_message("Write a long story about a dragon and a knight.")
    reply, request = service.start_reply()
    first_token = threading.Event()
    service.subscribe(lambda e: isinstance(e, cs.TokenReceived) and first_token.set())
    events = Recorder(service)
    worker = threading.Thread(target=service.stream, args=(request,))
    worker.start()
    assert first_token.wait(60), "no token"
    assert service.stop()
    worker.join(10)
    assert not worker.is_alive()

    [finished] = events.of(cs.ReplyFinished)
    assert finished.reason == "cancelled" and finished.state == "stopped"
    assert finished.stats is None or finished.stats["tokens"] < 400
    saved = store.get_message(reply.id)
    assert saved is not None
    assert (saved.content, saved.state) == (service.reply_text, "stopped")
    assert not service.stop(), "nothing left to stop"


@pytest.mark.slow
def test_failed_writes_say_which_part_is_not_saved(
    store: Store, host: EngineHost, chat_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every token is written (no 0.5 s wait); the fourth write and later fail.
    monkeypatch.setattr(cs, "SAVE_INTERVAL_S", 0.0)
    writes: list[dict[str, Any]] = []
    real_update = store.update_message

    def failing_update(message_id: int, **changes: Any) -> None:
        writes.append(changes)
        if len(writes) > 3:
            raise StoreError("database or disk is full: /tmp/triptych.db")
        real_update(message_id, **changes)

    monkeypatch.setattr(store, "update_message", failing_update)
    service = service_for(store, host, chat_model)
    events = Recorder(service)
    service.add_user_message(PARIS_QUESTION)
    reply, request = service.start_reply()
    service.stream(request)

    [finished] = events.of(cs.ReplyFinished)
    assert len(writes) > 4, writes
    assert [e.error for e in events.of(cs.ReplySaveFailed)] == [
        "database or disk is full: /tmp/triptych.db"
    ], "one announcement for the whole failing streak"
    saved = store.get_message(reply.id)
    assert saved is not None and saved.state == "streaming"
    assert saved.content == writes[2]["content"] and finished.content.startswith(saved.content)
    missing = len(finished.content) - len(saved.content)
    assert missing > 0
    assert finished.unsaved.startswith(f"Not saved: the last {missing} characters"), finished
    assert "disk is full" in finished.unsaved
    assert events.of(cs.UnsavedChanged)[-1].notice == finished.unsaved
