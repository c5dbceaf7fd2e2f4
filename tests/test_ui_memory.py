"""The TUI keeps nothing across panel switches, and a cleared prompt forgets its paste."""

from __future__ import annotations

import gc

from textual import events
from textual.dom import DOMNode

from tui.app import TriptychApp
from tui.widgets.prompt_input import PromptInput

PANEL_KEYS = ("f2", "f3", "f4", "f5")


def live_nodes() -> int:
    gc.collect()
    return sum(isinstance(o, DOMNode) for o in gc.get_objects())


async def test_panel_switches_leave_no_widgets_behind(app_dirs) -> None:
    app = TriptychApp()
    async with app.run_test(size=(80, 24)) as pilot:
        counts = []
        for _ in range(3):
            for key in PANEL_KEYS * 6:
                await pilot.press(key)
            await pilot.pause()
            counts.append(live_nodes())
    # The first round mounts every panel; later rounds only switch between them. Each
    # switch recomposes the footer (about 15 keys): kept keys would add hundreds.
    assert counts[2] - counts[1] <= 5, counts


async def test_a_cleared_prompt_forgets_the_paste(app_dirs) -> None:
    app = TriptychApp()
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.screen.query_one(PromptInput)
        prompt.focus()
        await pilot.pause()
        pasted = "pasted line of text\n" * 5_000
        app.post_message(events.Paste(pasted))  # as the terminal delivers a paste
        await pilot.pause()
        assert prompt.text == pasted
        prompt.clear()  # what the chat does once the message is sent
        prompt.action_undo()
        await pilot.pause()
        assert prompt.text == ""
