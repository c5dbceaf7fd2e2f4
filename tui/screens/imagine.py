"""The Imagine panel: Stable Diffusion with live preview, presets and a gallery."""

from __future__ import annotations

import io
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Label, ProgressBar, Select, Static, TextArea
from textual.worker import Worker, WorkerState

from tui import imaging, locations, models
from tui.cpu import describe_wait
from tui.engines import protocol as p
from tui.imaging import ImageParams
from tui.safe_text import one_line
from tui.screens.dialogs import TextPromptScreen
from tui.store import ImageRecord, StoreError
from tui.widgets.engine_status import EngineStatus
from tui.widgets.image_view import ImageView
from tui.widgets.panel_footer import PanelFooter

if TYPE_CHECKING:
    from tui.app import TriptychApp

BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    "Turbo (SD-Turbo, SDXS)": {
        "steps": 2,
        "cfg_scale": 1.0,
        "sampler": "euler_a",
        "scheduler": "default",
    },
    "Quality": {"steps": 30, "cfg_scale": 7.0, "sampler": "dpm++2m", "scheduler": "karras"},
}
PRESET_FIELDS = ("width", "height", "steps", "cfg_scale", "sampler", "scheduler")

NUMBER_FIELDS = {
    "width": int,
    "height": int,
    "steps": int,
    "cfg_scale": float,
    "seed": int,
    "batch_count": int,
    "strength": float,
}


def images_dir() -> Path:
    return locations.data_dir() / "images"


def image_file_name(params: ImageParams, seed: int, index: int) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{seed}-{index + 1}.png"


