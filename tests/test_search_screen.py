"""Search everything, export and import in the TUI, driven with Pilot on the real store."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Input

from tests.helpers import wait_until
from tests.test_exchange import png_bytes
from tui.app import TriptychApp
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import TextPromptScreen
from tui.screens.gallery import GalleryScreen
from tui.screens.listen import ListenScreen
from tui.screens.search import SearchScreen
from tui.store import Store
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message_log import WINDOW, MessageLog

SIZE = (110, 36)


def fill(store: Store, tmp_path: Path) -> dict[str, int]:
    """One long conversation (its first message beyond the shown window), a newer one,
    a recording with a transcript and a gallery image."""
    holiday = store.create_conversation(title="Holiday")
    first = store.add_message(holiday.id, "user", "pack the needle-msg kit")
    for index in range(WINDOW + 5):
        store.add_message(holiday.id, "assistant" if index % 2 else "user", f"filler {index}")
    carrier = store.add_message(holiday.id, "user", "see attached")
    store.add_attachment(carrier.id, "list \x1b[31m.txt", "text", "the needle-att list")
    store.create_conversation(title="Newest")
    record = store.add_recording(str(tmp_path / "memo.wav"), "Memo", duration_s=3.0)
    store.update_recording(
        record.id, transcript=[{"start_s": 0.0, "end_s": 1.0, "text": "say needle-rec now"}]
    )
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes())
    image = store.add_image(
        str(picture), {"prompt": "a needle-img lighthouse"}, seed=3, width=16, height=8
    )
    for number in range(3):  # newer images: the one found is not the first in the gallery
        store.add_image(
            str(picture), {"prompt": f"other {number}"}, seed=number, width=16, height=8
        )
    return {
        "holiday": holiday.id,
        "first": first.id,
        "carrier": carrier.id,
        "recording": record.id,
        "image": image.id,
    }


async def search_for(pilot, app: TriptychApp, query: str) -> None:  # noqa: ANN001 - Pilot
    await wait_until(pilot, lambda: isinstance(app.screen, SearchScreen), 5, "the search")
    screen = app.screen
    assert isinstance(screen, SearchScreen)
    await pilot.press(*query)
    await wait_until(pilot, lambda: screen.searched == query and screen.hits, 10, query)
    await pilot.press("enter")
    await wait_until(pilot, lambda: not isinstance(app.screen, SearchScreen), 5, "closed")


def chat_selected(app: TriptychApp) -> int | None:
    screen = app.get_screen("chat") if app.current_mode != "chat" else app.screen
    if not isinstance(screen, ChatScreen):
        return None
    log = screen.query_one(MessageLog)
    if log.selected is None:
        return None
    return log.views[log.selected].data.id


async def test_search_opens_each_kind_where_it_lives(
    app_dirs: Path, chat_model: Path, tmp_path: Path
) -> None:
    store = Store(app_dirs / "data" / "triptych.db")
    ids = fill(store, tmp_path)
    app = TriptychApp(chat_model=str(chat_model), store=store)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        # "/" in the conversation list; the message found lies before the window shown.
        await pilot.press("ctrl+l", "slash")
        await search_for(pilot, app, "needle-msg")
        await wait_until(pilot, lambda: chat_selected(app) == ids["first"], 10, "the message")
        assert chat.conversation is not None and chat.conversation.id == ids["holiday"]

        # The palette's command opens the same search; an attachment opens its message.
        app.action_search_everything()
        await search_for(pilot, app, "needle-att")
        await wait_until(pilot, lambda: chat_selected(app) == ids["carrier"], 10, "attachment")

        app.action_search_everything()
        await search_for(pilot, app, "needle-rec")
        await wait_until(pilot, lambda: isinstance(app.screen, ListenScreen), 10, "Listen")
        listen = app.screen
        assert isinstance(listen, ListenScreen)
        await wait_until(
            pilot,
            lambda: (
                (listen.selected() or None) is not None and listen.selected().id == ids["recording"]
            ),  # type: ignore[union-attr]
            10,
            "the recording",
        )

        app.action_search_everything()
        await search_for(pilot, app, "needle-img")
        await wait_until(pilot, lambda: isinstance(app.screen, GalleryScreen), 10, "gallery")
        gallery = app.screen
        assert isinstance(gallery, GalleryScreen)
        assert gallery.selected() is not None and gallery.selected().id == ids["image"]  # type: ignore[union-attr]


async def test_search_results_are_plain_text(app_dirs: Path, chat_model: Path) -> None:
    store = Store(app_dirs / "data" / "triptych.db")
    conversation = store.create_conversation(title="[b]bold[/b] \x1b]52;c;QUJD\x07")
    store.add_message(conversation.id, "user", "hostile [red]markup[/red] \x1b[2J here")
    app = TriptychApp(chat_model=str(chat_model), store=store)
    async with app.run_test(size=SIZE) as pilot:
        app.action_search_everything()
        await wait_until(pilot, lambda: isinstance(app.screen, SearchScreen), 5)
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        await pilot.press(*"markup")
        await wait_until(pilot, lambda: len(screen.hits) == 1, 10, "the hit")
        shown = str(screen.query_one("#search-results").get_option_at_index(0).prompt)  # type: ignore[attr-defined]
        assert "\x1b" not in shown and "␛" in shown
        assert "[red]markup[/red]" in shown and "[b]bold[/b]" in shown
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), 5)


async def test_export_from_the_list_and_import_from_the_palette(
    app_dirs: Path, chat_model: Path, tmp_path: Path
) -> None:
    store = Store(app_dirs / "data" / "triptych.db")
    conversation = store.create_conversation(title="Paris question")
    store.add_message(conversation.id, "user", "Name the capital city of France.")
    store.add_message(conversation.id, "assistant", "Paris.")
    app = TriptychApp(chat_model=str(chat_model), store=store)
    target = tmp_path / "exports" / "paris.json"
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        await pilot.press("ctrl+l", "down")
        listing = chat.query_one(ConversationList)
        await wait_until(pilot, lambda: listing.highlighted is not None, 5)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5, "dialog")
        field = app.screen.query_one(Input)
        assert field.value.endswith(f"triptych-{conversation.id}-paris-question.md")
        field.value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, target.is_file, 10, "the export")
        assert json.loads(target.read_text())["title"] == "Paris question"

        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert {"Search everything", "Import conversation (JSON)", "Export conversation"} <= set(
            titles
        )
        app.action_import_conversation()
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5, "dialog")
        # Tab completes the path as far as it is unambiguous.
        app.screen.query_one(Input).value = str(target.parent / "pa")
        await pilot.press("tab")
        assert app.screen.query_one(Input).value == str(target)
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: chat.conversation is not None and chat.conversation.id != conversation.id,
            10,
            "the imported conversation",
        )
        assert chat.conversation is not None and chat.conversation.title == "Paris question"
        shown = [view.data.content for view in chat.query_one(MessageLog).views]
        assert shown == ["Name the capital city of France.", "Paris."]

        # A broken file: one notification, nothing imported.
        broken = tmp_path / "broken.json"
        broken.write_text("{nope")
        app.action_import_conversation()
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), 5, "dialog")
        app.screen.query_one(Input).value = str(broken)
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: not any(w.group == "exchange" and w.is_running for w in app.workers),
            10,
            "the import to end",
        )
        assert len(store.list_conversations()) == 2

    sections = {entry.binding_id for s in app.key_sections() for entry in s.entries}
    assert {"list.export", "list.search_all"} <= sections
