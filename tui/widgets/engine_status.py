"""One line at the bottom of every panel: queued requests, loaded models, their memory,
downloads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from textual.widgets import Static

from tui import gpu
from tui.budget import process_rss
from tui.formats import human_size
from tui.safe_text import escape_markup as escape
from tui.safe_text import one_line, visible

if TYPE_CHECKING:
    from tui.app import TriptychApp


def _short(name: str, width: int = 22) -> str:
    stem = one_line(Path(name).stem)
    return stem if len(stem) <= width else stem[: width - 1] + "…"


class EngineStatus(Static):
    """Refreshes itself twice a second from the app's engine hosts and downloads."""

    DEFAULT_CSS = """
    EngineStatus {
        height: 1;
        color: $text-muted;
        background: $panel;
        padding: 0 1;
    }
    """

    def on_mount(self) -> None:
        self.update_status()
        self.set_interval(0.5, self.update_status)

    def status_text(self) -> str:
        app = cast("TriptychApp", self.app)
        parts: list[str] = []
        used = 0
        # The open conversation answers from a remote server, which holds its model's memory.
        chat = getattr(app, "chat_service", None)
        remote = chat.remote_server() if chat is not None else None
        if remote:
            parts.append(f"chat remote {one_line(remote)}")
        hosts = (app.chat_host, app.image_host, app.speech_host)
        # One NVML query a refresh; each engine is its own process, so its pid's
        # VRAM is its model's ({} without a GPU: nothing more is shown).
        vram = gpu.process_vram() if any(h.alive and h.loaded_model for h in hosts) else {}
        for host in hosts:
            if not host.alive:
                continue
            rss = process_rss(host.pid)
            used += rss
            if host.loaded_model:
                part = f"{host.engine} {_short(host.loaded_model)} {human_size(rss)}"
                on_gpu = vram.get(host.pid or 0, 0)
                if on_gpu:
                    part += f" + {human_size(on_gpu)} VRAM"
                parts.append(part)
        text = " · ".join(parts) if parts else "no model loaded"
        # A request queued behind another engine's (tui/cpu.py): say so on every panel.
        queued = [
            f"{host.engine} waits for {' and '.join(host.waiting_for)}"
            for host in (app.chat_host, app.image_host, app.speech_host)
            if getattr(host, "waiting_for", None)
        ]
        if queued:
            text = " · ".join(queued) + " │ " + text
        budget = getattr(app, "budget", None)
        if budget is not None and used:
            text += f" │ {human_size(used)} of {human_size(budget.limit)}"
        downloads = getattr(app, "downloads", None)
        if downloads is not None:
            active = downloads.active()
            if active:
                job = active[0]
                more = f" +{len(active) - 1}" if len(active) > 1 else ""
                text += f" │ ↓ {_short(job.dest.name, 16)} {job.describe()}{more}"
        return text

    def update_status(self) -> None:
        # File names and download errors are data: controls shown, brackets not markup.
        self.update(escape(visible(self.status_text())))
