"""Per-conversation settings: system prompt, model and sampling."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, TextArea

from tui import library
from tui.backends.servers import BackendError, parse_remote_spec, remote_spec, server_config
from tui.config import Sampling, Settings
from tui.default_model import resolve_chat_model
from tui.formats import ModelFileError
from tui.formats.gguf import read_gguf_info
from tui.safe_text import escape_markup as escape
from tui.safe_text import one_line

FIELD_LABELS = {
    "temperature": "Temperature",
    "top_p": "Top-p",
    "top_k": "Top-k",
    "min_p": "Min-p",
    "repeat_penalty": "Repeat penalty",
    "max_tokens": "Max tokens",
    "n_ctx": "Context size",
    "seed": "Seed (-1 random)",
}

DEFAULT_MODEL = ""


def _by_name(path: Path) -> tuple[str, str]:
    return path.name.lower(), str(path)


@dataclass
class ConversationSettings:
    system_prompt: str
    model: str
    """Model path or ``server:NAME[/MODEL]`` spec; empty means the app default."""
    sampling: Sampling


class ChatSettingsScreen(ModalScreen[ConversationSettings | None]):
    """Edit one conversation's settings. Ctrl+S saves, Esc cancels."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
        Binding("ctrl+s", "save", "Save", id="settings.save"),
    ]

    def __init__(self, settings: ConversationSettings, models_dir: Path | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.models_dir = models_dir

    def _model_options(self) -> list[tuple[str, str]]:
        options = [("Default model", DEFAULT_MODEL)]
        seen = {DEFAULT_MODEL}
        # Chat GGUFs only (not diffusion GGUFs), from every place the Models panel looks.
        found = library.scan(getattr(self.app, "settings", None), self.models_dir)
        for path in sorted((m.path for m in found if m.modality == "chat"), key=_by_name):
            if str(path) not in seen:
                # File names are data: one line, controls shown, brackets not markup.
                options.append((escape(one_line(path.name)), str(path)))
                seen.add(str(path))
        # Each server's own default, then the models it listed when last checked.
        server_models: dict[str, tuple[str, ...]] = getattr(self.app, "server_models", {})
        for name in sorted(self._app_settings().servers):
            specs = [(f"remote {name}", remote_spec(name))]
            specs += [(f"{name}: {model}", remote_spec(name, model))
                      for model in server_models.get(name, ())]  # fmt: skip
            for label, spec in specs:
                if spec not in seen:
                    # Server names and model ids are data: one line, brackets not markup.
                    options.append((escape(one_line(label)), spec))
                    seen.add(spec)
        if self.settings.model not in seen:
            remote = parse_remote_spec(self.settings.model) is not None
            label = self.settings.model if remote else Path(self.settings.model).name
            options.append((escape(one_line(label)), self.settings.model))
        return options

    def _app_settings(self) -> Settings:
        settings = getattr(self.app, "settings", None)
        return settings if isinstance(settings, Settings) else Settings()

    def compose(self) -> ComposeResult:
        sampling = self.settings.sampling
        with Vertical(classes="dialog wide", id="settings-dialog"):
            yield Label(
                "[b]Conversation settings[/b]  Ctrl+S saves · Esc cancels", id="settings-title"
            )
            with VerticalScroll():
                yield Label("System prompt")
                yield TextArea(
                    self.settings.system_prompt, id="system", soft_wrap=True, compact=True
                )
                yield Label("Model")
                yield Select(
                    self._model_options(),
                    value=self.settings.model,
                    allow_blank=False,
                    id="model",
                    compact=True,
                )
                yield Input(
                    placeholder="…or the path of another GGUF file", id="model-path", compact=True
                )
                with Grid(id="sampling"):
                    for f in fields(Sampling):
                        yield Label(FIELD_LABELS.get(f.name, f.name))
                        yield Input(
                            str(getattr(sampling, f.name)),
                            id=f.name,
                            type="integer" if f.type in ("int", int) else "number",
                            compact=True,
                        )
                yield Label("", id="error", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def _collect(self) -> ConversationSettings:
        values = {}
        for f in fields(Sampling):
            text = self.query_one(f"#{f.name}", Input).value.strip()
            try:
                values[f.name] = int(text) if f.type in ("int", int) else float(text)
            except ValueError:
                raise ValueError(
                    f"{FIELD_LABELS.get(f.name, f.name)}: {text!r} is not a number"
                ) from None
        sampling = Sampling(**values)
        sampling.validate()
        model = self.query_one("#model-path", Input).value.strip()
        remote = parse_remote_spec(model)
        if remote is not None:
            try:
                server_config(remote[0], self._app_settings())
            except BackendError as error:
                raise ValueError(str(error)) from None
        elif model:
            path = resolve_chat_model(model, self.models_dir)
            read_gguf_info(path)
            model = str(path)
        else:
            model = str(self.query_one("#model", Select).value or DEFAULT_MODEL)
        system = self.query_one("#system", TextArea).text
        return ConversationSettings(system_prompt=system, model=model, sampling=sampling)

    def action_save(self) -> None:
        try:
            result = self._collect()
        except (ValueError, ModelFileError) as error:
            self.query_one("#error", Label).update(escape(one_line(str(error))))
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
