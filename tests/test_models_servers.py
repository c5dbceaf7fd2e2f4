"""The Models panel's Servers tab (4) under Pilot, against llama-cpp-python's own
OpenAI-compatible server, `triptych serve` with a model per modality, a port nobody
listens on and a server that never answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import sd_fixtures
import speech_fixtures
from textual.widgets import Input

from tests.helpers import wait_until
from tests.test_remote_chat import free_port, llama_server, silent_server  # noqa: F401 - fixtures
from tests.test_serve import Server
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.modality_choice import ModalityChoiceScreen
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
        # Enter on a server's model, then c, makes it the default chat model, saved.
        screen.query_one("DataTable").move_cursor(row=screen.server_rows.index(("box", model)))
        await pilot.press("enter", "c")
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


def notices(app: TriptychApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_escape_at_any_step_of_adding_a_server_adds_nothing(
    app_dirs: Path, tmp_path: Path
) -> None:
    app = TriptychApp(settings=Settings.load(), store=Store(tmp_path / "t.db"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5", "4")
        screen = app.screen
        assert isinstance(screen, ModelsScreen) and screen.modality == "servers"
        url = f"http://127.0.0.1:{free_port()}/v1"
        for answers in ([], ["box"], ["box", url]):
            await pilot.press("a")
            for answer in answers:
                await type_text(pilot, answer)
                await pilot.press("enter")
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen, answers
            assert Settings.load().servers == {} and app.settings.servers == {}, answers
            assert screen.server_rows == [], answers
        assert notices(app).count("Server not added") == 3
        # Enter on an empty key line still adds the server, without a key.
        await pilot.press("a")
        await type_text(pilot, "box")
        await pilot.press("enter")
        await type_text(pilot, url)
        await pilot.press("enter", "enter")
        await pilot.pause()
        assert Settings.load().servers == {"box": {"url": url}}


@pytest.mark.slow
async def test_a_server_model_becomes_the_default_of_the_chosen_modality(
    chat_model: Path, app_dirs: Path, tmp_path: Path
) -> None:
    image_model = sd_fixtures.fixture("image-model")
    speech_model = speech_fixtures.whisper_model()
    server = Server(
        "--model", str(chat_model),
        env={"TRIPTYCH_IMAGE_MODEL": str(image_model),
             "TRIPTYCH_SPEECH_MODEL": str(speech_model)},
    )  # fmt: skip
    try:
        SettingsService().update(
            servers={"box": {"url": server.base_url}}, image_vae="/models/vae.safetensors"
        )
        app = TriptychApp(settings=Settings.load(), store=Store(tmp_path / "t.db"))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f5", "4")
            screen = app.screen
            assert isinstance(screen, ModelsScreen)
            await wait_until(
                pilot, lambda: status_of(screen, "box") == "reachable, 3 models", what="box"
            )
            table = screen.query_one("DataTable")

            async def choose(model: str, key: str) -> None:
                table.move_cursor(row=screen.server_rows.index(("box", model)))
                await pilot.press("enter")
                assert isinstance(app.screen, ModalityChoiceScreen)
                await pilot.press(key)
                await pilot.pause()
                assert app.screen is screen

            await choose(image_model.name, "i")
            await choose(speech_model.name, "l")
            await choose(chat_model.name, "c")
            # Esc changes nothing.
            await choose(image_model.name, "escape")
            saved = Settings.load()
            assert saved.image_model == f"server:box/{image_model.name}"
            assert saved.image_vae == ""  # a server's image model uses the server's VAE
            assert saved.speech_model == f"server:box/{speech_model.name}"
            assert saved.chat_model == f"server:box/{chat_model.name}"
            assert status_of(screen, "box", image_model.name) == "default image"
            assert status_of(screen, "box", speech_model.name) == "default speech"
            assert status_of(screen, "box", chat_model.name) == "default chat"
            mark = str(table.get_cell(f"server:box/{image_model.name}", "mark"))
            assert mark == "●"
            # One model can serve several panels; its row names them all.
            await choose(chat_model.name, "l")
            assert status_of(screen, "box", chat_model.name) == "default chat, speech"
            assert status_of(screen, "box", speech_model.name) == ""
            # The panels show the new defaults in their forms.
            await pilot.press("f3")
            await pilot.pause()
            assert app.screen.query_one("#model", Input).value == saved.image_model
            await pilot.press("f4")
            await pilot.pause()
            speech = app.screen.query_one("#speech-model", Input).value
            assert speech == f"server:box/{chat_model.name}"
    finally:
        server.stop()
