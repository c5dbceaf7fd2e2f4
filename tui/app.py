"""The Triptych application: panels as modes, global keys, command palette."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.notifications import Notification, Notify, SeverityLevel
from textual.screen import Screen
from textual.signal import Signal
from textual.theme import Theme

from tui import locations
from tui.budget import MemoryBudget, budget_bytes
from tui.compat.textual import dismiss_notification
from tui.config import Settings
from tui.cpu import CpuGate, available_cpus
from tui.engines.host import EngineHost
from tui.hub import DownloadQueue, Job
from tui.imaging import ImageParams
from tui.keys import KeySection, describe
from tui.safe_text import one_line, visible
from tui.screens.chat import ChatScreen
from tui.screens.exchange import export_flow, import_flow
from tui.screens.gallery import GalleryScreen
from tui.screens.help import HelpScreen
from tui.screens.imagine import ImagineScreen
from tui.screens.listen import ListenScreen
from tui.screens.models import ModelsScreen
from tui.screens.search import SearchScreen, open_search_hit
from tui.services.chat import ChatService
from tui.services.imagine import ImagineService
from tui.services.models import ModelTip, take_first_start_tip
from tui.services.settings import SettingsChanged, SettingsProblem, SettingsService
from tui.signals import ExitSavers, SignalExit, exit_status
from tui.store import Store, StoreError
from tui.terminal_guard import install as install_terminal_guard
from tui.themes import bundled_themes
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message_log import MessageLog
from tui.widgets.prompt_input import PromptInput

PANELS = {
    "chat": ChatScreen,
    "imagine": ImagineScreen,
    "listen": ListenScreen,
    "models": ModelsScreen,
}
"""One mode per panel."""

IDLE_CHECK_S = 10.0
TIP_TIMEOUT_S = 60.0
"""How long the first-start model tip stays up (any key or a click hides it sooner)."""


class DownloadChanged(Message):
    """A download started, finished, failed or was cancelled (not sent per chunk)."""

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job


class SettingsNotice(Message):
    """A settings service event, carried to the event loop from another thread."""

    def __init__(self, event: SettingsChanged | SettingsProblem) -> None:
        super().__init__()
        self.event = event


class TriptychApp(App[None]):
    """Keyboard-driven local AI: Chat (F2), Imagine (F3), Listen (F4), Models (F5)."""

    TITLE = "Triptych"
    CSS_PATH = "app.tcss"
    MODES = PANELS
    DEFAULT_MODE = "chat"
    # The panel keys are priority bindings: the app checks those as each key
    # arrives, so the switch is done before the next key is routed. A plain
    # binding runs only after the key has bubbled up from the focused widget,
    # and keys typed meanwhile went to the panel being left.
    BINDINGS = [
        Binding("f1", "help", "Help", id="app.help", tooltip="Show every key"),
        Binding(
            "f2",
            "switch_mode('chat')",
            "Chat",
            id="app.chat",
            priority=True,
            tooltip="The Chat panel",
        ),
        Binding(
            "f3",
            "switch_mode('imagine')",
            "Imagine",
            id="app.imagine",
            priority=True,
            tooltip="The Imagine panel",
        ),
        Binding(
            "f4",
            "switch_mode('listen')",
            "Listen",
            id="app.listen",
            priority=True,
            tooltip="The Listen panel",
        ),
        Binding(
            "f5",
            "switch_mode('models')",
            "Models",
            id="app.models",
            priority=True,
            tooltip="Download, import and choose models",
        ),
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            id="app.quit",
            priority=True,
            show=False,
            tooltip="Quit Triptych (a reply in progress is saved)",
        ),
        Binding(
            "ctrl+p",
            "command_palette",
            "Commands",
            id="app.palette",
            show=False,
            tooltip="Command palette",
        ),
    ]

    def __init__(
        self,
        *,
        chat_model: str | None = None,
        settings: Settings | SettingsService | None = None,
        store: Store | None = None,
    ) -> None:
        """``settings``: the settings owner; a plain Settings (tests) becomes the
        current settings of one that saves to the usual file."""
        if isinstance(settings, SettingsService):
            self.settings_service = settings
        else:
            self.settings_service = SettingsService(settings=settings)
        self.settings = self.settings_service.current
        """The current settings (read only: changes go through settings_service.update)."""
        self.store = store or Store()
        self.chat_model_override = chat_model
        self.server_models: dict[str, tuple[str, ...]] = {}
        """Model ids each server listed at its last check (the Models panel's Servers tab
        checks them); the conversation settings offer them as ``server:NAME/MODEL``."""
        self.chat_service: ChatService | None = None
        """The Chat panel's ChatService once its screen made one (the status line reads it)."""
        self._imagine_service: ImagineService | None = None
        self.imagine_form: Callable[[], ImageParams | None] = lambda: None
        """The Imagine panel's current parameters (set by its screen; None before it is built)."""
        # The app runs on the thread that makes it (Textual keeps its own record private).
        self._ui_thread_id = threading.get_ident()
        self.chat_host = EngineHost("chat", log_dir=locations.logs_dir())
        self.image_host = EngineHost("image", log_dir=locations.logs_dir())
        self.speech_host = EngineHost("speech", log_dir=locations.logs_dir())
        self.budget = MemoryBudget(
            [self.chat_host, self.image_host, self.speech_host],
            budget_bytes(self.settings.memory_budget_mb),
            notify=self._notify_any_thread,
        )
        # Engines whose threads together exceed the CPUs take turns (see tui/cpu.py).
        self.cpu_gate = CpuGate()
        for host in (self.chat_host, self.image_host, self.speech_host):
            host.cpu_gate = self.cpu_gate
        self.downloads = DownloadQueue(on_change=self._download_changed)
        self._download_states: dict[int, str] = {}
        self._tip: Notification | None = None
        """The first-start model tip while it is shown (see _offer_model_tip)."""
        self._themes: list[Theme] = bundled_themes()
        self.exit_savers = ExitSavers()
        """What to save when a signal ends the app: screens join on mount, leave on unmount."""
        self.signal_exit = SignalExit(self._exit_on_signal, self._emergency_exit)
        install_terminal_guard()
        super().__init__()
        self.settings_changed_signal: Signal[SettingsChanged] = Signal(self, "settings-changed")
        """Published on the event loop after every settings change (screens subscribe)."""
        self.download_changed_signal: Signal[Job] = Signal(self, "download-changed")
        """Published when a download starts, ends, fails or is cancelled (not per chunk)."""
        self.settings_service.subscribe(self._settings_event)
        for theme in self._themes:
            self.register_theme(theme)
        if self.settings.keymap:
            self.set_keymap(self.settings.keymap)
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        else:
            self.theme = "triptych-dark"

    @property
    def imagine_service(self) -> ImagineService:
        """The one image service: the Imagine panel's, which the Chat panel draws with too."""
        if self._imagine_service is None:
            self._imagine_service = ImagineService(
                self.image_host, self.store, self.settings_service
            )
        return self._imagine_service

    def on_load(self) -> None:
        # Before the driver puts the terminal into application mode, so that a
        # signal at any moment after finds the handler that restores it.
        self.signal_exit.install(asyncio.get_running_loop())
        # Before compose: the Chat screen mounts (and shows the open conversation)
        # before App.on_mount runs, so marking there left a crashed reply shown as
        # still streaming ("…") until it was opened again. `triptych` has done this
        # already (Store.open_checked); a failure here must not end the app.
        try:
            self.store.mark_interrupted()
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)

    def on_mount(self) -> None:
        severity: SeverityLevel = "warning" if self.settings_service.writable else "error"
        for problem in self.settings_service.problems:
            self.notify(problem, title="Settings", severity=severity, timeout=30)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.set_interval(IDLE_CHECK_S, self._unload_idle)
        cpus = available_cpus()
        if self.settings.threads > cpus:
            # The engines use all the CPUs instead (tui/cpu.py bounds every request).
            self.notify(
                f"threads = {self.settings.threads} in the settings is more than the {cpus}"
                f" CPUs here; the engines use {cpus}",
                severity="warning",
            )
        self._offer_model_tip()

    @work(thread=True, group="first-start-tip", exit_on_error=False)
    def _offer_model_tip(self) -> None:
        """Once ever (a file in the data folder remembers it): with only the built-in
        chat model on disk, suggest a catalog model that suits this machine. Off the
        event loop: deciding scans the model files."""
        settings = self.settings_service.current
        tip = take_first_start_tip(settings, self.chat_model_override or settings.chat_model)
        if tip is not None:
            self.call_from_thread(self._show_tip, tip)

    def _show_tip(self, tip: ModelTip) -> None:
        """A notification that any key hides (the key still does what it does)."""
        notification = Notification(
            tip.message, tip.title, "information", TIP_TIMEOUT_S, markup=False
        )
        self._tip = notification
        self.post_message(Notify(notification))

    def _hide_tip(self) -> None:
        if self._tip is not None:
            dismiss_notification(self, self._tip)
            self._tip = None

    async def on_event(self, event: events.Event) -> None:
        if self._tip is not None and isinstance(event, events.Key):
            self._hide_tip()
        await super().on_event(event)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Textual's notify, for messages that quote data (file names, engine and server
        errors): their control characters are shown, never sent."""
        super().notify(
            visible(message),
            title=one_line(title),
            severity=severity,
            timeout=timeout,
            markup=markup,
        )

    def _notify_any_thread(self, text: str) -> None:
        if threading.get_ident() == self._ui_thread_id:
            self.notify(text)
        else:
            self.call_from_thread(self.notify, text)

    def _unload_idle(self) -> None:
        minutes = self.settings.idle_unload_minutes
        if minutes > 0 and any(h.alive and not h.busy for h in self.budget.hosts):
            self.run_worker(
                lambda: self.budget.unload_idle(minutes * 60.0),
                thread=True,
                group="idle-unload",
                exclusive=True,
                exit_on_error=False,
            )

    def _download_changed(self, job: Job) -> None:
        """From the download thread: forward state changes (not byte counts) to the loop."""
        if self._download_states.get(id(job)) != job.state:
            self._download_states[id(job)] = job.state
            self.post_message(DownloadChanged(job))

    def on_download_changed(self, message: DownloadChanged) -> None:
        job = message.job
        if job.state == "done":
            self.notify(f"Downloaded {job.dest.name}", title="Models")
        elif job.state == "failed":
            self.notify(job.error, title="Download failed", severity="error", timeout=10)
        self.download_changed_signal.publish(job)

    def _settings_event(self, event: object) -> None:
        """From the settings service, on any thread: handled on the event loop.

        From another thread it is posted, not awaited, so that a worker changing
        a setting never waits for a loop that may be waiting for it.
        """
        if threading.get_ident() == self._ui_thread_id:
            self._announce_settings(event)
        elif isinstance(event, SettingsChanged | SettingsProblem):
            self.post_message(SettingsNotice(event))

    def on_settings_notice(self, message: SettingsNotice) -> None:
        self._announce_settings(message.event)

    def _announce_settings(self, event: object) -> None:
        if isinstance(event, SettingsChanged):
            self.settings_changed_signal.publish(event)
        elif isinstance(event, SettingsProblem):
            self.notify(event.message, title="Settings", severity="warning", timeout=15)

    def _theme_changed(self, theme: Theme) -> None:
        self.settings_service.update(theme=theme.name)

    async def on_unmount(self) -> None:
        self.chat_host.shutdown()
        self.image_host.shutdown()
        self.speech_host.shutdown()
        # Saved (the screens unmount first) and engines stopped: a signal's
        # watchdog has nothing left to rescue.
        self.signal_exit.finished()

    async def action_switch_mode(self, mode: str) -> None:
        # Textual's own action does not wait for a panel opened for the first time
        # to be built, and keys typed meanwhile reach no widget. Waiting here holds
        # them (the panel keys are priority bindings) until the panel has focus.
        await self.switch_mode(mode)

    async def action_quit(self) -> None:
        self._quit()

    def _quit(self, return_code: int = 0) -> None:
        for host in (self.chat_host, self.image_host, self.speech_host):
            if host.busy:
                host.cancel(grace_s=0.3)
        self.exit(return_code=return_code)

    def _exit_on_signal(self, signum: int) -> None:
        """SIGTERM or SIGHUP: what Ctrl+Q does, then exit with 128 + signum.

        Exiting restores the terminal (alternate screen, mouse, cursor), and the
        screens save on unmount. The screens in exit_savers save here first as
        well, in case the terminal has hung up and the rest of the exit gets
        stuck on it.
        """
        try:
            self.exit_savers.save_all()
        finally:
            self._quit(exit_status(signum))

    def _emergency_exit(self) -> None:
        """From the signal watchdog's thread, when the clean exit got stuck."""
        try:
            self.exit_savers.emergency_all()
        finally:
            for host in (self.chat_host, self.image_host, self.speech_host):
                host.kill()

    # --- help and command palette --------------------------------------------------

    def key_sections(self) -> list[KeySection]:
        """All bindings, grouped by where they work."""
        keymap = dict(self.settings.keymap) or None
        return [
            describe("Everywhere", self.BINDINGS, keymap),
            describe("Chat", ChatScreen.BINDINGS, keymap),
            describe("Chat: prompt", PromptInput.BINDINGS, keymap),
            describe("Chat: messages (Tab to reach)", MessageLog.BINDINGS, keymap),
            describe("Chat: conversation list", ConversationList.BINDINGS, keymap),
            describe("Imagine", ImagineScreen.BINDINGS, keymap),
            describe("Imagine: gallery", GalleryScreen.BINDINGS, keymap),
            describe("Listen", ListenScreen.BINDINGS, keymap),
            describe("Models", ModelsScreen.BINDINGS, keymap),
        ]

    def open_chat_with_attachment(self, title: str, text: str) -> None:
        """A new conversation whose first message is the attached text (e.g. a transcript)."""
        conversation = self.store.create_conversation(
            title=title[:60],
            system_prompt=self.settings.system_prompt,
            model=self.chat_model_override or "",
            sampling=vars(self.settings.sampling).copy(),
        )
        self.store.add_message(conversation.id, "user", f"{title}:\n\n{text}")
        self.switch_mode("chat")
        screen = self.screen
        if isinstance(screen, ChatScreen):
            screen.call_after_refresh(screen.open_with_prompt, conversation.id, "Summarize this.")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_sections()))

    # --- search everything, export and import -----------------------------------------

    def action_search_everything(self) -> None:
        if not isinstance(self.screen, SearchScreen):
            self._search_everything()

    @work(exclusive=True, group="search-everything", exit_on_error=False)
    async def _search_everything(self) -> None:
        hit = await self.push_screen_wait(SearchScreen(self.store))
        if hit is not None:
            try:
                await open_search_hit(self, hit)
            except StoreError as error:
                self.notify(str(error), severity="error", timeout=10)

    def action_import_conversation(self) -> None:
        self._import_conversation()

    @work(exclusive=True, group="exchange", exit_on_error=False)
    async def _import_conversation(self) -> None:
        try:
            await import_flow(self)
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)

    @work(exclusive=True, group="exchange", exit_on_error=False)
    async def export_conversation(self, conversation_id: int) -> None:
        """Ask where to export a conversation, then write it (e in the conversation list)."""
        try:
            await export_flow(self, conversation_id)
        except StoreError as error:
            self.notify(str(error), severity="error", timeout=10)

    def on_conversation_list_export_requested(
        self, message: ConversationList.ExportRequested
    ) -> None:
        self.export_conversation(message.conversation_id)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Show every key (F1)", self.action_help)
        yield SystemCommand(
            "Search everything",
            "Conversations, attachments, transcripts and image prompts"
            " (/ in the conversation list)",
            self.action_search_everything,
        )
        yield SystemCommand(
            "Import conversation (JSON)",
            "Add a conversation from a JSON export",
            self.action_import_conversation,
        )
        if isinstance(screen, ChatScreen) and screen.conversation is not None:
            open_id = screen.conversation.id
            yield SystemCommand(
                "Export conversation",
                "Write this conversation as Markdown or JSON (e in the conversation list)",
                lambda: self.export_conversation(open_id),
            )
        yield SystemCommand(
            "Chat", "Switch to the Chat panel (F2)", lambda: self.switch_mode("chat")
        )
        yield SystemCommand(
            "Imagine", "Switch to the Imagine panel (F3)", lambda: self.switch_mode("imagine")
        )
        yield SystemCommand(
            "Listen", "Switch to the Listen panel (F4)", lambda: self.switch_mode("listen")
        )
        yield SystemCommand(
            "Models",
            "Download, import and choose models (F5)",
            lambda: self.switch_mode("models"),
        )
        targets: list[tuple[str, list, object]] = []
        if isinstance(screen, ChatScreen):
            targets = [
                ("Chat", ChatScreen.BINDINGS, screen),
                ("Chat", MessageLog.BINDINGS, screen.query_one(MessageLog)),
            ]
        elif isinstance(screen, ImagineScreen):
            targets = [("Imagine", ImagineScreen.BINDINGS, screen)]
        elif isinstance(screen, GalleryScreen):
            targets = [("Gallery", GalleryScreen.BINDINGS, screen)]
        elif isinstance(screen, ListenScreen):
            targets = [("Listen", ListenScreen.BINDINGS, screen)]
        elif isinstance(screen, ModelsScreen):
            targets = [("Models", ModelsScreen.BINDINGS, screen)]
        for prefix, bindings, target in targets:
            for entry in describe("", bindings).entries:
                yield SystemCommand(
                    f"{prefix}: {entry.description}",
                    f"{entry.tooltip or entry.description} ({entry.keys})",
                    lambda action=entry.action, node=target: node.run_action(action),
                )
