"""Imagine from the chat, without Textual: real SmolLM2 writes the prompt, the
random-weight SD fixture draws it, real SQLite keeps it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sd_fixtures import fixture
from tui.engines.host import EngineHost
from tui.imaging import ImageParams
from tui.services import chat_imagine as ci
from tui.services import imagine as svc
from tui.services.chat import ChatError, ChatService
from tui.services.imagine import ImagineService
from tui.services.settings import SettingsService
from tui.store import Message, Store


@pytest.fixture
def settings_service(app_dirs: Path) -> SettingsService:
    service = SettingsService(app_dirs / "config" / "config.toml")
    service.update(threads=2)
    return service


@pytest.fixture
def store(app_dirs: Path) -> Iterator[Store]:
    with Store(app_dirs / "data" / "triptych.db") as opened:
        yield opened


def tiny_params() -> ImageParams:
    """What the Imagine panel's form would hold for the fixture model."""
    return ImageParams(
        prompt="", model=str(fixture("image-model")), width=64, height=64, steps=2, cfg_scale=1.0
    )


def lighthouse(service: ChatService) -> tuple[Message, Message]:
    conversation = service.create()
    store = service.store
    user = store.add_message(conversation.id, "user", "Describe a lighthouse at night.")
    reply = store.add_message(
        conversation.id,
        "assistant",
        "A tall white lighthouse stands on black rocks. Its beam sweeps over a stormy sea "
        "under a starry sky.",
    )
    return user, reply


def message(id: int, role: str, content: str) -> Message:
    return Message(id, 1, role, content, "complete", 0.0, 0.0, None)


# --- without a model ------------------------------------------------------------------


def test_the_model_answer_is_cleaned_to_one_prompt() -> None:
    assert ci.clean_prompt('Prompt: "A lighthouse at night, stormy sea."') == (
        "A lighthouse at night, stormy sea."
    )
    assert ci.clean_prompt("Here is the image prompt:\n\nfoggy harbour\nat dawn\n\nWhy: x") == (
        "foggy harbour at dawn"
    )
    assert ci.clean_prompt("  \n ") == "" and ci.clean_prompt('""') == ""
    assert "\x1b" not in ci.clean_prompt("red \x1b[2J sky")
    assert len(ci.clean_prompt("word " * 200)) <= ci.PROMPT_MAX_CHARS


def test_the_exchange_is_the_last_one_or_the_chosen_message() -> None:
    talk = [
        message(1, "user", "Hi"),
        message(2, "assistant", "Hello!"),
        message(3, "user", "A castle?"),
        message(4, "assistant", "A castle on a hill."),
        message(5, "image", "castle"),
    ]
    assert [m.id for m in ci.exchange_for(talk) if m] == [3, 4]
    assert [m.id for m in ci.exchange_for(talk, 2) if m] == [1, 2]
    assert [m.id for m in ci.exchange_for(talk, 3) if m] == [3, 4]
    assert ci.exchange_for(talk[:1]) == (talk[0], None)
    assert ci.fallback_prompt(talk[2], talk[3]) == "A castle on a hill."
    assert ci.first_sentence("One thing. Another.") == "One thing."


def test_image_messages_are_not_sent_to_the_chat_model(
    store: Store, settings_service: SettingsService, chat_model: Path
) -> None:
    chat = ChatService(
        store, EngineHost("chat"), lambda: settings_service.current, lambda: str(chat_model)
    )
    chat.create()
    assert chat.conversation is not None
    store.add_message(chat.conversation.id, "user", "Describe a lighthouse.")
    store.add_message(chat.conversation.id, "assistant", "A white tower.")
    store.add_message(chat.conversation.id, "image", "a white tower", image_id=None)
    store.add_message(chat.conversation.id, "user", "Now a boat.")
    sent = [m for m in chat.build_request().messages if m.role != "system"]
    assert [(m.role, m.content) for m in sent] == [
        ("user", "Describe a lighthouse."),
        ("assistant", "A white tower."),
        ("user", "Now a boat."),
    ]
    # Regenerating drops what followed the last user message, image messages included.
    store.add_message(chat.conversation.id, "image", "a boat", image_id=None)
    assert chat.drop_after_last_user() is not None
    assert [m.role for m in store.list_messages(chat.conversation.id)][-1] == "user"


