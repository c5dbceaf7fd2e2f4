"""Many conversations: the list loads a page at a time; search still finds old ones.
Workers of the Chat screen that raise reset their state and say so. Pilot, real SQLite,
no model run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tui.app import TriptychApp
from tui.engines import protocol as p
from tui.screens.chat import ChatScreen
from tui.services.chat import PAGE_SIZE
from tui.store import Store
from tui.widgets.conversation_list import ConversationList

CONVERSATIONS = 3 * PAGE_SIZE + 7
OLDEST_WORD = "quetzalcoatl"


def fill(path: Path, conversations: int) -> None:
    """Conversations 1..n, the newest last, two messages each; the oldest mentions OLDEST_WORD."""
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO conversations (title, created, updated, sampling) VALUES (?, ?, ?, ?)",
            [(f"chat {i}", 1000.0 + i, 1000.0 + i, json.dumps({})) for i in range(conversations)],
        )
        rows = []
        for cid in range(1, conversations + 1):
            question = f"question {cid}" + (f" about {OLDEST_WORD}" if cid == 1 else "")
            rows += [(cid, "user", question, 1.0, 1.0), (cid, "assistant", f"answer {cid}", 1, 1)]
        conn.executemany(
            "INSERT INTO messages (conversation_id, role, content, created, updated)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def listed(listing: ConversationList) -> list[str]:
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]


async def test_the_list_loads_a_page_at_a_time(app_dirs: Path, chat_model: Path) -> None:
    path = app_dirs / "data" / "triptych.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    fill(path, CONVERSATIONS)
    app = TriptychApp(chat_model=str(chat_model), store=Store(path))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        listing = screen.query_one(ConversationList)
        # Only the first page is built at start: the newest conversations, newest first.
        assert listing.option_count == PAGE_SIZE
        assert listed(listing)[:2] == [f"chat {CONVERSATIONS - 1}", f"chat {CONVERSATIONS - 2}"]
        assert screen.conversation is not None and screen.conversation.id == CONVERSATIONS

        # End goes to the end of what is loaded, which loads the next page.
        await pilot.press("ctrl+l", "end")
        await wait_until(pilot, lambda: listing.option_count == 2 * PAGE_SIZE, 5, "page 2")
        # Scrolling to the end (the mouse wheel's way) loads the one after.
        listing.scroll_end(animate=False)
        await wait_until(pilot, lambda: listing.option_count == 3 * PAGE_SIZE, 5, "page 3")
        await pilot.press("end")
        await wait_until(pilot, lambda: listing.option_count == CONVERSATIONS, 5, "the rest")
        names = listed(listing)
        assert names == [f"chat {i}" for i in reversed(range(CONVERSATIONS))], "no gap, no repeat"
        await pilot.press("end")
        await pilot.pause()
        assert listing.option_count == CONVERSATIONS and not listing.more

        # A reply's end lists again: the pages loaded stay loaded.
        screen.refresh_list()
        assert listing.option_count == CONVERSATIONS

        # Search reaches the oldest conversation, never loaded in the first page.
        await pilot.press("ctrl+f", *OLDEST_WORD)
        await wait_until(pilot, lambda: listed(listing) == ["chat 0"], 5, "the search")
        await pilot.press("enter", "enter")
        await wait_until(
            pilot, lambda: screen.conversation is not None and screen.conversation.id == 1, 5
        )


async def test_a_dictation_worker_that_raises_is_reported(
    app_dirs: Path, chat_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = TriptychApp(chat_model=str(chat_model))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)

        def broken_submit(request: Any) -> Any:
            raise RuntimeError("speech engine pipe closed")

        monkeypatch.setattr(app.speech_host, "submit", broken_submit)
        told: list[str] = []
        monkeypatch.setattr(app, "notify", lambda message, **kwargs: told.append(message))
        status = screen.query_one("#status")
        screen._set_status("Transcribing your dictation…")
        screen._run_dictation(p.TranscribeRequest(model_path="x", audio_path=str(tmp_path)))
        await wait_until(pilot, lambda: str(status.render()) == "", 5, "the status reset")
        assert told == ["Dictation failed: speech engine pipe closed"]


def test_store_pages_join_to_the_whole_list(tmp_path: Path) -> None:
    path = tmp_path / "triptych.db"
    fill(path, 23)
    with Store(path) as store:
        for search in ("", "question", "answer 1"):
            whole = [c.id for c in store.list_conversations(search)]
            pages: list[int] = []
            last = None
            while page := store.list_conversations(search, limit=5, after=last):
                assert len(page) <= 5
                pages += [c.id for c in page]
                last = page[-1]
            assert pages == whole and whole, search
        # A conversation added meanwhile goes to the top, not into the next page.
        first = store.list_conversations(limit=5)
        store.create_conversation("newest")
        second = store.list_conversations(limit=5, after=first[-1])
        assert second[0].id == first[-1].id - 1
