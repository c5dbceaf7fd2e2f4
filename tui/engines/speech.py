"""whisper.cpp side of the speech engine (pywhispercpp). Runs only in an engine process.

One model stays loaded. Audio goes to the model in windows of at most 30 s
(tui.audiofile.AudioWindows: decoded as it goes, cut at quiet points), so memory
stays flat whatever the length of a file: whisper.cpp's own buffers (samples and
mel spectrogram) otherwise grow with the input. Segments stream back as
whisper.cpp produces them, shifted to where their window starts (a window's
leading silence is cut off first: Whisper would date its first words at the
start of its input, however late they come). Cancel is
honoured through whisper.cpp's abort callback and between windows. A window
with no speech energy is not sent to the model at all, so silence never becomes
invented text and hours of it cost only the decoding.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import numpy as np

from tui.cpu import bound_threads
from tui.engines import protocol as p
from tui.engines.channel import Channel
from tui.formats import ModelFileError
from tui.formats.whisper import read_whisper_info

SAMPLE_RATE = 16_000
SILENCE_RMS = 0.003
"""Audio whose loudest 30 ms frame is quieter than this (full scale 1.0) holds no speech."""


LEAD_IN_S = 0.5
"""Quiet audio kept before the first loud frame when a window's leading silence is cut."""
MIN_TRIM_S = 1.0
"""Leading silence shorter than this (after the lead-in) is left in."""
_FRAME = 480  # 30 ms


def _frame_rms(samples: np.ndarray) -> np.ndarray:
    usable = samples[: samples.size - samples.size % _FRAME].reshape(-1, _FRAME)
    return np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1))


def has_speech_energy(samples: np.ndarray) -> bool:
    """True when some 30 ms frame is loud enough to hold speech."""
    if samples.size < _FRAME:
        return False
    return bool(_frame_rms(samples).max() >= SILENCE_RMS)


def speech_onset(samples: np.ndarray) -> int:
    """Where to start a window that has speech energy: ``LEAD_IN_S`` before its first
    loud frame. Whisper puts the first timestamp at the start of its input however
    much silence comes before the words, so a long leading silence is cut off; audio
    whose words start within ``MIN_TRIM_S`` (a phrase, most files) goes in unchanged."""
    loud = np.flatnonzero(_frame_rms(samples) >= SILENCE_RMS)
    if not loud.size:
        return 0
    onset = int(loud[0]) * _FRAME - round(LEAD_IN_S * SAMPLE_RATE)
    return onset if onset >= MIN_TRIM_S * SAMPLE_RATE else 0


