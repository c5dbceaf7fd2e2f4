"""The Listen panel: a view over tui.services.listen (record, transcribe, export).

The service does the work, in thread workers started here; its events come back
as :class:`ListenScreen.ServiceEvent` messages and only their handler changes
what is shown.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option, OptionDoesNotExist
from textual.worker import Worker, WorkerState

from tui import transcript
from tui.cpu import describe_wait
from tui.safe_text import one_line
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.services import listen as ls
from tui.services.listen import (  # noqa: F401 - recordings_dir: re-exported for callers
    EXPORT_FORMATS,
    LIVE_TICK_S,
    RECORDINGS_PAGE,
    ListenError,
    ListenService,
    TranscribeOptions,
    exports_dir,
    recordings_dir,
)
from tui.services.settings import SettingsChanged
from tui.store import Recording
from tui.widgets.engine_status import EngineStatus
from tui.widgets.panel_footer import PanelFooter

if TYPE_CHECKING:
    from tui.app import TriptychApp
    from tui.audio import Recorder

LOAD_MORE_WITHIN = 5
"""Highlighting one of the last this-many loaded recordings loads the next page."""
WORKER_GROUPS = ("listen-open", "listen-record", "listen-stop", "listen-transcribe")


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def segments_text(segments: list[dict[str, Any]] | list[transcript.Segment]) -> str:
    lines = []
    for segment in segments:
        if isinstance(segment, dict):
            start, text = segment["start_s"], segment["text"]
        else:
            start, text = segment.start_s, segment.text
        lines.append(f"[dim]{format_duration(start)}[/dim] {escape(one_line(text))}")
    return "\n".join(lines)


def escape(text: str) -> str:
    """Data (names, transcripts) put into markup: brackets stay brackets.

    Callers pass it through tui.safe_text first: recording and device names and
    whisper output may hold control characters, which are shown, never sent."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _recording_option(record: Recording) -> Option:
    return Option(
        f"{escape(one_line(record.name))}\n  {format_duration(record.duration_s)} · "
        f"{datetime.fromtimestamp(record.created):%Y-%m-%d %H:%M} · "
        f"{escape(one_line(record.device or '?'))}",
        id=str(record.id),
    )


