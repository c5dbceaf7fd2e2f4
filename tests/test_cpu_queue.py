"""Two engines at once on the real models: the second request waits for the cores, says so,
and both finish (the real SmolLM2 chat model and the random-weight image fixture)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.sd_fixtures import fixture
from tui import cpu
from tui.app import TriptychApp
from tui.config import Settings
from tui.screens.chat import ChatScreen
from tui.screens.imagine import ImagineScreen
from tui.widgets.engine_status import EngineStatus
from tui.widgets.message_log import MessageLog
from tui.widgets.prompt_input import PromptInput

pytestmark = pytest.mark.slow


def _record(app: TriptychApp, log: list[tuple[float, str, str]]) -> None:
    """Note when each event of the chat and image hosts passes by (before the next one)."""
    for host in (app.chat_host, app.image_host):
        original = host.submit

        def submit(request: Any, original=original, name=host.engine) -> Iterator[Any]:
            for event in original(request):
                log.append((time.monotonic(), name, type(event).__name__))
                yield event

        host.submit = submit  # type: ignore[method-assign]


async def test_chat_waits_for_a_running_image_and_both_finish(app_dirs, chat_model: Path):
    settings = Settings()
    settings.image_protocol = "halfcell"
    # Each engine wants every CPU, so on any machine the two cannot run side by side.
    settings.threads = cpu.available_cpus()
    settings.sampling.temperature = 0.0
    settings.sampling.max_tokens = 16
    settings.sampling.n_ctx = 2048
    app = TriptychApp(chat_model=str(chat_model), settings=settings)
    log: list[tuple[float, str, str]] = []
    _record(app, log)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        imagine = app.screen
        assert isinstance(imagine, ImagineScreen)
        values = {
            "#model": str(fixture("image-model")),
            "#width": "128",
            "#height": "128",
            "#steps": "6",
            "#cfg_scale": "1.0",
            "#seed": "3",
            "#taesd": "",
        }
        for selector, value in values.items():
            imagine.query_one(selector).value = value
        imagine.query_one("#prompt").text = "a lighthouse at dusk"
        await pilot.press("ctrl+g")
        await wait_until(
            pilot, lambda: imagine.query_one("#progress").progress >= 1, 120, "the first step"
        )

        await pilot.press("f2")
        await pilot.pause()
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        prompt = chat.query_one(PromptInput)
        prompt.focus()
        prompt.text = "Name the capital city of France."
        await pilot.press("enter")

        # Queued behind the image, and shown so, while the image keeps generating.
        await wait_until(pilot, lambda: app.chat_host.waiting_for == ["image"], 10, "the queue")
        await pilot.pause(0.1)
        status = str(chat.query_one("#status").render())
        assert "Waiting for the image engine" in status, status
        assert "chat waits for image" in chat.query_one(EngineStatus).status_text()
        assert imagine.generating and not app.chat_host.alive

        def reply_done() -> bool:
            views = [v for v in chat.query_one(MessageLog).views if v.data.role == "assistant"]
            return not chat.generating and bool(views) and views[-1].data.state == "complete"

        await wait_until(pilot, reply_done, 180, "the chat reply")
        await wait_until(pilot, lambda: not imagine.generating, 10, "the image")
        reply = [v for v in chat.query_one(MessageLog).views if v.data.role == "assistant"][-1]
        assert reply.data.content.strip() and reply.data.stats["tokens"] > 0
        assert len(app.store.list_images()) == 1
        assert app.chat_host.waiting_for == [] and app.cpu_gate.queued() == []

    def first(name: str, kind: str) -> float:
        return next(t for t, host, event in log if host == name and event == kind)

    image_done = first("image", "GenerationFinished")
    # The chat started only after the image had finished: it kept the cores to itself.
    assert first("chat", "WaitingForCpu") < image_done
    assert image_done <= first("chat", "CpuGranted") <= first("chat", "TokenGenerated")
    steps = [e for _, host, e in log if host == "image" and e == "StepProgressed"]
    assert len(steps) == 6
    waited = first("chat", "CpuGranted") - first("chat", "WaitingForCpu")
    ttft = first("chat", "TokenGenerated") - first("chat", "CpuGranted")
    print(f"chat waited {waited:.1f} s for the image, then its first token took {ttft:.2f} s")
