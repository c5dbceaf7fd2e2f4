"""The Models panel's Servers tab (4) under Pilot, against llama-cpp-python's own
OpenAI-compatible server, a port nobody listens on and a server that never answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.test_remote_chat import free_port, llama_server, silent_server  # noqa: F401 - fixtures
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.models import ModelsScreen
from tui.services.settings import SettingsService
from tui.store import Store

SIZE = (80, 24)


def status_of(screen: ModelsScreen, name: str, model: str = "") -> str:
    return str(screen.query_one("DataTable").get_cell(f"server:{name}/{model}", "status"))


async def type_text(pilot, text: str) -> None:
    for char in text:
        await pilot.press(char if char != " " else "space")


@pytest.mark.slow
async def test_servers_tab_checks_picks_adds_and_removes(
    llama_server: str,  # noqa: F811 - the fixture
    silent_server: int,  # noqa: F811
    app_dirs: Path,
    tmp_path: Path,
) -> None:
    SettingsService().update(
        servers={
            "box": {"url": llama_server},
            "gone": {"url": f"http://127.0.0.1:{free_port()}/v1"},
            "mute": {"url": f"http://127.0.0.1:{silent_server}/v1", "timeout_s": 4},
        }
    )
    app = TriptychApp(settings=Settings.load(), store=Store(tmp_path / "t.db"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5", "4")
        screen = app.screen
        assert isinstance(screen, ModelsScreen) and screen.modality == "servers"
        await wait_until(
            pilot, lambda: status_of(screen, "box").startswith("reachable"), what="box checked"
        )
        await wait_until(
            pilot, lambda: "connection refused" in status_of(screen, "gone"), what="gone checked"
        )
        # The silent server is still being asked, off the event loop: keys still work.
        assert status_of(screen, "mute") == "checking…"
        await pilot.press("1")
        assert screen.modality == "chat"
        await pilot.press("4")
        assert status_of(screen, "mute") == "checking…"
        model = next(m for n, m in screen.server_rows if n == "box" and m)
        assert model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
        assert status_of(screen, "box") == "reachable, 1 model"
        # Enter on a server's model makes it the default chat model, saved.
        screen.query_one("DataTable").move_cursor(row=screen.server_rows.index(("box", model)))
        await pilot.press("enter")
        await pilot.pause()
        assert app.settings.chat_model == f"server:box/{model}"
        assert Settings.load().chat_model == f"server:box/{model}"
        assert status_of(screen, "box", model) == "default chat"
        # a asks name, URL and key variable; the new server is checked at once.
        await pilot.press("a")
        await type_text(pilot, "extra")
        await pilot.press("enter")
        await type_text(pilot, llama_server)
        await pilot.press("enter")
        await type_text(pilot, "EXTRA_KEY_UNSET")
        await pilot.press("enter")
        await pilot.pause()
        assert Settings.load().servers["extra"] == {
            "url": llama_server,
            "api_key_env": "EXTRA_KEY_UNSET",
        }
        await wait_until(
            pilot,
            lambda: (
                "EXTRA_KEY_UNSET" in status_of(screen, "extra")
                and "not set" in status_of(screen, "extra")
            ),
            what="extra checked",
        )
        # A bad URL is refused in one line and not saved.
        await pilot.press("a")
        await type_text(pilot, "bad")
        await pilot.press("enter")
        await type_text(pilot, "localhost:1")
        await pilot.press("enter", "enter")
        await pilot.pause()
        assert "bad" not in Settings.load().servers
        # Delete removes the highlighted server after asking.
        screen.query_one("DataTable").move_cursor(row=screen.server_rows.index(("gone", "")))
        await pilot.press("delete")
        await pilot.press("y")
        await pilot.pause()
        assert "gone" not in Settings.load().servers
        assert ("gone", "") not in screen.server_rows
        # At 80x24 the tab and the status column fit on screen.
        tab = screen.query_one("#tab-servers").region
        assert tab.width > 0 and tab.right <= SIZE[0]
        assert screen.query_one("DataTable").region.right <= SIZE[0]
        await wait_until(
            pilot,
            lambda: "did not answer within 4 s" in status_of(screen, "mute"),
            timeout=15,
            what="the silent server's timeout",
        )
