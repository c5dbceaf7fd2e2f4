"""whisper.cpp side of the speech engine (pywhispercpp). Runs only in an engine process.

One model stays loaded. Segments stream back as whisper.cpp produces them;
Cancel is honoured through whisper.cpp's abort callback. Audio with no speech
energy is not sent to the model at all, so silence never becomes invented text.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tui.engines import protocol as p
from tui.engines.chat import default_threads
from tui.engines.worker import Channel
from tui.models import ModelFileError, read_whisper_info

SAMPLE_RATE = 16_000
SILENCE_RMS = 0.003
"""Audio whose loudest 30 ms frame is quieter than this (full scale 1.0) holds no speech."""


def has_speech_energy(samples: np.ndarray) -> bool:
    """True when some 30 ms frame is loud enough to hold speech."""
    frame = 480
    if samples.size < frame:
        return False
    usable = samples[: samples.size - samples.size % frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1))
    return bool(rms.max() >= SILENCE_RMS)


class SpeechEngine:
    def __init__(self) -> None:
        self.model: Any = None
        self.key: tuple[str, int, bool] | None = None
        self.multilingual = True

    def _load(self, request: p.TranscribeRequest, channel: Channel) -> bool:
        threads = request.n_threads or default_threads()
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

    def _samples(self, request: p.TranscribeRequest, channel: Channel) -> np.ndarray | None:
        if request.audio_path:
            from tui.audiofile import load_audio_16k

            try:
                return load_audio_16k(Path(request.audio_path))
            except ValueError as error:
                channel.emit(p.EngineFailed(str(error), "input", request.request_id))
                return None
        if request.samples is None:
            channel.emit(p.EngineFailed("no audio given", "input", request.request_id))
            return None
        return np.frombuffer(request.samples, dtype=np.float32)

    def transcribe(self, request: p.TranscribeRequest, channel: Channel) -> None:
        samples = self._samples(request, channel)
        if samples is None:
            return
        duration = samples.size / SAMPLE_RATE
        channel.emit(p.AudioLoaded(duration, request.request_id))
        started = time.perf_counter()
        stats = p.GenerationStats(elapsed_s=0.0)
        if not has_speech_energy(samples):
            stats.elapsed_s = time.perf_counter() - started
            channel.emit(p.GenerationFinished("stop", stats, request.request_id))
            return
        if not self._load(request, channel):
            return
        offset = request.offset_s
        count = 0

        def on_segment(segment: Any) -> None:
            nonlocal count
            text = segment.text.strip()
            if not text:
                return
            count += 1
            channel.emit(
                p.SegmentTranscribed(
                    offset + segment.t0 / 100.0,
                    offset + segment.t1 / 100.0,
                    text,
                    request.request_id,
                )
            )

        # Short phrases: pad to one second, whisper.cpp skips shorter input.
        if samples.size < SAMPLE_RATE:
            samples = np.pad(samples, (0, SAMPLE_RATE - samples.size))
        language = request.language.strip().lower() or "auto"
        if not self.multilingual:
            language = "en"
        params: dict[str, Any] = {
            "translate": request.translate and self.multilingual,
            "language": language,
            "detect_language": False,
            "no_context": True,
            "suppress_blank": True,
            "single_segment": False,
            # The binding keeps parameters between calls: always set the prompt.
            "initial_prompt": request.initial_prompt or "",
        }
        try:
            self.model.transcribe(
                samples.astype(np.float32, copy=False),
                new_segment_callback=on_segment,
                abort_callback=channel.cancelled.is_set,
                **params,
            )
        except Exception as error:  # noqa: BLE001 - reported, the engine stays up
            channel.emit(
                p.EngineFailed(f"transcription failed: {error}", "internal", request.request_id)
            )
            return
        stats.elapsed_s = time.perf_counter() - started
        stats.tokens = count
        reason = "cancelled" if channel.cancelled.is_set() else "stop"
        channel.emit(p.GenerationFinished(reason, stats, request.request_id))
