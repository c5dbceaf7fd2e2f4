"""Unsent prompt text per conversation, keys typed right after a panel switch,
and SIGTERM in the running app: driven with Pilot against real SQLite (and the
real SmolLM2 model where a reply is needed)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from textual import events
from textual.widgets import TextArea

from tests.helpers import wait_until
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.chat import ChatScreen
from tui.screens.imagine import ImagineScreen
from tui.store import Store
from tui.widgets.conversation_list import ConversationList
from tui.widgets.prompt_input import PromptInput

pytestmark = pytest.mark.slow


def make_app(chat_model: Path, store: Store | None = None, **sampling: float) -> TriptychApp:
    settings = Settings()
    settings.sampling.temperature = 0.0
    settings.sampling.max_tokens = 24
    settings.sampling.n_ctx = 2048
    for name, value in sampling.items():
        setattr(settings.sampling, name, value)
    return TriptychApp(chat_model=str(chat_model), settings=settings, store=store)


def chat(app: TriptychApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


def prompt_text(app: TriptychApp) -> str:
    return chat(app).query_one(PromptInput).text


def burst(app: TriptychApp, *keys: str) -> None:
    """Queue keys the way a terminal delivers fast typing: all of them before the
    app handles the first (Pilot's press waits for each key to be handled)."""
    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app.post_message(event)


async def open_from_list(pilot, app: TriptychApp, conversation_id: int) -> None:
    """Ctrl+L, move the highlight to the conversation, Enter: the user's way in."""
    await pilot.press("ctrl+l")
    listing = chat(app).query_one(ConversationList)
    ids = [listing.get_option_at_index(i).id for i in range(listing.option_count)]
    target = ids.index(str(conversation_id))
    await pilot.press("home", *["down"] * target, "enter")
    await wait_until(
        pilot,
        lambda: chat(app).conversation is not None and chat(app).conversation.id == conversation_id,
        5,
        f"conversation {conversation_id} to open",
    )


async def test_drafts_follow_their_conversation_and_survive_a_restart(app_dirs, chat_model):
    store = Store()
    older = store.create_conversation("Older")
    store.add_message(older.id, "user", "first question")
    newer = store.create_conversation("Newer")
    store.add_message(newer.id, "user", "second question")

    app = make_app(chat_model, store)
    async with app.run_test(size=(80, 24)) as pilot:
        assert chat(app).conversation.id == newer.id
        await pilot.press(*"for newer")
        await open_from_list(pilot, app, older.id)
        assert prompt_text(app) == ""
        await pilot.press(*"for older")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert chat(app).conversation is None
        assert prompt_text(app) == ""
        await pilot.press(*"brand new")
        await open_from_list(pilot, app, newer.id)
        assert prompt_text(app) == "for newer"
        # Typing on: the draft is written a moment after the last key, before any switch.
        await pilot.press(*" again")
        await wait_until(
            pilot,
            lambda: (d := store.get_draft(newer.id)) is not None and d.text == "for newer again",
            5,
            "the draft to be written after typing stops",
        )
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert prompt_text(app) == "brand new"
        await open_from_list(pilot, app, older.id)
        assert prompt_text(app) == "for older"
        await pilot.press(*" and more")
        await pilot.press("ctrl+q")  # at once: no time for the typing timer

    assert store.get_draft(older.id).text == "for older and more"
    assert store.get_draft(newer.id).text == "for newer again"
    assert store.get_draft(None).text == "brand new"

    # A restart opens the newest conversation with its draft; Ctrl+N has the new one.
    app = make_app(chat_model, store)
    async with app.run_test(size=(80, 24)) as pilot:
        assert chat(app).conversation.id == newer.id
        assert prompt_text(app) == "for newer again"
        assert "Ctrl+N" in str(chat(app).query_one("#status").render())
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert prompt_text(app) == "brand new"
        # Typed keys go after the restored text.
        await pilot.press(*"!")
        assert prompt_text(app) == "brand new!"


async def test_sending_clears_the_draft_and_an_edit_keeps_it_aside(app_dirs, chat_model):
    store = Store()
    app = make_app(chat_model, store)
    async with app.run_test(size=(80, 24)) as pilot:
        # A new conversation: its draft is kept until it is sent, then it is gone.
        await pilot.press(*"Hi")
        await wait_until(
            pilot,
            lambda: (d := store.get_draft(None)) is not None and d.text == "Hi",
            5,
            "the new conversation's draft to be written",
        )
        await pilot.press("enter")
        await wait_until(pilot, lambda: not chat(app).generating, 60, "the reply to finish")
        conversation = chat(app).conversation
        assert conversation is not None
        assert store.get_draft(None) is None
        assert store.get_draft(conversation.id) is None
        assert prompt_text(app) == ""

        # Ctrl+G edits the last message; the draft typed before comes back after.
        await pilot.press(*"later question")
        await pilot.press("ctrl+g")
        assert prompt_text(app) == "Hi"
        await pilot.press("escape")
        assert prompt_text(app) == "later question"
        await pilot.press("ctrl+g", "ctrl+e", *" there")  # ctrl+e: end of line
        assert prompt_text(app) == "Hi there"
        await pilot.press("ctrl+q")

    # Quitting mid-edit keeps the draft, not the message being edited.
    assert store.get_draft(conversation.id).text == "later question"
    user_messages = [m.content for m in store.list_messages(conversation.id) if m.role == "user"]
    assert user_messages == ["Hi"]


def test_deleting_a_conversation_drops_its_draft(app_dirs):
    store = Store()
    doomed = store.create_conversation("Doomed")
    store.add_message(doomed.id, "user", "bye")
    kept = store.create_conversation("Kept")
    store.save_draft(doomed.id, "never sent")
    store.save_draft(kept.id, "stays")
    store.delete_conversation(doomed.id)
    assert store.get_draft(doomed.id) is None
    assert store.get_draft(kept.id).text == "stays"
    # A late write for the deleted conversation (another instance, a timer) is refused.
    store.save_draft(doomed.id, "too late")
    assert store.get_draft(doomed.id) is None
    store.save_draft(kept.id, "   ")
    assert store.get_draft(kept.id) is None


async def test_keys_typed_right_after_switching_panels_land_in_the_prompt(app_dirs, chat_model):
    app = make_app(chat_model)
    async with app.run_test(size=(80, 24)) as pilot:
        # First visit to Imagine: the panel is built while the keys wait.
        burst(app, "f3", *"a castle")
        await wait_until(pilot, lambda: isinstance(app.screen, ImagineScreen), 10, "Imagine")
        await pilot.pause()
        imagine_prompt = app.screen.query_one("#prompt", TextArea)
        assert imagine_prompt.text == "a castle"
        # Back and forth quickly, then type: everything reaches the chat prompt.
        burst(app, "f2", "f3", "f2", *"hello")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), 10, "Chat")
        await pilot.pause()
        assert prompt_text(app) == "hello"
        assert imagine_prompt.text == "a castle"
        assert not chat(app).query_one("#search").value


async def test_sigterm_saves_the_reply_and_the_draft_and_stops_the_engine(app_dirs, chat_model):
    store = Store()
    app = make_app(chat_model, store, max_tokens=2000)  # temperature 0: a long story every time
    handler_before = signal.getsignal(signal.SIGTERM)
    async with app.run_test(size=(80, 24)) as pilot:
        # Without the app's handler, SIGTERM would end pytest itself.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        await pilot.press(*"Write a very long story about a dragon.", "enter")
        await wait_until(pilot, lambda: len(chat(app).reply_text) > 30, 60, "30 characters")
        await pilot.press(*"next question")
        reply_id = chat(app).reply_id
        conversation_id = chat(app).conversation.id
        engine = app.chat_host.pid
        assert engine is not None
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until(pilot, lambda: app.return_code is not None, 10, "the app to exit")
    assert app.return_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == handler_before  # put back on exit
    reply = store.get_message(reply_id)
    assert reply.state == "stopped" and len(reply.content) > 30, reply
    assert store.get_draft(conversation_id).text == "next question"
    assert not app.chat_host.alive
    with pytest.raises(ProcessLookupError):
        os.kill(engine, 0)
