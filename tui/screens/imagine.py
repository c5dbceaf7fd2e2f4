"""The Imagine panel: Stable Diffusion with live preview, presets and a gallery."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Label, ProgressBar, Select, Static, TextArea
from textual.worker import Worker, WorkerState

from tui import imaging
from tui.formats import ModelFileError
from tui.imaging import ImageParams
from tui.safe_text import escape_markup as escape
from tui.safe_text import one_line
from tui.screens.dialogs import TextPromptScreen
from tui.services import imagine as svc
from tui.services.imagine import ImagineService
from tui.services.settings import SettingsChanged
from tui.store import ImageRecord
from tui.widgets.engine_status import EngineStatus
from tui.widgets.image_view import ImageView
from tui.widgets.panel_footer import PanelFooter

if TYPE_CHECKING:
    from tui.app import TriptychApp

NUMBER_FIELDS = {
    "width": int,
    "height": int,
    "steps": int,
    "cfg_scale": float,
    "seed": int,
    "batch_count": int,
    "strength": float,
}


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

    class ServiceEvent(Message):
        """An event from the Imagine service. Progress and previews collapse in the queue."""

        def __init__(self, event: Any) -> None:
            super().__init__()
            self.event = event

        def can_replace(self, message: Message) -> bool:
            return (
                isinstance(message, ImagineScreen.ServiceEvent)
                and isinstance(self.event, svc.StepDone | svc.PreviewReady)
                and type(message.event) is type(self.event)
            )

    def __init__(self) -> None:
        super().__init__()
        self.current: ImageRecord | None = None
        self.current_path: Path | None = None
        self._service: ImagineService | None = None
        self._unsubscribe: Any = None

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

    @property
    def service(self) -> ImagineService:
        """The panel's domain; built on first use (the app exists by then)."""
        if self._service is None:
            # The app's: the Chat panel draws with it too (F7), with this form's settings.
            self._service = self.tapp.imagine_service
        return self._service

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
        return [(name, name) for name in self.service.preset_names()]

    def on_mount(self) -> None:
        self._unsubscribe = self.service.subscribe(
            lambda event: self.post_message(self.ServiceEvent(event))
        )
        self.tapp.settings_changed_signal.subscribe(self, self._settings_changed)
        self.tapp.imagine_form = self.current_params
        self.query_one("#prompt", TextArea).focus()

    def _settings_changed(self, event: SettingsChanged) -> None:
        """A new default model (e.g. chosen in the Models panel) shows in the form."""
        settings = self.tapp.settings
        for name, selector in (("image_model", "#model"), ("image_vae", "#vae"),
                               ("image_taesd", "#taesd")):  # fmt: skip
            if name in event.changed:
                self.query_one(selector, Input).value = getattr(settings, name)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

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

    def _form_params(self) -> ImageParams:
        """The form as ImageParams, unchecked (numbers that do not parse count as 0)."""
        try:
            return self.read_params()
        except ValueError:
            pass
        values: dict[str, Any] = {"prompt": ""}
        for name, kind in NUMBER_FIELDS.items():
            try:
                values[name] = kind(self.query_one(f"#{name}", Input).value or 0)
            except ValueError:
                values[name] = kind(0)
        for name in ("sampler", "scheduler"):
            values[name] = str(self.query_one(f"#{name}", Select).value)
        return ImageParams(**values)

    def current_params(self) -> ImageParams:
        """The form as ImageParams with the models, whatever its prompt (unchecked)."""
        params = self._form_params()
        models = {name: self.query_one(f"#{name}", Input).value.strip()
                  for name in ("model", "vae", "taesd")}  # fmt: skip
        negative = self.query_one("#negative_prompt", Input).value.strip()
        return replace(params, negative_prompt=negative, **models)

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
        preset = self.service.preset(name)
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
        params = self._form_params()
        name = await self.app.push_screen_wait(TextPromptScreen("Save preset as"))
        if not name:
            return
        self.service.save_preset(name, params)
        self.query_one("#preset", Select).set_options(self._preset_options())
        self.notify(f"Saved preset “{name}”")

    def action_random_seed(self) -> None:
        self.query_one("#seed", Input).value = "-1"

    # --- generating ------------------------------------------------------------

    def action_generate(self) -> None:
        if self.generating:
            self.notify("Already generating: Esc stops it", severity="warning")
            return
        if self.service.generating:  # drawing for the Chat panel (F7 there)
            self.notify("Drawing for the chat: Esc in the Chat panel stops it", severity="warning")
            return
        try:
            params = self.read_params()
            self.service.check(params)
        except (ValueError, ModelFileError) as error:
            self._show_error(str(error))
            return
        self.service.remember_models(params)
        self.generating = True
        self.query_one(ProgressBar).update(total=params.steps * params.batch_count, progress=0)
        self._set_info("Starting…")
        self._generate(params)

    @work(thread=True, exclusive=True, group="image", exit_on_error=False)
    def _generate(self, params: ImageParams) -> None:
        self.service.generate(params)

    @on(ServiceEvent)
    def _service_event(self, message: ServiceEvent) -> None:
        event = message.event
        if isinstance(event, svc.StepDone):
            self.query_one(ProgressBar).update(total=event.total, progress=event.done)
            self._set_info(
                f"Image {event.image}/{event.batch} · step {event.step}/{event.steps}"
                f" · {event.seconds:.2f}s/step · ETA {event.eta_s:.0f}s · Esc stops"
            )
        elif isinstance(event, svc.PreviewReady):
            self._show_png(event.png)
        elif isinstance(event, svc.WaitingForCpu):
            self._set_info(event.text + "… Esc cancels")
        elif isinstance(event, svc.GenerationStarted):
            if event.remote:
                self._set_info(f"Generating on {escape(one_line(event.remote))}…")
            else:
                self._set_info("Loading the model…" if event.loading else "Starting…")
        elif isinstance(event, svc.ImageSaved):
            self.show_record(event.record)
        elif isinstance(event, svc.ImageNotSaved):
            self._show_error(event.message)
        elif isinstance(event, svc.GenerationEnded):
            self.generating = False
            if event.reason == "cancelled" and event.note:
                self._set_info(f"Stopped: {escape(one_line(event.note))}.")
            elif event.reason == "cancelled":
                self._set_info("Stopped. The engine restarts with the next generation.")
            elif self.current is not None:
                self._set_info(self._describe(self.current))
        elif isinstance(event, svc.GenerationFailed):
            self.generating = False
            self._show_error(event.message)

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
            self.service.stop()
            self._set_info("Stopping…")
        else:
            self.query_one("#prompt", TextArea).focus()

    def action_free_memory(self) -> None:
        if self.generating or not self.service.free_memory():
            self.notify("Stop the generation first (Esc)", severity="warning")
            return
        self.notify("Image model unloaded")

    # --- gallery and full-screen view -------------------------------------------------

    @work(exclusive=True, group="dialog")
    async def action_gallery(self, select_id: int | None = None) -> None:
        """Open the gallery (with the image ``select_id`` highlighted, e.g. a search hit)."""
        from tui.screens.gallery import GalleryScreen

        result = await self.app.push_screen_wait(GalleryScreen(self.service, select_id=select_id))
        if result is None:
            return
        action, record = result
        params = ImageParams.from_dict(record.params)
        if action == "same":
            self.apply_params(ImagineService.same_again(record))
            self.action_generate()
        elif action == "vary":
            self.apply_params(ImagineService.vary_seed(record))
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