class ListenScreen(Screen[None]):
    """Recordings on the left; level, elapsed time and the transcript on the right."""

    CSS_PATH = "listen.tcss"
    AUTO_FOCUS = "#recordings"
    """Focused as the panel is built, so keys typed right after switching to it land here."""

    BINDINGS = [
        Binding("space,ctrl+r", "toggle_record", "Record/Stop", id="listen.record",
                tooltip="Start recording, or stop and run the final transcription"),
        Binding("p", "pause", "Pause", id="listen.pause", show=False,
                tooltip="Pause or resume recording"),
        Binding("t", "transcribe", "Transcribe", id="listen.transcribe", show=False,
                tooltip="Transcribe the selected recording again with the form's settings"),
        Binding("o", "open_file", "Open file", id="listen.open",
                tooltip="Transcribe an audio file (WAV, FLAC, OGG, MP3)"),
        Binding("e", "export", "Export", id="listen.export", show=False,
                tooltip="Export the transcript as txt, srt, vtt or json"),
        Binding("c", "send_to_chat", "To chat", id="listen.to_chat", show=False,
                tooltip="Open a new conversation with the transcript attached"),
        Binding("r", "rename", "Rename", id="listen.rename", show=False,
                tooltip="Rename the selected recording"),
        Binding("delete,d", "delete", "Delete", id="listen.delete", show=False,
                tooltip="Delete the selected recording (asks first)"),
        Binding("escape", "stop_transcription", "Stop", id="listen.stop", show=False,
                tooltip="Stop a running transcription"),
    ]  # fmt: skip

    recording: reactive[bool] = reactive(False)
    transcribing: reactive[bool] = reactive(False)

    class ServiceEvent(Message):
        """An event of the ListenService, delivered on the event loop."""

        def __init__(self, event: Any) -> None:
            super().__init__()
            self.event = event

    def __init__(self) -> None:
        super().__init__()
        self.service: ListenService | None = None
        self.segments: list[transcript.Segment] = []
        """What the transcript pane shows (as the service's events told it)."""
        self.live_segments: list[transcript.Segment] = []
        self._loaded = 0
        self._exhausted = False
        """Every recording is in the list (the last page came back short)."""
        self._unsubscribe: Any = None

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

    @property
    def listen(self) -> ListenService:
        if self.service is None:
            app = self.tapp
            self.service = ListenService(app.settings_service, app.store, app.speech_host)
        return self.service

    @property
    def recorder(self) -> Recorder | None:
        """The recorder of the recording in progress (the app stops it on quit)."""
        return self.service.recorder if self.service is not None else None

    @property
    def current(self) -> Recording | None:
        return self.listen.current

    # --- layout --------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        settings = self.tapp.settings
        with Horizontal():
            with Vertical(id="recordings-pane"):
                yield Select([], prompt="Input device", id="device", compact=True)
                yield OptionList(id="recordings")
            with Vertical(id="listen-main"):
                with Horizontal(id="meter-row"):
                    yield Static("0:00", id="elapsed")
                    yield ProgressBar(total=100, show_eta=False, show_percentage=False, id="level")
                with Horizontal(id="options-row"):
                    yield Input(
                        settings.speech_model,
                        placeholder="whisper model (ggml .bin)",
                        id="speech-model",
                        compact=True,
                    )
                    yield Input(settings.speech_language, id="language", compact=True)
                with Horizontal(id="options-row2"):
                    yield Select(
                        [("Transcribe", "transcribe"), ("Translate to English", "translate")],
                        value="transcribe",
                        allow_blank=False,
                        id="task",
                        compact=True,
                    )
                    yield Input(
                        placeholder="initial prompt (vocabulary)", id="initial-prompt", compact=True
                    )
                with VerticalScroll(id="transcript-scroll"):
                    yield Static("", id="transcript")
                yield Static("Space records · o transcribes a file", id="listen-status")
        yield EngineStatus()
        yield PanelFooter(compact=True)

    def on_mount(self) -> None:
        self._unsubscribe = self.listen.subscribe(self._forward)
        self.tapp.settings_changed_signal.subscribe(self, self._settings_changed)
        self.refresh_recordings()
        self.query_one("#recordings", OptionList).focus()
        self.set_interval(LIVE_TICK_S, self._tick)
        self._open_worker()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.recorder is not None:
            self.stop_recording()  # quitting: the WAV file is finished, nothing transcribed

    def _settings_changed(self, event: SettingsChanged) -> None:
        """A new default speech model (e.g. chosen in the Models panel) shows in the form."""
        if "speech_model" in event.changed:
            self.query_one("#speech-model", Input).value = self.tapp.settings.speech_model

    def _forward(self, event: Any) -> None:
        # Any thread: post_message is thread-safe.
        self.post_message(self.ServiceEvent(event))

    @work(thread=True, group="listen-open", exit_on_error=False)
    def _open_worker(self) -> None:
        self.listen.repair_crashed()
        self.listen.scan_devices()

    def refresh_recordings(self) -> None:
        """Reload the recordings loaded so far (at least a page), keeping the highlight."""
        count = max(RECORDINGS_PAGE, self._loaded)
        records = self.listen.recordings_page(0, count)
        self._loaded, self._exhausted = len(records), len(records) < count
        listing = self.query_one("#recordings", OptionList)
        listing.set_options(_recording_option(r) for r in records)
        current = self.listen.current
        if current is not None:
            try:
                listing.highlighted = listing.get_option_index(str(current.id))
            except Exception:  # noqa: BLE001 - deleted, or not on the pages loaded
                pass

    def _load_more(self) -> None:
        if self._exhausted:
            return
        records = self.listen.recordings_page(self._loaded, RECORDINGS_PAGE)
        self._exhausted = len(records) < RECORDINGS_PAGE
        self._loaded += len(records)
        self.query_one("#recordings", OptionList).add_options(_recording_option(r) for r in records)

    def _set_status(self, text: str) -> None:
        self.query_one("#listen-status", Static).update(text)

    def _recording_status(self) -> None:
        recorder = self.recorder
        paused = recorder is not None and recorder.paused
        self._set_status(
            "Paused: p resumes, Space stops" if paused else "Recording… Space stops, p pauses"
        )

    def _show_segments(self, segments: list[transcript.Segment], draft: bool = False) -> None:
        text = segments_text(segments)
        if draft and text:
            text = "[i]live draft[/i]\n" + text
        self.query_one("#transcript", Static).update(text or "[dim](no speech)[/dim]")
        self.query_one("#transcript-scroll").scroll_end(animate=False)

    def _error(self, text: str) -> None:
        self._set_status(f"[b red]Error:[/] {escape(one_line(text))}")
        self.notify(text, severity="error", timeout=8)

    def _options(self) -> TranscribeOptions:
        return TranscribeOptions(
            model=self.query_one("#speech-model", Input).value.strip(),
            language=self.query_one("#language", Input).value.strip() or "auto",
            translate=self.query_one("#task", Select).value == "translate",
            initial_prompt=self.query_one("#initial-prompt", Input).value.strip(),
        )

    # --- what the service says ------------------------------------------------------

    @on(ServiceEvent)
    def _service_event(self, message: ServiceEvent) -> None:
        event = message.event
        if isinstance(event, ls.DevicesFound):
            self._devices_found(event)
        elif isinstance(event, ls.RecordingsChanged):
            self.refresh_recordings()
        elif isinstance(event, ls.RecordingDeleted):
            if not self.recording and self.listen.current is None:
                self.segments = []
                self._show_segments([])
        elif isinstance(event, ls.RecordingStarted):
            self.recording = True
            self.segments, self.live_segments = [], []
            self._show_segments([], draft=True)
            self._recording_status()
        elif isinstance(event, ls.RecordingStopped):
            self.recording = False
            if event.error:
                self._error(f"recording stopped: {event.error} (what was captured is saved)")
        elif isinstance(event, ls.LiveSegmentTranscribed):
            self.live_segments.append(event.segment)
            self._show_segments(self.live_segments, draft=True)
        elif isinstance(event, ls.TranscriptionStarted):
            self.transcribing = True
            self.segments = []
            self._set_status(f"Transcribing {escape(one_line(event.recording.name))}… Esc stops")
        elif isinstance(event, ls.SegmentTranscribed):
            self.segments.append(event.segment)
            self._show_segments(self.segments)
        else:
            self._progress_event(event)

    def _progress_event(self, event: Any) -> None:
        if isinstance(event, ls.EngineQueued):
            # A live phrase waits too: the recording goes on, the draft catches up later.
            what = "The live draft" if event.live else "Transcription"
            self._set_status(f"{what} is queued. {describe_wait(list(event.behind))}.")
        elif isinstance(event, ls.EngineGranted):
            if not event.live:
                self._set_status("Transcribing… Esc stops")
            elif self.recording:
                self._recording_status()
        elif isinstance(event, ls.AudioDecoded):
            self._set_status(
                f"Transcribing {format_duration(event.duration_s)} of audio… Esc stops"
            )
        elif isinstance(event, ls.TranscriptionFinished):
            self.transcribing = False
            self._show_segments(self.segments)
            note = "Stopped. " if event.stopped else ""
            self._set_status(
                f"{note}{event.segments} segments in {event.elapsed_s:.1f}s · "
                "e exports · c sends to chat"
            )
        elif isinstance(event, ls.TranscriptionFailed):
            self.transcribing = False
            self._error(event.message)
        elif isinstance(event, ls.ListenFailed):
            self._error(event.message)

    def _devices_found(self, event: ls.DevicesFound) -> None:
        select = self.query_one("#device", Select)
        if not event.names:
            select.set_options([])
            self._set_status("No input device found: connect a microphone (recording is off)")
            return
        select.set_options([(escape(one_line(name)), name) for name in event.names])
        select.value = event.chosen

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised anyway: nothing stays busy, and the user is told."""
        worker = event.worker
        if event.state != WorkerState.ERROR or worker.group not in WORKER_GROUPS:
            return
        self.recording = self.listen.recording
        self.transcribing = self.listen.transcribing
        self._error(f"{worker.group} failed: {worker.error}")

    # --- selection ------------------------------------------------------------------

    @on(OptionList.OptionHighlighted, "#recordings")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_index >= self._loaded - LOAD_MORE_WITHIN:
            self._load_more()
        if self.recording or event.option_id is None:
            return
        if self.listen.select(int(event.option_id)) is None:
            return
        self.segments = list(self.listen.segments)
        self._show_segments(self.segments)

    def show_recording(self, recording_id: int) -> bool:
        """Highlight (and so show) a recording, reading pages up to it; False if it is gone."""
        listing = self.query_one("#recordings", OptionList)
        while True:
            try:
                listing.highlighted = listing.get_option_index(str(recording_id))
            except OptionDoesNotExist:
                loaded = self._loaded
                self._load_more()
                if self._loaded == loaded:
                    return False
                continue
            listing.focus()
            return True

    def selected(self) -> Recording | None:
        listing = self.query_one("#recordings", OptionList)
        if listing.highlighted is None:
            return self.listen.current
        option = listing.get_option_at_index(listing.highlighted)
        return self.tapp.store.get_recording(int(option.id)) if option.id else None

    # --- recording ------------------------------------------------------------------

    def action_toggle_record(self) -> None:
        if self.recording:
            self._stop_worker(self._options())
            return
        device = self.query_one("#device", Select).value
        if device is Select.BLANK or not device:
            self._error("no input device: connect a microphone and reopen Listen (F4)")
            return
        self._record_worker(str(device), self._options())

    @work(thread=True, group="listen-record", exit_on_error=False)
    def _record_worker(self, device: str, options: TranscribeOptions) -> None:
        if self.listen.start_recording(device, options) is not None:
            self.listen.run_live()

    @work(thread=True, group="listen-stop", exit_on_error=False)
    def _stop_worker(self, options: TranscribeOptions) -> None:
        self.listen.stop_recording(options)

    def stop_recording(self) -> None:
        """Stop at once, without the final pass (on quit: blocks for the WAV file's end)."""
        self.listen.stop_recording(final_pass=False)

    def action_pause(self) -> None:
        if self.listen.toggle_pause() is not None:
            self._recording_status()

    def _tick(self) -> None:
        level, elapsed = self.listen.meter()
        if self.listen.recording:
            self.query_one("#elapsed", Static).update(format_duration(elapsed))
        self.query_one("#level", ProgressBar).update(progress=int(min(1.0, level) * 100))

    # --- transcription --------------------------------------------------------------

    def _busy(self) -> bool:
        if self.recording or self.transcribing:
            self.notify("Busy: stop the recording or transcription first", severity="warning")
            return True
        return False

    @work(thread=True, group="listen-transcribe", exit_on_error=False)
    def _transcribe_worker(
        self, record: Recording | None, path: str, options: TranscribeOptions
    ) -> None:
        if record is None:
            record = self.listen.add_file(path)
        if record is not None:
            self.listen.transcribe(record, options)

    def action_stop_transcription(self) -> None:
        self.listen.cancel_transcription()

    def action_transcribe(self) -> None:
        if self._busy():
            return
        record = self.selected()
        if record is None:
            self.notify("No recording selected", severity="warning")
            return
        self._transcribe_worker(record, "", self._options())

    @work(exclusive=True, group="dialog")
    async def action_open_file(self) -> None:
        if self._busy():
            return
        path = await self.app.push_screen_wait(
            TextPromptScreen("Transcribe which audio file? (WAV, FLAC, OGG, MP3)")
        )
        if path:
            self._transcribe_worker(None, path, self._options())

    # --- managing -----------------------------------------------------------------

    @work(exclusive=True, group="dialog")
    async def action_rename(self) -> None:
        record = self.selected()
        if record is None:
            return
        name = await self.app.push_screen_wait(TextPromptScreen("Rename recording", record.name))
        if name:
            await asyncio.to_thread(self.listen.rename, record, name)

    @work(exclusive=True, group="dialog")
    async def action_delete(self) -> None:
        record = self.selected()
        current = self.listen.current
        if record is None or (self.recording and current and record.id == current.id):
            return
        owned = self.listen.owns_audio(record)
        question = f"Delete “{record.name}”" + (" and its audio file?" if owned else "?")
        if await self.app.push_screen_wait(ConfirmScreen(question)):
            await asyncio.to_thread(self.listen.delete, record)

    @work(exclusive=True, group="dialog")
    async def action_export(self) -> None:
        record = self.selected()
        if record is None or not record.transcript:
            self.notify("No transcript to export yet (t transcribes)", severity="warning")
            return
        fmt = await self.app.push_screen_wait(
            TextPromptScreen("Export as txt, srt, vtt or json?", "srt")
        )
        if fmt not in EXPORT_FORMATS:
            if fmt:
                self.notify(f"unknown format {fmt!r}", severity="error")
            return
        try:
            out = await asyncio.to_thread(self.listen.export, record, fmt)
        except ListenError as error:
            self._error(str(error))
            return
        self.app.copy_to_clipboard(str(out))
        self.notify(f"Exported {out} (path copied)")

    def action_send_to_chat(self) -> None:
        record = self.selected()
        attachment = self.listen.chat_attachment(record) if record is not None else None
        if attachment is None:
            self.notify("No transcript to send yet", severity="warning")
            return
        self.tapp.open_chat_with_attachment(*attachment)
