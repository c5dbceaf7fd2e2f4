"""The Chat screen driven with Pilot, against the real model and real SQLite."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.store import Store
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message_log import WINDOW, MessageLog, MessageView
from tui.widgets.prompt_input import PromptInput

pytestmark = pytest.mark.slow


def make_app(chat_model: Path, temperature: float = 0.0, max_tokens: int = 48) -> TriptychApp:
    settings = Settings()
    settings.sampling.temperature = temperature
    settings.sampling.max_tokens = max_tokens
    settings.sampling.n_ctx = 2048
    return TriptychApp(chat_model=str(chat_model), settings=settings)


def chat(app: TriptychApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


async def send(pilot, text: str) -> None:
    prompt = pilot.app.screen.query_one(PromptInput)
    prompt.focus()
    prompt.text = text
    await pilot.press("enter")


def last_reply_id(app: TriptychApp) -> int:
    views = [v for v in app.screen.query_one(MessageLog).views if v.data.role != "user"]
    return views[-1].data.id if views else 0


async def wait_reply(pilot, app: TriptychApp, after_id: int, timeout: float = 60) -> None:
    """Wait until a reply (or error) newer than after_id has finished."""

    def finished() -> bool:
        views = [v for v in app.screen.query_one(MessageLog).views if v.data.role != "user"]
        return (
            not chat(app).generating
            and bool(views)
            and views[-1].data.id > after_id
            and views[-1].data.state != "streaming"
        )

    await wait_until(pilot, finished, timeout, "the reply to finish")


def last_view(app: TriptychApp, role: str) -> MessageView:
    views = [v for v in app.screen.query_one(MessageLog).views if v.data.role == role]
    assert views, f"no {role} message on screen"
    return views[-1]


async def test_paris_through_the_tui(app_dirs, chat_model):
    app = make_app(chat_model)
    async with app.run_test(size=(80, 24)) as pilot:
        before = last_reply_id(app)
        await send(pilot, "Name the capital city of France.")
        await wait_reply(pilot, app, before)
        reply = last_view(app, "assistant").data
        assert "Paris" in reply.content
        assert reply.state == "complete"
        assert reply.stats and reply.stats["tokens"] > 0 and reply.stats["tokens_per_s"] > 0
        status = str(app.screen.query_one("#status").render())
        assert "tok/s" in status and "first token" in status
        conversation = chat(app).conversation
        assert conversation is not None
        assert conversation.title.startswith("Name the capital")
    # It survived in the database.
    with Store() as store:
        messages = store.list_messages(conversation.id)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert "Paris" in messages[1].content and messages[1].state == "complete"


async def test_stop_keeps_the_partial_reply(app_dirs, chat_model):
    app = make_app(chat_model, max_tokens=2000)  # temperature 0: a long story every time
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "Write a very long story about a dragon and a knight.")
        await wait_until(pilot, lambda: len(chat(app).reply_text) > 40, 30, "some streamed text")
        await pilot.press("escape")
        took = await wait_until(pilot, lambda: not chat(app).generating, 5, "the stop")
        assert took < 1.0
        reply = last_view(app, "assistant").data
        assert reply.state == "stopped" and len(reply.content) > 40
        stored = app.store.get_message(reply.id)
        assert stored.state == "stopped" and stored.content == reply.content
        # The next message works.
        before = last_reply_id(app)
        await send(pilot, "Name the capital city of France.")
        await wait_reply(pilot, app, before)
        assert last_view(app, "assistant").data.state == "complete"


async def test_killed_engine_shows_error_and_recovers(app_dirs, chat_model):
    app = make_app(chat_model, max_tokens=2000)  # temperature 0: a long story every time
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "Write a very long story about a dragon.")
        await wait_until(pilot, lambda: len(chat(app).reply_text) > 20, 30)
        os.kill(app.chat_host.pid, signal.SIGKILL)
        await wait_until(pilot, lambda: not chat(app).generating, 5)
        error = last_view(app, "error").data
        assert "killed" in error.content
        partial = last_view(app, "assistant").data
        assert partial.state == "error" and len(partial.content) > 20
        assert app.store.get_message(partial.id).content == partial.content
        # The next message respawns the engine.
        app.settings.sampling.max_tokens = 32
        conversation = chat(app).conversation
        app.store.update_conversation(
            conversation.id, sampling={**conversation.sampling, "max_tokens": 32, "temperature": 0}
        )
        chat(app).conversation = app.store.get_conversation(conversation.id)
        before = last_reply_id(app)
        await send(pilot, "Name the capital city of France.")
        await wait_reply(pilot, app, before)
        assert last_view(app, "assistant").data.state == "complete"


async def test_missing_model_is_reported_in_the_conversation(app_dirs, tmp_path):
    app = make_app(tmp_path / "nope.gguf")
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "Hello?")
        await wait_until(pilot, lambda: bool(app.screen.query_one(MessageLog).views), 5)
        await pilot.pause()
        error = last_view(app, "error").data
        assert "not found" in error.content
        # The user's message is kept.
        assert last_view(app, "user").data.content == "Hello?"
        assert not chat(app).generating


async def test_regenerate_and_edit_last(app_dirs, chat_model):
    app = make_app(chat_model, max_tokens=16)
    async with app.run_test(size=(80, 24)) as pilot:
        before = last_reply_id(app)
        await send(pilot, "Name the capital city of France.")
        await wait_reply(pilot, app, before)
        first_reply = last_view(app, "assistant").data.id
        before = last_reply_id(app)
        await pilot.press("ctrl+r")
        await wait_reply(pilot, app, before)
        messages = app.store.list_messages(chat(app).conversation.id)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[1].id != first_reply
        # Edit the last user message and resend it.
        await pilot.press("ctrl+g")
        prompt = app.screen.query_one(PromptInput)
        assert prompt.text == "Name the capital city of France."
        prompt.text = "What is the capital of Italy?"
        before = last_reply_id(app)
        await pilot.press("enter")
        await wait_reply(pilot, app, before)
        messages = app.store.list_messages(chat(app).conversation.id)
        assert [m.content for m in messages if m.role == "user"] == [
            "What is the capital of Italy?"
        ]
        assert len(app.screen.query_one(MessageLog).views) == 2


async def test_conversation_management(app_dirs, chat_model):
    """New, rename, search and delete (with confirmation), with a fake-free store."""
    store = Store()
    first = store.create_conversation("Recipes")
    store.add_message(first.id, "user", "How do I bake bread?")
    second = store.create_conversation("Travel")
    store.add_message(second.id, "user", "Trains in Japan")
    app = TriptychApp(chat_model=str(chat_model), settings=Settings(), store=store)
    async with app.run_test(size=(80, 24)) as pilot:
        listing = app.screen.query_one(ConversationList)
        assert listing.option_count == 2
        # Search by message text.
        await pilot.press("ctrl+f")
        await pilot.press(*"bread")
        await pilot.pause()
        assert listing.option_count == 1
        assert listing.get_option_at_index(0).id == str(first.id)
        await pilot.press("enter")  # to the list
        await pilot.press("enter")  # open it
        await pilot.pause()
        assert chat(app).conversation.id == first.id
        # Rename from the list.
        await pilot.press("ctrl+l", "r")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5)
        await pilot.press("ctrl+u", *"Baking", "enter")
        await pilot.pause()
        assert store.get_conversation(first.id).title == "Baking"
        # Delete asks first; "n" keeps it.
        await pilot.press("ctrl+l", "delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("n")
        await pilot.pause()
        assert store.get_conversation(first.id) is not None
        await pilot.press("ctrl+l", "delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("y")
        await pilot.pause()
        assert store.get_conversation(first.id) is None
        assert store.get_conversation(second.id) is not None
        # New conversation starts empty.
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert chat(app).conversation is None
        assert not app.screen.query_one(MessageLog).views


async def test_long_chat_mounts_a_window(app_dirs, chat_model):
    store = Store()
    conversation = store.create_conversation("Long")
    for index in range(300):
        role = "user" if index % 2 == 0 else "assistant"
        store.add_message(conversation.id, role, f"message **{index}**\n\n- a\n- b")
    app = TriptychApp(chat_model=str(chat_model), settings=Settings(), store=store)
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.screen.query_one(MessageLog)
        assert len(log.views) == WINDOW
        assert log.hidden_before == 300 - WINDOW
        assert log.views[-1].data.content.startswith("message **299**")
        log.focus()
        await pilot.press("home")
        await pilot.pause()
        assert len(log.views) == 2 * WINDOW
        assert log.hidden_before == 300 - 2 * WINDOW


async def test_copy_message_and_code_block(app_dirs, chat_model):
    store = Store()
    conversation = store.create_conversation("Code")
    store.add_message(conversation.id, "user", "Show me code")
    reply = "Here:\n\n```python\nprint('one')\n```\n\nand\n\n```sh\necho two\n```\n"
    store.add_message(conversation.id, "assistant", reply)
    app = TriptychApp(chat_model=str(chat_model), settings=Settings(), store=store)
    async with app.run_test(size=(80, 24)) as pilot:
        app.screen.query_one(MessageLog).focus()
        await pilot.press("y")
        assert app.clipboard == reply
        await pilot.press("c")
        assert app.clipboard == "print('one')"
        await pilot.press("c")
        assert app.clipboard == "echo two"
        await pilot.press("up", "up")  # the first press selects the last message
        await pilot.press("y")
        assert app.clipboard == "Show me code"


async def test_settings_dialog_saves_per_conversation(app_dirs, chat_model):
    store = Store()
    conversation = store.create_conversation("Tuned")
    app = TriptychApp(chat_model=str(chat_model), settings=Settings(), store=store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+o")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#temperature").value = "0.2"
        screen.query_one("#seed").value = "7"
        screen.query_one("#system").text = "Answer like a pirate."
        await pilot.press("ctrl+s")
        await pilot.pause()
        saved = store.get_conversation(conversation.id)
        assert saved.sampling["temperature"] == 0.2 and saved.sampling["seed"] == 7
        assert saved.system_prompt == "Answer like a pirate."
        # Invalid values are refused with a message, and nothing is saved.
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#top_p").value = "3"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "top-p" in str(app.screen.query_one("#error").render())
        await pilot.press("escape")
        assert store.get_conversation(conversation.id).sampling["top_p"] == 0.95


async def test_theme_is_remembered(app_dirs, chat_model):
    app = TriptychApp(chat_model=str(chat_model), store=Store())
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "triptych-dark"
        app.theme = "triptych-light"
        await pilot.pause()
    assert Settings.load().theme == "triptych-light"
    again = TriptychApp(chat_model=str(chat_model), store=Store())
    async with again.run_test(size=(80, 24)):
        assert again.theme == "triptych-light"


async def test_help_and_palette_list_every_action(app_dirs, chat_model):
    app = TriptychApp(chat_model=str(chat_model), store=Store())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        text = " ".join(str(w.render()) for w in app.screen.query("Static"))
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for binding in ChatScreen.BINDINGS:
            assert f"Chat: {binding.description}" in titles
        assert "Help" in titles and "Chat" in titles
        assert text


async def test_keys_can_be_remapped_from_settings(app_dirs, chat_model):
    settings = Settings()
    settings.keymap = {"chat.new": "f9"}
    store = Store()
    conversation = store.create_conversation("Existing")
    store.add_message(conversation.id, "user", "hi")
    app = TriptychApp(chat_model=str(chat_model), settings=settings, store=store)
    async with app.run_test(size=(80, 24)) as pilot:
        assert chat(app).conversation is not None
        await pilot.press("f9")
        await pilot.pause()
        assert chat(app).conversation is None
        sections = app.key_sections()
        keys = {e.binding_id: e.keys for s in sections for e in s.entries}
        assert keys["chat.new"] == "F9"


async def test_quitting_mid_reply_keeps_the_text(app_dirs, chat_model):
    app = make_app(chat_model, max_tokens=2000)  # temperature 0: a long story every time
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "Write a very long story about a dragon.")
        await wait_until(pilot, lambda: len(chat(app).reply_text) > 30, 30)
        reply_id = chat(app).reply_id
        await pilot.press("ctrl+q")
    with Store() as store:
        saved = store.get_message(reply_id)
        assert saved.state == "stopped" and len(saved.content) > 30
