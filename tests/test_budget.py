"""The memory budget with real engines: a second modality unloads the idle first one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.speech_fixtures import speak, whisper_model
from tui.budget import MemoryBudget, process_rss, request_need
from tui.engines import protocol as p
from tui.engines.host import EngineHost

QUESTION = "Name the capital city of France."


def ask(host: EngineHost, model: Path) -> str:
    request = p.ChatRequest(
        model_path=str(model),
        messages=[
            p.ChatMessage("system", "You are a helpful assistant."),
            p.ChatMessage("user", QUESTION),
        ],
        temperature=0.0,
        max_tokens=16,
        n_threads=1,
        n_ctx=512,
    )
    return collect(host, request, p.TokenGenerated)


def collect(host: EngineHost, request: object, kind: type) -> str:
    """Run a request to the end; the text of its events of one kind, joined."""
    text = ""
    for event in host.submit(request):
        if isinstance(event, p.EngineFailed):
            raise AssertionError(event.message)
        if isinstance(event, kind):
            text += event.text
    return text


def transcribe(host: EngineHost, wav: Path) -> str:
    request = p.TranscribeRequest(
        model_path=str(whisper_model()), audio_path=str(wav), language="en", n_threads=1
    )
    return collect(host, request, p.SegmentTranscribed)


@pytest.fixture
def hosts(tmp_path: Path):
    chat, speech = EngineHost("chat", tmp_path), EngineHost("speech", tmp_path)
    yield chat, speech
    chat.shutdown()
    speech.shutdown()


def test_small_budget_unloads_the_idle_engine_and_loses_nothing(
    hosts: tuple[EngineHost, EngineHost], chat_model: Path, tmp_path: Path
):
    chat, speech = hosts
    told: list[str] = []
    # Room for one of the two models, not both.
    budget = MemoryBudget([chat, speech], limit=300 << 20, notify=told.append)
    assert "Paris" in ask(chat, chat_model)
    assert chat.alive and chat.loaded_model == str(chat_model)
    chat_rss = process_rss(chat.pid)
    assert chat_rss > 50 << 20

    wav = speak("Hello there, general Kenobi.", tmp_path / "speech.wav")
    assert transcribe(speech, wav).strip()
    assert not chat.alive and chat.loaded_model is None  # unloaded to make room
    assert speech.alive and speech.loaded_model == str(whisper_model())
    assert told and told[0].startswith("Unloaded the chat model SmolLM2")

    # Nothing lost: the next chat request starts the engine again and answers.
    assert "Paris" in ask(chat, chat_model)
    assert chat.alive and not speech.alive
    assert budget.used() <= chat_rss * 2


def test_large_budget_keeps_both_loaded(
    hosts: tuple[EngineHost, EngineHost], chat_model: Path, tmp_path: Path
):
    chat, speech = hosts
    MemoryBudget([chat, speech], limit=16 << 30)
    ask(chat, chat_model)
    transcribe(speech, speak("Testing one two three.", tmp_path / "t.wav"))
    assert chat.alive and speech.alive


def test_idle_timeout_unloads(hosts: tuple[EngineHost, EngineHost], chat_model: Path):
    chat, speech = hosts
    budget = MemoryBudget([chat, speech], limit=16 << 30)
    ask(chat, chat_model)
    assert budget.unload_idle(idle_s=3600) == []
    assert chat.alive
    time.sleep(0.2)
    assert budget.unload_idle(idle_s=0.1) == ["chat"]
    assert not chat.alive


def test_need_counts_weights_and_kv_cache(chat_model: Path):
    small = request_need(p.ChatRequest(str(chat_model), [], n_ctx=512))
    large = request_need(p.ChatRequest(str(chat_model), [], n_ctx=8192))
    assert small > chat_model.stat().st_size
    assert large - small == 30 * 2 * 2 * (8192 - 512) * 576 * 3 // 9  # SmolLM2's KV cache
