"""How the app reaches its screens without Textual's private state: signals the
screens subscribe to, exit savers they join, and each screen cleaning up after
itself on unmount."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tui.app import DownloadChanged, TriptychApp
from tui.screens.chat import ChatScreen
from tui.screens.listen import ListenScreen
from tui.screens.models import ModelsScreen
from tui.signals import ExitSavers
from tui.store import Store
from tui.widgets.prompt_input import PromptInput

SIZE = (80, 24)


def test_exit_savers_join_leave_and_survive_a_failure() -> None:
    savers = ExitSavers()
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("disk gone")

    leave_a = savers.join(lambda: calls.append("save a"), broken)
    savers.join(lambda: calls.append("save b"), lambda: calls.append("emergency b"))
    savers.emergency_all()  # the watchdog's thread: one failure stops no other
    assert calls == ["broken", "emergency b"]
    calls.clear()
    leave_a()
    leave_a()  # twice is harmless
    assert len(savers) == 1
    savers.save_all()
    assert calls == ["save b"]


def test_save_all_runs_every_saver_then_raises_the_first_failure() -> None:
    savers = ExitSavers()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("first")

    savers.join(broken, lambda: None)
    savers.join(lambda: calls.append("second"), lambda: None)
    with pytest.raises(RuntimeError, match="first"):
        savers.save_all()
    assert calls == ["second"]


async def test_the_chat_screen_saves_through_the_exit_savers(app_dirs, chat_model) -> None:
    store = Store()
    app = TriptychApp(chat_model=str(chat_model), store=store)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, ChatScreen)
        assert len(app.exit_savers) == 1
        app.screen.query_one(PromptInput).insert("half a thought")
        app.exit_savers.save_all()  # what SIGTERM does first
        draft = store.get_draft(None)
        assert draft is not None and draft.text == "half a thought"
        await pilot.pause()
    assert len(app.exit_savers) == 0  # the screen left as it unmounted


@dataclass
class _Stopped:
    duration_s: float
    error: str = ""


class _FakeRecorder:
    paused = False
    elapsed_s = 0.0
    level = 0.0
    error = ""

    def __init__(self) -> None:
        self.stops = 0

    def samples_since(self, offset: int) -> tuple[list[float], int]:
        return [], offset

    def stop(self) -> _Stopped:
        self.stops += 1
        return _Stopped(2.5)


async def test_listen_stops_its_own_recording_when_the_app_quits(app_dirs, tmp_path) -> None:
    store = Store()
    app = TriptychApp(store=store)
    recorder = _FakeRecorder()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ListenScreen)
        record = store.add_recording(str(tmp_path / "r.wav"), "r", device="mic")
        screen.listen.recorder, screen.listen.current = recorder, record  # type: ignore[assignment]
        await pilot.press("f2")
    assert recorder.stops == 1 and screen.recorder is None
    assert store.get_recording(record.id).duration_s == 2.5


@dataclass
class _Job:
    state: str
    dest: Path
    error: str = ""


async def test_downloads_reach_the_models_screen_by_signal(app_dirs, monkeypatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(ModelsScreen, "download_changed", lambda self, job: seen.append(job.state))
    app = TriptychApp(store=Store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        await pilot.press("f2")  # the Models panel is open, not shown
        app.post_message(DownloadChanged(_Job("done", Path("/m/x.gguf"))))  # type: ignore[arg-type]
        await pilot.pause()
        await pilot.pause()
        assert seen == ["done"]
        assert "Downloaded x.gguf" in [n.message for n in app._notifications]