class SpeechEngine:
    def __init__(self) -> None:
        self.model: Any = None
        self.key: tuple[str, int, bool] | None = None
        self.multilingual = True

    def _load(self, request: p.TranscribeRequest, channel: Channel) -> bool:
        threads = bound_threads(request.n_threads)
        key = (request.model_path, threads, request.use_gpu)
        if self.model is not None and self.key == key:
            return True
        try:
            info = read_whisper_info(request.model_path)
        except ModelFileError as error:
            channel.emit(p.EngineFailed(str(error), "model", request.request_id))
            return False
        self.model = self.key = None
        started = time.perf_counter()
        from pywhispercpp.model import Model

        try:
            self.model = Model(
                request.model_path,
                n_threads=threads,
                context_params={"use_gpu": request.use_gpu},
                redirect_whispercpp_logs_to=None,
                print_progress=False,
                print_realtime=False,
            )
        except Exception as error:  # noqa: BLE001 - the binding raises assorted types
            channel.emit(
                p.EngineFailed(
                    f"could not load {request.model_path}: {error}", "model", request.request_id
                )
            )
            return False
        self.key = key
        # English-only models (tiny.en, base.en, ...) have the smaller vocabulary.
        self.multilingual = info.hparams["n_vocab"] >= 51865
        channel.emit(p.ModelLoaded(request.model_path, time.perf_counter() - started, 0, "whisper"))
        return True

    def handle(self, request: Any, channel: Channel) -> None:
        if isinstance(request, p.Unload):
            self.model = self.key = None
        elif isinstance(request, p.TranscribeRequest):
            self.transcribe(request, channel)
        else:
            channel.emit(p.EngineFailed(f"unknown request {type(request).__name__}", "internal"))

    def _windows(
        self, request: p.TranscribeRequest, channel: Channel
    ) -> Generator[tuple[int, np.ndarray], None, None] | None:
        """The request's audio as (start sample, samples) windows, after AudioLoaded
        was sent; None (after EngineFailed) when there is no usable audio."""
        from tui.audiofile import AudioWindows, Windower

        if request.audio_path:
            try:
                audio = AudioWindows(request.audio_path)
            except ValueError as error:
                channel.emit(p.EngineFailed(str(error), "input", request.request_id))
                return None
            channel.emit(p.AudioLoaded(audio.duration_s, request.request_id))

            def from_file() -> Generator[tuple[int, np.ndarray], None, None]:
                with audio:
                    yield from audio

            return from_file()
        if request.samples is None:
            channel.emit(p.EngineFailed("no audio given", "input", request.request_id))
            return None
        samples = np.frombuffer(request.samples, dtype=np.float32)
        channel.emit(p.AudioLoaded(samples.size / SAMPLE_RATE, request.request_id))

        def from_samples() -> Generator[tuple[int, np.ndarray], None, None]:
            windower = Windower()
            yield from windower.push(samples)
            yield from windower.finish()

        return from_samples()

    def _params(self, request: p.TranscribeRequest) -> dict[str, Any]:
        language = request.language.strip().lower() or "auto"
        if not self.multilingual:
            language = "en"
        return {
            "translate": request.translate and self.multilingual,
            "language": language,
            "detect_language": False,
            "no_context": True,
            "suppress_blank": True,
            "single_segment": False,
            # The binding keeps parameters between calls: always set the prompt.
            "initial_prompt": request.initial_prompt or "",
        }

    def transcribe(self, request: p.TranscribeRequest, channel: Channel) -> None:
        windows = self._windows(request, channel)
        if windows is None:
            return
        started = time.perf_counter()
        stats = p.GenerationStats(elapsed_s=0.0)
        params: dict[str, Any] | None = None
        count = 0
        window_start = window_end = 0.0

        def on_segment(segment: Any) -> None:
            nonlocal count
            text = segment.text.strip()
            if not text:
                return
            count += 1
            # whisper.cpp may place the last timestamp a little past the real audio
            # (the padding): keep segments inside their window so times never overlap.
            start = min(window_start + segment.t0 / 100.0, window_end)
            end = min(max(window_start + segment.t1 / 100.0, start), window_end)
            channel.emit(p.SegmentTranscribed(start, end, text, request.request_id))

        try:
            for first, samples in windows:
                if channel.cancelled.is_set():
                    break
                if not has_speech_energy(samples):
                    continue
                if params is None:
                    # Loaded on the first window with speech: silence needs no model.
                    if not self._load(request, channel):
                        return
                    params = self._params(request)
                onset = speech_onset(samples)
                samples = samples[onset:]
                window_start = request.offset_s + (first + onset) / SAMPLE_RATE
                window_end = window_start + max(samples.size, SAMPLE_RATE) / SAMPLE_RATE
                # Short phrases: pad to one second, whisper.cpp skips shorter input.
                if samples.size < SAMPLE_RATE:
                    samples = np.pad(samples, (0, SAMPLE_RATE - samples.size))
                try:
                    self.model.transcribe(
                        samples,
                        new_segment_callback=on_segment,
                        abort_callback=channel.cancelled.is_set,
                        **params,
                    )
                except Exception as error:  # noqa: BLE001 - reported, the engine stays up
                    channel.emit(
                        p.EngineFailed(
                            f"transcription failed: {error}", "internal", request.request_id
                        )
                    )
                    return
        except ValueError as error:  # the file stopped decoding part way
            channel.emit(p.EngineFailed(str(error), "input", request.request_id))
            return
        finally:
            windows.close()
        stats.elapsed_s = time.perf_counter() - started
        stats.tokens = count
        reason = "cancelled" if channel.cancelled.is_set() else "stop"
        channel.emit(p.GenerationFinished(reason, stats, request.request_id))