class ImagineScreen(Screen[None]):
    """Parameters on the left, the image (live preview while denoising) on the right."""

    CSS_PATH = "imagine.tcss"
    AUTO_FOCUS = "#prompt"
    """Focused as the panel is built, so keys typed right after switching to it land here."""

    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", id="imagine.generate",
                tooltip="Generate with the current parameters"),
        Binding("escape", "stop", "Stop", id="imagine.stop", priority=True,
                tooltip="Stop the generation (the engine restarts on the next one)"),
        Binding("ctrl+l", "gallery", "Gallery", id="imagine.gallery",
                tooltip="Browse generated images"),
        Binding("v,f6", "view", "View", id="imagine.view",
                tooltip="Show the image full-screen at the terminal resolution (any key returns)"),
        Binding("ctrl+s", "save_preset", "Save preset", id="imagine.save_preset", show=False,
                tooltip="Save size, steps, CFG, sampler and scheduler as a preset"),
        Binding("ctrl+r", "random_seed", "Random seed", id="imagine.random_seed", show=False,
                tooltip="Set the seed to -1 (a new random seed each time)"),
        Binding("ctrl+u", "free_memory", "Free memory", id="imagine.free", show=False,
                tooltip="Unload the image model"),
    ]  # fmt: skip

    generating: reactive[bool] = reactive(False)

    class EngineEvent(Message):
        """An event from the image engine. Progress and previews collapse in the queue."""

        def __init__(self, event: Any) -> None:
            super().__init__()
            self.event = event

        def can_replace(self, message: Message) -> bool:
            return (
                isinstance(message, ImagineScreen.EngineEvent)
                and isinstance(self.event, p.StepProgressed | p.PreviewUpdated)
                and type(message.event) is type(self.event)
            )

    def __init__(self) -> None:
        super().__init__()
        self.current: ImageRecord | None = None
        self.current_path: Path | None = None
        self.params_in_flight: ImageParams | None = None
        self._started = 0.0
        self._step_times: list[float] = []
        self._done_images = 0

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

    # --- layout --------------------------------------------------------------

    def compose(self) -> ComposeResult:
        settings = self.tapp.settings
        defaults = ImageParams(prompt="")
        with Horizontal():
            with VerticalScroll(id="form"):
                yield Label("Prompt")
                yield TextArea(id="prompt", soft_wrap=True, compact=True)
                yield Input(placeholder="Negative prompt", id="negative_prompt", compact=True)
                yield Select(self._preset_options(), prompt="Preset…", id="preset", compact=True)
                with Grid(id="numbers"):
                    for name, label in (
                        ("width", "W"),
                        ("height", "H"),
                        ("steps", "Steps"),
                        ("cfg_scale", "CFG"),
                        ("seed", "Seed"),
                        ("batch_count", "Batch"),
                    ):
                        yield Label(label)
                        yield Input(str(getattr(defaults, name)), id=name, compact=True)
                with Grid(id="samplers"):
                    yield Label("Sampler")
                    yield Select(
                        [(name, name) for name in imaging.SAMPLERS],
                        value="default",
                        allow_blank=False,
                        id="sampler",
                        compact=True,
                    )
                    yield Label("Sched.")
                    yield Select(
                        [(name, name) for name in imaging.SCHEDULERS],
                        value="default",
                        allow_blank=False,
                        id="scheduler",
                        compact=True,
                    )
                yield Label("Image to image")
                yield Input(
                    placeholder="init image path (empty: none)", id="init_image", compact=True
                )
                with Horizontal(id="strength-row"):
                    yield Label("Strength ")
                    yield Input(str(defaults.strength), id="strength", compact=True)
                yield Label("Models")
                yield Input(
                    settings.image_model,
                    placeholder="model (.safetensors/.gguf)",
                    id="model",
                    compact=True,
                )
                yield Input(
                    settings.image_vae, placeholder="VAE (optional)", id="vae", compact=True
                )
                yield Input(
                    settings.image_taesd, placeholder="TAESD (optional)", id="taesd", compact=True
                )
            with Vertical(id="output"):
                yield ImageView(settings.image_protocol, id="image")
                yield ProgressBar(total=1, show_eta=False, id="progress")
                yield Static("Ctrl+G generates · Ctrl+L gallery", id="info")
        yield EngineStatus()
        yield PanelFooter(compact=True)

    def _preset_options(self) -> list[tuple[str, str]]:
        names = list(BUILTIN_PRESETS) + sorted(self.tapp.settings.image_presets)
        return [(name, name) for name in names]

    def on_mount(self) -> None:
        self.query_one("#prompt", TextArea).focus()

    # --- parameters -----------------------------------------------------------

    def read_params(self) -> ImageParams:
        """The form as ImageParams; ValueError with a readable line if invalid."""
        values: dict[str, Any] = {
            "prompt": self.query_one("#prompt", TextArea).text.strip(),
            "negative_prompt": self.query_one("#negative_prompt", Input).value.strip(),
            "sampler": str(self.query_one("#sampler", Select).value),
            "scheduler": str(self.query_one("#scheduler", Select).value),
            "init_image": self.query_one("#init_image", Input).value.strip(),
        }
        for name, kind in NUMBER_FIELDS.items():
            text = self.query_one(f"#{name}", Input).value.strip()
            try:
                values[name] = kind(text)
            except ValueError:
                raise ValueError(f"{name.replace('_', ' ')}: {text!r} is not a number") from None
        for name in ("model", "vae", "taesd"):
            values[name] = self.query_one(f"#{name}", Input).value.strip()
        params = ImageParams(**values)
        params.validate()
        if not params.model:
            raise ValueError("choose an image model: type its path under Models")
        return params

    def apply_params(self, params: ImageParams) -> None:
        """Fill the form from params (e.g. 'same again' from the gallery)."""
        self.query_one("#prompt", TextArea).text = params.prompt
        self.query_one("#negative_prompt", Input).value = params.negative_prompt
        for name in NUMBER_FIELDS:
            self.query_one(f"#{name}", Input).value = str(getattr(params, name))
        self.query_one("#batch_count", Input).value = "1"
        for name in ("sampler", "scheduler"):
            self.query_one(f"#{name}", Select).value = getattr(params, name)
        for name in ("init_image", "model", "vae", "taesd"):
            self.query_one(f"#{name}", Input).value = getattr(params, name)

    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        name = str(event.value)
        preset = BUILTIN_PRESETS.get(name) or self.tapp.settings.image_presets.get(name)
        if not preset:
            return
        for key, value in preset.items():
            if key in ("sampler", "scheduler"):
                self.query_one(f"#{key}", Select).value = value
            elif key in NUMBER_FIELDS:
                self.query_one(f"#{key}", Input).value = str(value)
        self.notify(f"Preset: {name}")

    @work(exclusive=True, group="dialog")
    async def action_save_preset(self) -> None:
        try:
            params = self.read_params()
        except ValueError:
            params = None
        values: dict[str, Any] = {}
        for key in PRESET_FIELDS:
            if params is not None:
                values[key] = getattr(params, key)
            elif key in NUMBER_FIELDS:
                values[key] = NUMBER_FIELDS[key](self.query_one(f"#{key}", Input).value or 0)
            else:
                values[key] = str(self.query_one(f"#{key}", Select).value)
        name = await self.app.push_screen_wait(TextPromptScreen("Save preset as"))
        if not name:
            return
        self.tapp.settings.image_presets[name] = values
        self._save_settings()
        self.query_one("#preset", Select).set_options(self._preset_options())
        self.notify(f"Saved preset “{name}”")

    def action_random_seed(self) -> None:
        self.query_one("#seed", Input).value = "-1"

    def _save_settings(self) -> None:
        try:
            self.tapp.settings.save()
        except OSError as error:
            self.notify(f"could not save settings: {error}", severity="error")

    # --- generating ------------------------------------------------------------

    def action_generate(self) -> None:
        if self.generating:
            self.notify("Already generating: Esc stops it", severity="warning")
            return
        try:
            params = self.read_params()
            models.check_image_model(Path(params.model).expanduser())
            for extra in (params.vae, params.taesd):
                if extra:
                    models.check_image_model(Path(extra).expanduser())
            init_png = None
            if params.init_image:
                init_png, _, _ = imaging.load_image_bytes(Path(params.init_image).expanduser())
        except (ValueError, models.ModelFileError) as error:
            self._show_error(str(error))
            return
        settings = self.tapp.settings
        settings.image_model, settings.image_vae, settings.image_taesd = (
            params.model,
            params.vae,
            params.taesd,
        )
        self._save_settings()
        request = imaging.image_request(
            params, init_png, settings.threads, **imaging.gpu_options(settings)
        )
        self.params_in_flight = params
        self.generating = True
        self._started = time.monotonic()
        self._step_times = []
        self._done_images = 0
        bar = self.query_one(ProgressBar)
        bar.update(total=params.steps * params.batch_count, progress=0)
        self._set_info(
            "Loading the model…" if not self.tapp.image_host.loaded_model else "Starting…"
        )
        self._run_request(request)

    @work(thread=True, exclusive=True, group="image", exit_on_error=False)
    def _run_request(self, request: p.ImageRequest) -> None:
        for event in self.tapp.image_host.submit(request):
            self.post_message(self.EngineEvent(event))

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        event = message.event
        params = self.params_in_flight
        if isinstance(event, p.StepProgressed) and params is not None:
            self._step_times.append(event.seconds)
            done = self._done_images * params.steps + event.step
            total = params.steps * params.batch_count
            self.query_one(ProgressBar).update(total=total, progress=done)
            recent = self._step_times[-5:]
            eta = (total - done) * (sum(recent) / len(recent)) if recent else 0.0
            self._set_info(
                f"Image {self._done_images + 1}/{params.batch_count} · step {event.step}/"
                f"{event.steps} · {event.seconds:.2f}s/step · ETA {eta:.0f}s · Esc stops"
            )
        elif isinstance(event, p.PreviewUpdated):
            self._show_png(event.png)
        elif isinstance(event, p.WaitingForCpu):
            self._set_info(describe_wait(event.behind) + "… Esc cancels")
        elif isinstance(event, p.CpuGranted):
            self._started = time.monotonic()
            self._set_info(
                "Loading the model…" if not self.tapp.image_host.loaded_model else "Starting…"
            )
        elif isinstance(event, p.ImageGenerated) and params is not None:
            self._done_images += 1
            self._save_image(event, params)
        elif isinstance(event, p.GenerationFinished):
            self.generating = False
            if event.reason == "cancelled":
                self._set_info("Stopped. The engine restarts with the next generation.")
            elif self.current is not None:
                self._set_info(self._describe(self.current))
        elif isinstance(event, p.EngineFailed):
            self.generating = False
            self._show_error(event.message)

    def _save_image(self, event: p.ImageGenerated, params: ImageParams) -> None:
        used = replace(params, seed=event.seed, batch_count=1)
        path = images_dir() / image_file_name(used, event.seed, event.index)
        try:
            imaging.save_png(event.png, path, used)
            record = self.tapp.store.add_image(
                str(path),
                used.to_dict(),
                seed=event.seed,
                width=event.width,
                height=event.height,
                seconds=event.seconds,
            )
        except (OSError, StoreError) as error:
            self._show_error(f"could not save the image: {error}")
            return
        self.show_record(record)

    def show_record(self, record: ImageRecord) -> None:
        self.current = record
        self.current_path = Path(record.path)
        try:
            self.query_one("#image", ImageView).show(record.path)
        except (OSError, ValueError) as error:
            self._show_error(f"could not show {record.path}: {error}")
            return
        self._set_info(self._describe(record))

    def _describe(self, record: ImageRecord) -> str:
        return (
            f"seed {record.seed} · {record.width}x{record.height} · "
            f"{record.seconds:.1f}s · {escape(one_line(Path(record.path).name))}"
        )

    def _show_png(self, png: bytes) -> None:
        from PIL import Image

        try:
            self.query_one("#image", ImageView).show(Image.open(io.BytesIO(png)))
        except OSError:
            pass

    def _set_info(self, text: str) -> None:
        self.query_one("#info", Static).update(text)

    def _show_error(self, text: str) -> None:
        # Engine errors quote paths: controls shown, brackets not markup.
        self.query_one("#info", Static).update(f"[b red]Error:[/] {escape(one_line(text))}")
        self.notify(text, severity="error", timeout=8)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "image" and event.state == WorkerState.ERROR and self.generating:
            self.generating = False
            self._show_error(f"the image engine failed: {event.worker.error}")

    def action_stop(self) -> None:
        if self.generating:
            self.tapp.image_host.cancel()
            self._set_info("Stopping…")
        else:
            self.query_one("#prompt", TextArea).focus()

    def action_free_memory(self) -> None:
        if self.generating:
            self.notify("Stop the generation first (Esc)", severity="warning")
            return
        self.tapp.image_host.unload()
        self.notify("Image model unloaded")

    # --- gallery and full-screen view -------------------------------------------------

    @work(exclusive=True, group="dialog")
    async def action_gallery(self) -> None:
        from tui.screens.gallery import GalleryScreen

        result = await self.app.push_screen_wait(GalleryScreen())
        if result is None:
            return
        action, record = result
        params = ImageParams.from_dict(record.params)
        if action == "same":
            self.apply_params(params)
            self.action_generate()
        elif action == "vary":
            self.apply_params(replace(params, seed=-1))
            self.action_generate()
        elif action == "init":
            self.query_one("#init_image", Input).value = record.path
            self.notify("Image-to-image from this image: set the strength, then Ctrl+G")
        elif action == "show":
            self.apply_params(params)
            self.show_record(record)

    def action_view(self) -> None:
        if self.current_path is None:
            self.notify("No image yet", severity="warning")
            return
        from tui.screens.fullscreen import show_fullscreen

        show_fullscreen(self.app, self.current_path)