def test_without_an_image_model_nothing_is_sent_or_drawn(
    store: Store, settings_service: SettingsService, chat_model: Path
) -> None:
    class UnusedHost:
        """A stand-in that fails the test if the chat model is asked anything."""

        def submit(self, request: Any) -> Any:
            raise AssertionError("no request may be sent without an image model")

        def cancel(self) -> None: ...

    chat = ChatService(store, UnusedHost(), lambda: settings_service.current, lambda: "x")
    lighthouse(chat)
    image_host = EngineHost("image")
    imagine = ImagineService(image_host, store, settings_service)
    service = ci.ChatImagine(chat, imagine)
    with pytest.raises(ChatError) as raised:
        service.check_image_model()
    assert str(raised.value) == ci.NO_IMAGE_MODEL
    assert chat.conversation is not None
    with pytest.raises(ChatError, match="No image model"):
        service.generate(chat.conversation.id, "a lighthouse")
    settings_service.update(image_model="/nonexistent/model.safetensors")
    with pytest.raises(ChatError, match="No image model: press F5.*not found"):
        service.check_image_model()
    assert store.list_images() == [] and not image_host.alive
    assert [m.role for m in store.list_messages(chat.conversation.id)] == ["user", "assistant"]


# --- with the real models ---------------------------------------------------------------


@pytest.mark.slow
def test_smollm_writes_a_prompt_and_the_fixture_draws_it_into_the_chat(
    store: Store, settings_service: SettingsService, chat_model: Path, app_dirs: Path
) -> None:
    chat_host = EngineHost("chat")
    image_host = EngineHost("image")
    chat = ChatService(store, chat_host, lambda: settings_service.current, lambda: str(chat_model))
    imagine = ImagineService(image_host, store, settings_service)
    service = ci.ChatImagine(chat, imagine, tiny_params)
    events: list[Any] = []
    service.subscribe(events.append)
    try:
        user, reply = lighthouse(chat)
        written = service.write_prompt()
        assert written.text and "\n" not in written.text
        assert len(written.text) <= ci.PROMPT_MAX_CHARS
        # "Imagine this" on the reply writes from the same exchange.
        assert service.write_prompt(reply.id).text

        assert chat.conversation is not None
        stored = service.generate(chat.conversation.id, written.text)
        assert stored is not None and stored.role == "image"
        assert stored.content == written.text and stored.image_id is not None
        record = store.get_image(stored.image_id)
        assert record is not None and Path(record.path).is_file()
        assert record.params["prompt"] == written.text and record.params["steps"] == 2
        assert (record.width, record.height) == (64, 64)
        assert ci.image_path(store, stored.image_id) == record.path
        kinds = [type(e) for e in events]
        assert svc.StepDone in kinds and svc.ImageSaved in kinds
        assert kinds[-1] is ci.ImageMessageAdded
        roles = [m.role for m in store.list_messages(chat.conversation.id)]
        assert roles == ["user", "assistant", "image"]
        # The next reply's request leaves the image out.
        assert [m.role for m in chat.build_request().messages][-2:] == ["user", "assistant"]
    finally:
        chat_host.shutdown()
        image_host.shutdown()


# --- the Chat panel under Pilot ---------------------------------------------------------


async def use_tiny_image_settings(pilot: Any, app: Any) -> None:
    """Fill the Imagine panel's form as a user would: the fixture model, 64x64, 2 steps."""
    from textual.widgets import Input

    await pilot.press("f3")
    await pilot.pause()
    for name, value in (
        ("model", str(fixture("image-model"))),
        ("width", "64"),
        ("height", "64"),
        ("steps", "2"),
        ("cfg_scale", "1"),
    ):
        app.screen.query_one(f"#{name}", Input).value = value
    await pilot.press("f2")
    await pilot.pause()


def image_views(app: Any) -> list[Any]:
    from tui.widgets.message_log import ImageMessageView, MessageLog

    return list(app.screen.query_one(MessageLog).query_children(ImageMessageView))


def prompt_dialog_ready(app) -> bool:
    """The F7 dialog is up with its input mounted (a busy machine composes it later)."""
    from tui.screens.imagine_prompt import ImaginePromptScreen
    from tui.widgets.prompt_input import PromptInput

    return isinstance(app.screen, ImaginePromptScreen) and bool(app.screen.query(PromptInput))


