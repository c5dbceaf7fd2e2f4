"""F6 in the Chat panel, driven with Pilot: the real SmolLM2 model and real SQLite."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.helpers import wait_until
from tests.test_chat_screen import chat, last_reply_id, last_view, make_app, send, wait_reply
from tui.screens.attach_file import AttachFileScreen
from tui.widgets.attachment_bar import AttachmentBar
from tui.widgets.message_log import MessageLog

pytestmark = pytest.mark.slow

QUESTION = "Name the capital city of France."


def plain(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def bar_text(app) -> str:
    return str(app.screen.query_one(AttachmentBar).render())


async def test_attach_send_and_find_it_after_a_restart(app_dirs, chat_model, tmp_path):
    notes = tmp_path / "travel-notes.txt"
    notes.write_text("Pack the blue umbrella.\nCafé at nine.\n", encoding="utf-8")
    app = make_app(chat_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, AttachFileScreen), 5, "the dialog")
        # Tab completes the path from its start.
        await pilot.press(*str(tmp_path / "trav"))
        await pilot.press("tab")
        field = app.screen.query_one("#attach-path")
        assert field.value == str(notes)
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(chat(app).service.attachments.pending), 60, "a chip")
        text = bar_text(app)
        tokens = chat(app).service.attachments.pending[0].tokens
        assert f"📎 travel-notes.txt · {tokens:,} tok" in text
        assert "tokens left of 2,048" in text
        before = last_reply_id(app)
        await send(pilot, QUESTION)
        await wait_reply(pilot, app, before)
        user = last_view(app, "user").data
        assert [a.line() for a in user.attachments] == [
            f"📎 travel-notes.txt — text, {tokens:,} tokens"
        ]
        assert not chat(app).service.attachments.pending
        assert "travel-notes.txt" not in bar_text(app)
        # o on the selected message shows the attached text.
        log = app.screen.query_one(MessageLog)
        log.focus()
        log.selected = log.views.index(last_view(app, "user"))
        await pilot.press("o")
        assert last_view(app, "user").data.expanded
        shown = plain(last_view(app, "user")._renderable())
        assert "📎 travel-notes.txt — text," in shown and "Pack the blue umbrella." in shown
        await pilot.press("o")
        assert "Pack the blue umbrella." not in plain(last_view(app, "user")._renderable())

    again = make_app(chat_model)
    async with again.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: bool(again.screen.query(MessageLog)), 10, "the log")
        await wait_until(
            pilot,
            lambda: any(v.data.attachments for v in again.screen.query_one(MessageLog).views),
            10,
            "the stored attachment",
        )
        user = last_view(again, "user").data
        assert user.attachments[0].name == "travel-notes.txt"
        assert "Pack the blue umbrella." in user.attachments[0].content


async def test_a_refused_file_says_why_and_shift_f6_removes_a_chip(app_dirs, chat_model, tmp_path):
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n")
    app = make_app(chat_model)
    async with app.run_test(size=(80, 24)) as pilot:
        for path in (binary, notes):
            await pilot.press("f6")
            await wait_until(pilot, lambda: isinstance(app.screen, AttachFileScreen), 5, "dialog")
            app.screen.query_one("#attach-path").value = str(path)
            await pilot.press("enter")
            await wait_until(pilot, lambda: not chat(app).attaching, 60, "the attachment")
            await pilot.pause()
            if path == binary:
                assert "image.png is a binary file" in bar_text(app)
                assert not chat(app).service.attachments.pending
        assert "📎 notes.md" in bar_text(app)
        await pilot.press("shift+f6")
        await pilot.pause()
        assert not chat(app).service.attachments.pending
        assert "removed notes.md" in bar_text(app)
        # Sending a message clears the old notice.
        before = last_reply_id(app)
        await send(pilot, QUESTION)
        await wait_reply(pilot, app, before)
        assert "removed notes.md" not in bar_text(app)
        assert not app.screen.query_one(AttachmentBar).has_class("-shown")


async def test_attachments_alone_are_sent_without_typed_text(app_dirs, chat_model, tmp_path):
    notes = tmp_path / "shopping.txt"
    notes.write_text("Buy apples and bread.\n", encoding="utf-8")
    app = make_app(chat_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, AttachFileScreen), 5, "dialog")
        app.screen.query_one("#attach-path").value = str(notes)
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(chat(app).service.attachments.pending), 60, "a chip")
        before = last_reply_id(app)
        await send(pilot, "")
        await wait_reply(pilot, app, before)
        user = last_view(app, "user").data
        assert [a.name for a in user.attachments] == ["shopping.txt"]
        assert chat(app).service.conversation.title.startswith("shopping.txt")
        # With nothing attached, an empty prompt still sends nothing.
        count = len(app.screen.query_one(MessageLog).views)
        await send(pilot, "   ")
        await pilot.pause()
        assert len(app.screen.query_one(MessageLog).views) == count
