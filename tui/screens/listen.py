"""The Listen panel: record the microphone, transcribe live and from files, export."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option

from tui import locations, models, transcript
from tui.cpu import describe_wait
from tui.engines import protocol as p
from tui.files import check_input_file
from tui.safe_text import one_line
from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.store import Recording, StoreError
from tui.widgets.engine_status import EngineStatus
from tui.widgets.panel_footer import PanelFooter

if TYPE_CHECKING:
    from tui.app import TriptychApp
    from tui.audio import Recorder

SAMPLE_RATE = 16_000
LIVE_TICK_S = 0.1


def recordings_dir() -> Path:
    return locations.data_dir() / "recordings"


def exports_dir() -> Path:
    return locations.data_dir() / "exports"


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

    class EngineEvent(Message):
        def __init__(self, event: Any, purpose: str) -> None:
            super().__init__()
            self.event = event
            self.purpose = purpose

    def __init__(self) -> None:
        super().__init__()
        self.recorder: Recorder | None = None
        self.current: Recording | None = None
        self.segments: list[transcript.Segment] = []
        self.live_segments: list[transcript.Segment] = []
        self._live_offset = 0
        self._vad: Any = None
        self._phrases: list[tuple[int, int]] = []
        self._buffer: Any = None
        self._buffer_start = 0
        """Live audio not yet handed to the transcriber, and where it starts (sample index)."""
        self._live_busy = False
        self._final_pending = False
        self._device_name = ""

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

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
        self._load_devices()
        self._repair_crashed()
        self.refresh_recordings()
        self.query_one("#recordings", OptionList).focus()
        self.set_interval(LIVE_TICK_S, self._tick)

    def _load_devices(self) -> None:
        from tui.audio import choose_input_device, list_input_devices

        select = self.query_one("#device", Select)
        devices = list_input_devices()
        if not devices:
            select.set_options([])
            self._set_status("No input device found: connect a microphone (recording is off)")
            return
        select.set_options([(escape(one_line(d.name)), d.name) for d in devices])
        chosen = choose_input_device(devices, self.tapp.settings.input_device)
        assert chosen is not None  # devices is not empty
        select.value = chosen.name

    def _repair_crashed(self) -> None:
        """Recordings cut short by a crash: fix their WAV header and duration."""
        from tui.audio import repair_wav, wav_needs_repair

        for record in self.tapp.store.list_recordings():
            path = Path(record.path)
            if record.duration_s > 0 or not path.is_file() or path.suffix != ".wav":
                continue
            try:
                # Another instance may still be writing it: leave files touched recently.
                if time.time() - path.stat().st_mtime < 5:
                    continue
                if wav_needs_repair(path) or record.duration_s == 0:
                    duration = repair_wav(path)
                    self.tapp.store.update_recording(record.id, duration_s=duration)
            except (OSError, ValueError):
                continue

    def refresh_recordings(self) -> None:
        listing = self.query_one("#recordings", OptionList)
        recordings = self.tapp.store.list_recordings()
        listing.set_options(
            Option(
                f"{escape(one_line(r.name))}\n  {format_duration(r.duration_s)} · "
                f"{datetime.fromtimestamp(r.created):%Y-%m-%d %H:%M} · "
                f"{escape(one_line(r.device or '?'))}",
                id=str(r.id),
            )
            for r in recordings
        )
        if self.current is not None:
            try:
                listing.highlighted = listing.get_option_index(str(self.current.id))
            except Exception:  # noqa: BLE001 - it may have been deleted
                pass

    def _set_status(self, text: str) -> None:
        self.query_one("#listen-status", Static).update(text)

    def _show_segments(self, segments: list[transcript.Segment], draft: bool = False) -> None:
        text = segments_text(segments)
        if draft and text:
            text = "[i]live draft[/i]\n" + text
        self.query_one("#transcript", Static).update(text or "[dim](no speech)[/dim]")
        self.query_one("#transcript-scroll").scroll_end(animate=False)

    def _error(self, text: str) -> None:
        self._set_status(f"[b red]Error:[/] {escape(one_line(text))}")
        self.notify(text, severity="error", timeout=8)

    # --- selection ------------------------------------------------------------------

    @on(OptionList.OptionHighlighted, "#recordings")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if self.recording or event.option_id is None:
            return
        record = self.tapp.store.get_recording(int(event.option_id))
        if record is None:
            return
        self.current = record
        self.segments = [transcript.Segment(**s) for s in record.transcript]
        self._show_segments(self.segments)

    def selected(self) -> Recording | None:
        listing = self.query_one("#recordings", OptionList)
        if listing.highlighted is None:
            return self.current
        option = listing.get_option_at_index(listing.highlighted)
        return self.tapp.store.get_recording(int(option.id)) if option.id else None

    # --- recording --------------------------------------------------------------

    def action_toggle_record(self) -> None:
        if self.recording:
            self.stop_recording()
        else:
            self.start_recording()

    def start_recording(self) -> None:
        from tui.audio import Recorder

        device = self.query_one("#device", Select).value
        if device is Select.BLANK or not device:
            self._error("no input device: connect a microphone and reopen Listen (F4)")
            return
        name = datetime.now().strftime("Recording %Y-%m-%d %H:%M:%S")
        path = recordings_dir() / (datetime.now().strftime("%Y%m%d-%H%M%S") + ".wav")
        path.parent.mkdir(parents=True, exist_ok=True)
        recorder = Recorder(path, device=str(device), samplerate=SAMPLE_RATE, channels=1)
        try:
            recorder.start()
        except Exception as error:  # noqa: BLE001 - PortAudio raises assorted errors
            self._error(f"could not record from {device}: {error}")
            return
        self.tapp.settings.input_device = str(device)
        try:
            self.current = self.tapp.store.add_recording(str(path), name, device=str(device))
        except StoreError as error:
            recorder.stop()
            self._error(str(error))
            return
        self.recorder = recorder
        self._device_name = str(device)
        self.recording = True
        self.segments = []
        self.live_segments = []
        self._live_offset = 0
        self._phrases = []
        self._buffer = None
        self._buffer_start = 0
        from tui.vad import EnergyVAD

        self._vad = EnergyVAD(samplerate=SAMPLE_RATE)
        self._show_segments([], draft=True)
        self.refresh_recordings()
        self._set_status("Recording… Space stops, p pauses")

    def stop_recording(self) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        info = recorder.stop()
        self.recorder = None
        self.recording = False
        self._flush_vad(final=True)
        if self.current is not None:
            self.tapp.store.update_recording(self.current.id, duration_s=info.duration_s)
            self.current = self.tapp.store.get_recording(self.current.id)
        self.refresh_recordings()
        error = getattr(recorder, "error", None)
        if error:
            self._error(f"recording stopped: {error} (what was captured is saved)")
        # The final pass over the whole recording replaces the live draft.
        self._final_pending = True
        self._maybe_final_pass()

    def action_pause(self) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        if recorder.paused:
            recorder.resume()
            self._set_status("Recording… Space stops, p pauses")
        else:
            recorder.pause()
            self._set_status("Paused: p resumes, Space stops")

    def _tick(self) -> None:
        recorder = self.recorder
        if recorder is None:
            self.query_one("#level", ProgressBar).update(progress=0)
            return
        self.query_one("#elapsed", Static).update(format_duration(recorder.elapsed_s))
        self.query_one("#level", ProgressBar).update(progress=int(min(1.0, recorder.level) * 100))
        if getattr(recorder, "error", None):
            self.stop_recording()
            return
        samples, self._live_offset = recorder.samples_since(self._live_offset)
        if samples.size:
            import numpy as np

            self._buffer = (
                samples if self._buffer is None else np.concatenate((self._buffer, samples))
            )
        if self._vad is not None and samples.size:
            for start, end in self._vad.feed(samples):
                self._phrases.append((start, end))
        self._maybe_live_pass()

    def _flush_vad(self, final: bool) -> None:
        if self._vad is not None and final:
            for start, end in self._vad.flush():
                self._phrases.append((start, end))

    # --- transcription ---------------------------------------------------------------

    def _request(self, **kwargs: Any) -> p.TranscribeRequest | None:
        model = self.query_one("#speech-model", Input).value.strip()
        if not model:
            self._error("choose a speech model: type the path of a whisper.cpp ggml file")
            return None
        try:
            models.read_whisper_info(model)
        except models.ModelFileError as error:
            self._error(str(error))
            return None
        language = self.query_one("#language", Input).value.strip() or "auto"
        settings = self.tapp.settings
        if settings.speech_model != model or settings.speech_language != language:
            settings.speech_model, settings.speech_language = model, language
            try:
                settings.save()
            except OSError:
                pass
        return p.TranscribeRequest(
            model_path=str(Path(model).expanduser()),
            language=language,
            translate=self.query_one("#task", Select).value == "translate",
            initial_prompt=self.query_one("#initial-prompt", Input).value.strip(),
            n_threads=settings.threads,
            use_gpu=settings.speech_use_gpu,
            **kwargs,
        )

    def _maybe_live_pass(self) -> None:
        if self._live_busy or self.transcribing or not self._phrases or self.recorder is None:
            return
        start, end = self._phrases.pop(0)
        begin = max(0, start - self._buffer_start)
        audio = self._buffer[begin : end - self._buffer_start]
        # Drop what has been handed over.
        self._buffer = self._buffer[end - self._buffer_start :]
        self._buffer_start = end
        request = self._request(
            samples=audio.astype("float32").tobytes(), offset_s=start / SAMPLE_RATE
        )
        if request is None:
            self._phrases.clear()
            return
        self._live_busy = True
        self._run(request, "live")

    def _maybe_final_pass(self) -> None:
        if not self._final_pending or self._live_busy or self.transcribing:
            return
        self._final_pending = False
        if self.current is None:
            return
        self._transcribe_recording(self.current)

    def _transcribe_recording(self, record: Recording) -> None:
        request = self._request(audio_path=record.path)
        if request is None:
            return
        self.current = record
        self.segments = []
        self.transcribing = True
        self._set_status(f"Transcribing {escape(one_line(record.name))}… Esc stops")
        self._run(request, "final")

    @work(thread=True, group="speech", exit_on_error=False)
    def _run(self, request: p.TranscribeRequest, purpose: str) -> None:
        for event in self.tapp.speech_host.submit(request):
            self.post_message(self.EngineEvent(event, purpose))

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        event, purpose = message.event, message.purpose
        if isinstance(event, p.SegmentTranscribed):
            segment = transcript.Segment(event.start_s, event.end_s, event.text)
            if purpose == "live":
                self.live_segments.append(segment)
                self._show_segments(self.live_segments, draft=True)
            else:
                self.segments.append(segment)
                self._show_segments(self.segments)
        elif isinstance(event, p.WaitingForCpu):
            # A live phrase waits too: the recording goes on, the draft catches up later.
            what = "The live draft" if purpose == "live" else "Transcription"
            self._set_status(f"{what} is queued. {describe_wait(event.behind)}.")
        elif isinstance(event, p.CpuGranted):
            if purpose != "live":
                self._set_status("Transcribing… Esc stops")
            elif self.recorder is not None:
                self._set_status(
                    "Paused: p resumes, Space stops"
                    if self.recorder.paused
                    else "Recording… Space stops, p pauses"
                )
        elif isinstance(event, p.AudioLoaded) and purpose != "live":
            self._set_status(
                f"Transcribing {format_duration(event.duration_s)} of audio… Esc stops"
            )
        elif isinstance(event, p.GenerationFinished | p.EngineFailed):
            if purpose == "live":
                self._live_busy = False
                if isinstance(event, p.EngineFailed):
                    self._error(event.message)
                self._maybe_live_pass()
                self._maybe_final_pass()
                return
            self.transcribing = False
            if isinstance(event, p.EngineFailed):
                self._error(event.message)
                return
            self._save_transcript(event)

    def _save_transcript(self, event: p.GenerationFinished) -> None:
        record = self.current
        self._show_segments(self.segments)
        stopped = event.reason == "cancelled"
        if record is not None and not stopped:
            try:
                self.tapp.store.update_recording(
                    record.id,
                    transcript=[vars(s) for s in self.segments],
                    language=self.query_one("#language", Input).value.strip() or "auto",
                    model=Path(self.query_one("#speech-model", Input).value).name,
                )
            except StoreError as error:
                self._error(str(error))
                return
            self.current = self.tapp.store.get_recording(record.id)
        note = "Stopped. " if stopped else ""
        self._set_status(
            f"{note}{len(self.segments)} segments in {event.stats.elapsed_s:.1f}s · "
            "e exports · c sends to chat"
        )

    def action_stop_transcription(self) -> None:
        if self.transcribing:
            self.tapp.speech_host.cancel()

    def action_transcribe(self) -> None:
        if self.recording or self.transcribing:
            self.notify("Busy: stop the recording or transcription first", severity="warning")
            return
        record = self.selected()
        if record is None:
            self.notify("No recording selected", severity="warning")
            return
        self._transcribe_recording(record)

    @work(exclusive=True, group="dialog")
    async def action_open_file(self) -> None:
        if self.recording or self.transcribing:
            self.notify("Busy: stop the recording or transcription first", severity="warning")
            return
        path = await self.app.push_screen_wait(
            TextPromptScreen("Transcribe which audio file? (WAV, FLAC, OGG, MP3)")
        )
        if not path:
            return
        audio = Path(path).expanduser()
        try:
            check_input_file(audio, "audio file")
        except ValueError as error:
            self._error(str(error))
            return
        try:
            import soundfile

            duration = float(soundfile.info(str(audio)).duration)
        except Exception as error:  # noqa: BLE001 - libsndfile reports many kinds
            self._error(f"not an audio file: {audio} ({error})")
            return
        record = self.tapp.store.add_recording(str(audio), audio.name, "file", duration)
        self.refresh_recordings()
        self._transcribe_recording(record)

    # --- managing -----------------------------------------------------------------

    @work(exclusive=True, group="dialog")
    async def action_rename(self) -> None:
        record = self.selected()
        if record is None:
            return
        name = await self.app.push_screen_wait(TextPromptScreen("Rename recording", record.name))
        if name:
            self.tapp.store.update_recording(record.id, name=name)
            self.refresh_recordings()

    @work(exclusive=True, group="dialog")
    async def action_delete(self) -> None:
        record = self.selected()
        if record is None or (self.recording and self.current and record.id == self.current.id):
            return
        in_data_dir = Path(record.path).resolve().is_relative_to(recordings_dir().resolve())
        question = f"Delete “{record.name}”" + (" and its audio file?" if in_data_dir else "?")
        if not await self.app.push_screen_wait(ConfirmScreen(question)):
            return
        if in_data_dir:
            Path(record.path).unlink(missing_ok=True)
        self.tapp.store.delete_recording(record.id)
        if self.current and self.current.id == record.id:
            self.current = None
            self.segments = []
            self._show_segments([])
        self.refresh_recordings()

    @work(exclusive=True, group="dialog")
    async def action_export(self) -> None:
        record = self.selected()
        segments = [transcript.Segment(**s) for s in record.transcript] if record else []
        if record is None or not segments:
            self.notify("No transcript to export yet (t transcribes)", severity="warning")
            return
        fmt = await self.app.push_screen_wait(
            TextPromptScreen("Export as txt, srt, vtt or json?", "srt")
        )
        if fmt not in ("txt", "srt", "vtt", "json"):
            if fmt:
                self.notify(f"unknown format {fmt!r}", severity="error")
            return
        meta = {"recording": record.name, "file": record.path, "language": record.language}
        text = transcript.export(segments, fmt, meta)
        out = exports_dir() / f"{Path(record.path).stem}.{fmt}"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as error:
            self._error(f"could not write {out}: {error}")
            return
        self.app.copy_to_clipboard(str(out))
        self.notify(f"Exported {out} (path copied)")

    def action_send_to_chat(self) -> None:
        record = self.selected()
        if record is None or not record.transcript:
            self.notify("No transcript to send yet", severity="warning")
            return
        text = transcript.to_txt([transcript.Segment(**s) for s in record.transcript])
        self.tapp.open_chat_with_attachment(f"Transcript of {record.name}", text)
