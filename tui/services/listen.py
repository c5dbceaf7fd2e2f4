"""The Listen panel's domain: microphones, recordings, live and file transcription.

:class:`ListenService` owns the panel's state (the recorder, the recording shown,
its segments, the live draft) and every step that can block: the device scan,
starting and stopping a recording, the live draft, transcribing, WAV repair and
store writes. Those methods say "Blocks"; the screen calls them from thread
workers, the CLI directly. Each catches its own failures: the state is reset
and one :class:`ListenFailed` (or :class:`TranscriptionFailed`) says why.

:func:`transcribe_request` is the one place a ``TranscribeRequest`` is built
(Listen, dictation in Chat and ``triptych transcribe`` all use it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tui import locations, transcript
from tui.backends.select import is_remote, speech_backend_for
from tui.backends.servers import BackendError
from tui.config import Settings
from tui.engines import protocol as p
from tui.files import check_input_file
from tui.services.base import Service
from tui.services.live import SAMPLE_RATE, LivePipeline, Phrase
from tui.store import Recording, Store, StoreError

if TYPE_CHECKING:
    from tui.audio import InputDevice, Recorder
    from tui.services.settings import SettingsService

LIVE_TICK_S = 0.1
RECORDINGS_PAGE = 50
EXPORT_FORMATS = ("txt", "srt", "vtt", "json")
REPAIR_QUIET_S = 5.0
"""A WAV file written to this recently may still be recording in another instance."""


class ListenError(Exception):
    """Something the user can fix, in one line (no model, bad file, busy...)."""


class SpeechEngine(Protocol):
    """What the service needs of the speech engine host (tui.engines.host.EngineHost)."""

    def submit(self, request: Any) -> Iterator[Any]: ...

    def cancel(self) -> None: ...


@dataclass(frozen=True)
class TranscribeOptions:
    """The Listen form: model file, language, task and vocabulary prompt."""

    model: str
    language: str = "auto"
    translate: bool = False
    initial_prompt: str = ""


# --- events -----------------------------------------------------------------------


@dataclass(frozen=True)
class DevicesFound:
    """The device scan ended; ``chosen`` is the one to record from ('' when none)."""

    names: tuple[str, ...]
    chosen: str


@dataclass(frozen=True)
class RecordingsChanged:
    """Recordings were added, renamed, deleted or repaired: reload the list."""


@dataclass(frozen=True)
class RecordingDeleted:
    recording_id: int


@dataclass(frozen=True)
class RecordingStarted:
    recording: Recording


@dataclass(frozen=True)
class RecordingStopped:
    recording: Recording | None
    error: str = ""
    """Why the recording ended on its own (device lost...), '' after a stop."""


@dataclass(frozen=True)
class LiveSegmentTranscribed:
    """A phrase of the recording in progress was transcribed (the live draft grows)."""

    segment: transcript.Segment


@dataclass(frozen=True)
class TranscriptionStarted:
    recording: Recording


@dataclass(frozen=True)
class AudioDecoded:
    duration_s: float


@dataclass(frozen=True)
class SegmentTranscribed:
    segment: transcript.Segment


@dataclass(frozen=True)
class EngineQueued:
    """The transcription waits for cores that other engines use."""

    behind: tuple[str, ...]
    live: bool


@dataclass(frozen=True)
class EngineGranted:
    live: bool


@dataclass(frozen=True)
class TranscriptionFinished:
    recording: Recording
    segments: int
    elapsed_s: float
    stopped: bool
    """Esc stopped it: what was transcribed is shown, not saved."""


@dataclass(frozen=True)
class TranscriptionFailed:
    """A transcription ended without a transcript; nothing is transcribing any more."""

    message: str


@dataclass(frozen=True)
class ListenFailed:
    """Any other step failed (recording, live draft, store, export): one line."""

    message: str


# --- module-level helpers ---------------------------------------------------------


def recordings_dir() -> Path:
    return locations.data_dir() / "recordings"


def exports_dir() -> Path:
    return locations.data_dir() / "exports"


def check_speech_model(model: str | Path) -> Path | str:
    """The whisper.cpp model file, header checked; ListenError naming what is wrong.

    A remote spec (``server:NAME[/MODEL]``) is returned as it is: the server checks it.
    """
    from tui.formats import ModelFileError, whisper

    spec = str(model).strip()
    if not spec:
        raise ListenError("choose a speech model: type the path of a whisper.cpp ggml file")
    if is_remote(spec):
        return spec
    path = Path(spec).expanduser()
    try:
        whisper.read_whisper_info(path)
    except ModelFileError as error:
        raise ListenError(str(error)) from error
    return path


def transcribe_request(
    settings: Settings,
    *,
    audio_path: str | Path = "",
    samples: np.ndarray | bytes | None = None,
    offset_s: float = 0.0,
    model: str | Path | None = None,
    language: str | None = None,
    translate: bool = False,
    initial_prompt: str = "",
    n_threads: int | None = None,
) -> p.TranscribeRequest:
    """The one place a TranscribeRequest is built.

    Model, language and threads default to the settings. Either ``audio_path``
    (any format the engine decodes) or ``samples`` (mono float32 at 16 kHz,
    starting ``offset_s`` into the recording). The model file is not checked
    here: :func:`check_speech_model` does that.
    """
    if isinstance(samples, np.ndarray):
        samples = np.asarray(samples, dtype=np.float32).tobytes()
    spec = str(model if model is not None else settings.speech_model).strip()
    if spec and not is_remote(spec):
        spec = str(Path(spec).expanduser())
    return p.TranscribeRequest(
        model_path=spec,
        audio_path=str(audio_path) if audio_path else "",
        samples=samples,
        offset_s=offset_s,
        language=(language if language is not None else settings.speech_language) or "auto",
        translate=translate,
        initial_prompt=initial_prompt,
        n_threads=settings.threads if n_threads is None else n_threads,
        use_gpu=settings.speech_use_gpu,
    )


def scan_devices(preferred: str = "") -> tuple[list[InputDevice], InputDevice | None]:
    """Blocks (re-initialises PortAudio): every input device and the one to use."""
    from tui.audio import choose_input_device, list_input_devices

    devices = list_input_devices()
    return devices, choose_input_device(devices, preferred)


def start_dictation(settings: Settings) -> Recorder:
    """Blocks: scan the devices and start recording a dictation; ListenError if not.

    The WAV file goes to the data dir's ``dictation/`` (the caller deletes it).
    """
    from tui.audio import Recorder

    if not settings.speech_model:
        raise ListenError("Set a speech model first: Listen (F4), whisper model field")
    _devices, chosen = scan_devices(settings.input_device)
    if chosen is None:
        raise ListenError("No microphone found")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = locations.data_dir() / "dictation" / f"{stamp}.wav"
    recorder = Recorder(path, device=chosen.name, samplerate=SAMPLE_RATE, channels=1)
    try:
        recorder.start()
    except Exception as error:  # noqa: BLE001 - PortAudio raises assorted errors
        raise ListenError(f"could not record from {chosen.name}: {error}") from error
    return recorder


def _describe(error: BaseException) -> str:
    if isinstance(error, ListenError | StoreError | ValueError | OSError):
        return str(error)
    return f"{type(error).__name__}: {error}"


# --- the service ------------------------------------------------------------------


class ListenService(Service):
    """Recording, live draft, transcription and the recordings list, without Textual."""

    def __init__(
        self,
        settings: SettingsService,
        store: Store,
        speech: SpeechEngine,
        *,
        tick_s: float = LIVE_TICK_S,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self.speech = speech
        self.tick_s = tick_s
        self.recorder: Recorder | None = None
        self.current: Recording | None = None
        """The recording shown (being recorded, transcribed or selected)."""
        self.segments: list[transcript.Segment] = []
        """The transcript of ``current`` (grows during a transcription)."""
        self.live_segments: list[transcript.Segment] = []
        """The live draft of the recording in progress."""
        self.options = TranscribeOptions(settings.current.speech_model)
        self.transcribing = False
        self.live_running = False
        """The live draft's worker is running (it ends with the recording or a failure)."""
        self._pipeline: LivePipeline | None = None
        self._starting = False
        self._lock = threading.RLock()
        self._stop_live = threading.Event()
        self._live_idle = threading.Event()
        self._live_idle.set()
        self._transcriber: SpeechEngine | None = None
        """The backend of the transcription running (the engine host or a server)."""

    @property
    def recording(self) -> bool:
        return self.recorder is not None

    # --- devices and the list -------------------------------------------------------

    def scan_devices(self) -> DevicesFound:
        """Blocks (re-initialises PortAudio): find the input devices, choose one."""
        devices, chosen = scan_devices(self.settings.current.input_device)
        found = DevicesFound(tuple(d.name for d in devices), chosen.name if chosen else "")
        self.emit(found)
        return found

    def repair_crashed(self) -> int:
        """Blocks: fix the WAV header and duration of recordings a crash cut short."""
        from tui.audio import repair_wav

        repaired = 0
        try:
            candidates = self.store.list_unmeasured_recordings()
        except StoreError as error:
            self.emit(ListenFailed(str(error)))
            return 0
        for record in candidates:
            path = Path(record.path)
            if not path.is_file() or path.suffix != ".wav":
                continue
            try:
                # Another instance may still be writing it: leave files touched recently.
                if datetime.now().timestamp() - path.stat().st_mtime < REPAIR_QUIET_S:
                    continue
                duration = repair_wav(path)
                self.store.update_recording(record.id, duration_s=duration)
                repaired += 1
            except (OSError, ValueError, StoreError):
                continue
        if repaired:
            self.emit(RecordingsChanged())
        return repaired

    def recordings_page(self, offset: int = 0, limit: int = RECORDINGS_PAGE) -> list[Recording]:
        """One page of the recordings, newest first (a read of ``limit`` rows)."""
        return self.store.list_recordings(limit=limit, offset=offset)

    def select(self, recording_id: int) -> Recording | None:
        """Show a recording: it becomes ``current`` with its saved transcript."""
        record = self.store.get_recording(recording_id)
        if record is not None and not self.recording:
            self.current = record
            self.segments = [transcript.Segment(**s) for s in record.transcript]
        return record

    # --- recording ------------------------------------------------------------------

    def start_recording(self, device: str, options: TranscribeOptions) -> Recording | None:
        """Blocks (opens the device, writes the store): start recording from ``device``.

        Returns the new recording, or None (a ListenFailed says why; a second
        start while one runs is ignored).
        """
        from tui.audio import Recorder

        with self._lock:
            if self.recorder is not None or self._starting:
                return None
            self._starting = True
        try:
            if not device:
                raise ListenError("no input device: connect a microphone and reopen Listen (F4)")
            now = datetime.now()
            path = recordings_dir() / (now.strftime("%Y%m%d-%H%M%S") + ".wav")
            recorder = Recorder(path, device=device, samplerate=SAMPLE_RATE, channels=1)
            try:
                recorder.start()
            except Exception as error:  # noqa: BLE001 - PortAudio raises assorted errors
                raise ListenError(f"could not record from {device}: {error}") from error
            try:
                record = self.store.add_recording(
                    str(path), now.strftime("Recording %Y-%m-%d %H:%M:%S"), device=device
                )
            except StoreError:
                recorder.stop()
                raise
            with self._lock:
                self.recorder = recorder
                self.current = record
                self.options = options
                self.segments = []
                self.live_segments = []
                self._pipeline = LivePipeline(SAMPLE_RATE)
                self._stop_live.clear()
        except Exception as error:  # noqa: BLE001 - every failure is told, none kills the worker
            self.emit(ListenFailed(_describe(error)))
            return None
        finally:
            self._starting = False
        try:
            self.settings.update(input_device=device)
        except Exception as error:  # noqa: BLE001 - the recording goes on regardless
            self.emit(ListenFailed(f"input device not remembered: {_describe(error)}"))
        self.emit(RecordingStarted(record))
        self.emit(RecordingsChanged())
        return record

    def toggle_pause(self) -> bool | None:
        """Pause or resume; the new paused state, None when not recording."""
        recorder = self.recorder
        if recorder is None:
            return None
        if recorder.paused:
            recorder.resume()
        else:
            recorder.pause()
        return recorder.paused

    def meter(self) -> tuple[float, float]:
        """(level 0..1, seconds recorded) of the recording in progress; cheap."""
        recorder = self.recorder
        return (recorder.level, recorder.elapsed_s) if recorder is not None else (0.0, 0.0)

    def run_live(self) -> None:
        """Blocks until the recording stops: transcribe each phrase as the VAD ends it.

        A failure stops the live draft only (the recording goes on and the final
        pass still runs): one ListenFailed, and the live state is reset. A device
        that goes away ends the recording as a stop would, final pass included.
        """
        with self._lock:
            recorder, pipeline = self.recorder, self._pipeline
            if recorder is None or pipeline is None or self._stop_live.is_set():
                return
            self._live_idle.clear()
            self.live_running = True
        lost = False
        try:
            offset = 0
            while not self._stop_live.is_set():
                samples, offset = recorder.samples_since(offset)
                pipeline.feed(samples)
                if recorder.error:
                    lost = True
                    break
                phrase = pipeline.next_phrase()
                if phrase is None:
                    self._stop_live.wait(self.tick_s)
                else:
                    self.transcribe_phrase(phrase)
        except Exception as error:  # noqa: BLE001 - reset and tell, whatever it was
            pipeline.clear()
            self.emit(
                ListenFailed(
                    f"live draft stopped: {_describe(error)} "
                    "(still recording; the whole recording is transcribed when it stops)"
                )
            )
        finally:
            self.live_running = False
            self._live_idle.set()
        if lost:
            self.stop_recording()

    def transcribe_phrase(self, phrase: Phrase) -> None:
        """Blocks: transcribe one phrase into the live draft (``run_live`` calls it).

        Raises ListenError when the model file is unusable; an engine failure
        loses this phrase only (one ListenFailed).
        """
        options = self.options
        model = check_speech_model(options.model)
        self._remember(options)
        request = self._request(options, model, samples=phrase.samples, offset_s=phrase.offset_s)
        for event in self._backend(model).submit(request):
            if isinstance(event, p.SegmentTranscribed):
                segment = transcript.Segment(event.start_s, event.end_s, event.text)
                self.live_segments.append(segment)
                self.emit(LiveSegmentTranscribed(segment))
            elif isinstance(event, p.WaitingForCpu):
                self.emit(EngineQueued(tuple(event.behind), live=True))
            elif isinstance(event, p.CpuGranted):
                self.emit(EngineGranted(live=True))
            elif isinstance(event, p.EngineFailed):
                # One phrase lost (e.g. the engine died); the next one starts it again.
                self.emit(ListenFailed(event.message))

    def stop_recording(
        self, options: TranscribeOptions | None = None, *, final_pass: bool = True
    ) -> None:
        """Blocks: stop, save the duration, then (final_pass) transcribe the whole recording.

        The final pass waits for the live draft's phrase in progress and replaces
        the draft. Without it (quitting) nothing waits for the live draft.
        """
        with self._lock:
            recorder, self.recorder = self.recorder, None
            self._stop_live.set()
            if options is not None:
                self.options = options
        if recorder is None:
            return
        info = recorder.stop()
        record = self.current
        if record is not None:
            try:
                self.store.update_recording(record.id, duration_s=info.duration_s)
                record = self.store.get_recording(record.id) or record
                self.current = record
            except StoreError as error:
                self.emit(ListenFailed(str(error)))
        self.emit(RecordingStopped(record, info.error or ""))
        self.emit(RecordingsChanged())
        if not final_pass or record is None:
            return
        self._live_idle.wait()
        self.transcribe(record, self.options)

    # --- transcription --------------------------------------------------------------

    def add_file(self, path: str | Path) -> Recording | None:
        """Blocks: check an audio file and add it to the recordings (ListenFailed if not)."""
        audio = Path(path).expanduser()
        try:
            check_input_file(audio, "audio file")
            try:
                import soundfile

                duration = float(soundfile.info(str(audio)).duration)
            except Exception as error:  # noqa: BLE001 - libsndfile reports many kinds
                raise ListenError(f"not an audio file: {audio} ({error})") from error
            record = self.store.add_recording(str(audio), audio.name, "file", duration)
        except (ValueError, ListenError, StoreError) as error:
            self.emit(ListenFailed(str(error)))
            return None
        self.emit(RecordingsChanged())
        return record

    def transcribe(self, record: Recording, options: TranscribeOptions) -> bool:
        """Blocks: transcribe a recording with the form's options and save the transcript.

        False when it did not run or failed (TranscriptionFailed says why). Esc
        (``cancel_transcription``) keeps what was transcribed on screen, unsaved.
        """
        with self._lock:
            if self.transcribing:
                self.emit(TranscriptionFailed("busy: a transcription is running"))
                return False
            self.transcribing = True
        outcome: Any
        try:
            model = check_speech_model(options.model)
            self._remember(options)
            request = self._request(options, model, audio_path=record.path)
            self.current = record
            self.segments = []
            self.emit(TranscriptionStarted(record))
            outcome = self._run_transcription(record, request, options)
        except Exception as error:  # noqa: BLE001 - reset and tell, whatever it was
            outcome = TranscriptionFailed(_describe(error))
        finally:
            self._transcriber = None
            self.transcribing = False
        self.emit(outcome)
        if isinstance(outcome, TranscriptionFinished):
            self.emit(RecordingsChanged())
        return isinstance(outcome, TranscriptionFinished)

    def _run_transcription(
        self, record: Recording, request: p.TranscribeRequest, options: TranscribeOptions
    ) -> TranscriptionFinished:
        finished: p.GenerationFinished | None = None
        self._transcriber = self._backend(request.model_path)
        for event in self._transcriber.submit(request):
            if isinstance(event, p.SegmentTranscribed):
                segment = transcript.Segment(event.start_s, event.end_s, event.text)
                self.segments.append(segment)
                self.emit(SegmentTranscribed(segment))
            elif isinstance(event, p.AudioLoaded):
                self.emit(AudioDecoded(event.duration_s))
            elif isinstance(event, p.WaitingForCpu):
                self.emit(EngineQueued(tuple(event.behind), live=False))
            elif isinstance(event, p.CpuGranted):
                self.emit(EngineGranted(live=False))
            elif isinstance(event, p.EngineFailed):
                raise ListenError(event.message)
            elif isinstance(event, p.GenerationFinished):
                finished = event
        if finished is None:
            raise ListenError("the speech engine ended without finishing")
        stopped = finished.reason == "cancelled"
        if not stopped:
            self.store.update_recording(
                record.id,
                transcript=[vars(s) for s in self.segments],
                language=options.language.strip() or "auto",
                model=options.model.strip()
                if is_remote(options.model)
                else Path(options.model).name,
            )
            record = self.store.get_recording(record.id) or record
            self.current = record
        return TranscriptionFinished(record, len(self.segments), finished.stats.elapsed_s, stopped)

    def cancel_transcription(self) -> None:
        """Stop a running transcription (the engine is killed if it does not stop)."""
        if self.transcribing:
            (self._transcriber or self.speech).cancel()

    def _backend(self, model: str | Path) -> SpeechEngine:
        """The local engine host or the server ``model`` names; ListenError if unusable."""
        try:
            return speech_backend_for(str(model), self.settings.current, self.speech)
        except BackendError as error:
            raise ListenError(str(error)) from None

    def _remember(self, options: TranscribeOptions) -> None:
        """The model and language used last become the settings (dictation uses them)."""
        self.settings.update(
            speech_model=options.model.strip(), speech_language=options.language.strip() or "auto"
        )

    def _request(
        self, options: TranscribeOptions, model: Path | str, **audio: Any
    ) -> p.TranscribeRequest:
        return transcribe_request(
            self.settings.current,
            model=model,
            language=options.language.strip() or "auto",
            translate=options.translate,
            initial_prompt=options.initial_prompt.strip(),
            **audio,
        )

    # --- managing -------------------------------------------------------------------

    def rename(self, record: Recording, name: str) -> None:
        """Blocks (store write)."""
        try:
            self.store.update_recording(record.id, name=name)
        except StoreError as error:
            self.emit(ListenFailed(str(error)))
            return
        self.emit(RecordingsChanged())

    def owns_audio(self, record: Recording) -> bool:
        """The audio file is one Triptych recorded (deleting the recording deletes it)."""
        return Path(record.path).resolve().is_relative_to(recordings_dir().resolve())

    def delete(self, record: Recording) -> bool:
        """Blocks: forget a recording and delete its audio when Triptych recorded it.

        Files the user opened are never deleted, nor the recording in progress.
        """
        if self.recording and self.current is not None and self.current.id == record.id:
            return False
        try:
            if self.owns_audio(record):
                Path(record.path).unlink(missing_ok=True)
            self.store.delete_recording(record.id)
        except (OSError, StoreError) as error:
            self.emit(ListenFailed(_describe(error)))
            return False
        if self.current is not None and self.current.id == record.id:
            self.current = None
            self.segments = []
        self.emit(RecordingDeleted(record.id))
        self.emit(RecordingsChanged())
        return True

    def export(self, record: Recording, fmt: str) -> Path:
        """Blocks: write the transcript as txt, srt, vtt or json into exports/.

        Returns the file; ListenError when there is no transcript, the format is
        unknown or the file cannot be written.
        """
        segments = [transcript.Segment(**s) for s in record.transcript]
        if not segments:
            raise ListenError("No transcript to export yet (t transcribes)")
        if fmt not in EXPORT_FORMATS:
            raise ListenError(f"unknown format {fmt!r}")
        meta = {"recording": record.name, "file": record.path, "language": record.language}
        text = transcript.export(segments, fmt, meta)
        out = exports_dir() / f"{Path(record.path).stem}.{fmt}"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as error:
            raise ListenError(f"could not write {out}: {error}") from error
        return out

    @staticmethod
    def chat_attachment(record: Recording) -> tuple[str, str] | None:
        """(title, text) to open a conversation with, None without a transcript."""
        if not record.transcript:
            return None
        text = transcript.to_txt([transcript.Segment(**s) for s in record.transcript])
        return f"Transcript of {record.name}", text