@pytest.mark.slow
async def test_f7_draws_the_chat_into_the_log_and_it_stays_after_a_restart(
    app_dirs: Path, chat_model: Path
) -> None:
    from tests.helpers import wait_until
    from tui.app import TriptychApp
    from tui.widgets.chat_image import ChatImage
    from tui.widgets.message_log import MessageLog
    from tui.widgets.prompt_input import PromptInput

    with Store() as seed:
        conversation = seed.create_conversation("Lighthouse")
        seed.add_message(conversation.id, "user", "Describe a lighthouse at night.")
        seed.add_message(
            conversation.id,
            "assistant",
            "A tall white lighthouse stands on black rocks. Its beam sweeps over a stormy sea.",
        )
    app = TriptychApp(chat_model=str(chat_model))
    async with app.run_test(size=(80, 24)) as pilot:
        await use_tiny_image_settings(pilot, app)
        await pilot.press("f7")
        await wait_until(pilot, lambda: prompt_dialog_ready(app), 60, "the prompt dialog")
        written = app.screen.query_one(PromptInput).text
        assert written.strip() and "\n" not in written
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: bool(image_views(app)) and image_views(app)[-1].data.state == "complete",
            120,
            "the image message",
        )
        view = image_views(app)[-1]
        await pilot.pause()
        picture = view.query_one(ChatImage)
        assert picture.path and Path(picture.path).is_file()
        assert view.data.content == written.strip()
        assert view.region.height <= 14  # header, at most ~12 rows of picture, caption
        stored = app.store.get_message(view.data.id)
        assert stored is not None and stored.role == "image" and stored.image_id is not None
        path = picture.path

        # "Imagine this" on a selected message; Esc in the dialog cancels.
        log = app.screen.query_one(MessageLog)
        log.focus()
        await pilot.press("up", "up")
        assert log.selected_message() is not None
        assert log.selected_message().role == "assistant"
        await pilot.press("f7")
        await wait_until(pilot, lambda: prompt_dialog_ready(app), 60, "the prompt dialog")
        await pilot.press("escape")
        await pilot.pause()
        assert "cancelled" in str(app.screen.query_one("#status").render())
        assert len(app.store.list_images()) == 1

    again = TriptychApp(chat_model=str(chat_model))
    async with again.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        views = image_views(again)
        assert len(views) == 1 and views[0].query_one(ChatImage).path == path

    Path(path).unlink()
    third = TriptychApp(chat_model=str(chat_model))
    async with third.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        caption = str(image_views(third)[0].query_one(".-caption").render())
        assert caption.startswith("[image missing: ")


@pytest.mark.slow
async def test_f7_without_an_image_model_says_how_to_get_one(
    app_dirs: Path, chat_model: Path
) -> None:
    from tui.app import TriptychApp

    with Store() as seed:
        conversation = seed.create_conversation("Lighthouse")
        seed.add_message(conversation.id, "user", "Describe a lighthouse at night.")
        seed.add_message(conversation.id, "assistant", "A white tower.")
    app = TriptychApp(chat_model=str(chat_model))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f7")
        await pilot.pause()
        assert str(app.screen.query_one("#status").render()) == ci.NO_IMAGE_MODEL
        assert not app.chat_host.alive and app.store.list_images() == []


@pytest.mark.slow
async def test_escape_stops_the_drawing_and_keeps_nothing(app_dirs: Path, chat_model: Path) -> None:
    from textual.widgets import Input

    from tests.helpers import wait_until
    from tui.app import TriptychApp

    with Store() as seed:
        conversation = seed.create_conversation("Lighthouse")
        seed.add_message(conversation.id, "user", "Describe a lighthouse at night.")
        seed.add_message(conversation.id, "assistant", "A white tower on black rocks.")
    app = TriptychApp(chat_model=str(chat_model))
    async with app.run_test(size=(80, 24)) as pilot:
        await use_tiny_image_settings(pilot, app)
        await pilot.press("f3")
        await pilot.pause()
        for name, value in (("width", "512"), ("height", "512"), ("steps", "20")):
            app.screen.query_one(f"#{name}", Input).value = value  # long enough to stop
        await pilot.press("f2")
        await pilot.pause()
        await pilot.press("f7")
        await wait_until(pilot, lambda: prompt_dialog_ready(app), 60, "the prompt dialog")
        await pilot.press("enter")
        screen = app.screen
        await wait_until(
            pilot,
            lambda: getattr(screen, "imagine_phase", "") == "drawing" and app.image_host.busy,
            60,
            "the drawing to start",
        )
        assert len(image_views(app)) == 1  # the placeholder
        await pilot.press("escape")
        took = await wait_until(
            pilot, lambda: screen.imagine_phase == "", 10, "the drawing to stop"
        )
        assert took < 5
        await pilot.pause()
        assert image_views(app) == []
        assert app.store.list_images() == []
        roles = [m.role for m in app.store.list_messages(conversation.id)]
        assert roles == ["user", "assistant"]
