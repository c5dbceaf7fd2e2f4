"""Energy-based voice activity detection for live transcription.

Feed float32 mono blocks of any size; get back the phrases that ended, as
``(start_sample, end_sample)`` counted from the first sample fed.

How it decides, per 20 ms frame:

* frame energy in dBFS (RMS);
* noise floor: a low percentile of the frame energies of the last few seconds, so it
  follows a steady background (a fan, a hiss) up and down without tracking the speech;
* a phrase starts when enough frames of a short window are ``start_db`` above the
  floor (and above ``min_level_db``, so digital silence and a very quiet room never
  count); it goes on while frames stay ``continue_db`` above the floor, and ends after
  ``hangover_s`` of frames below that, so the pauses between words never split it;
* a phrase that reaches ``max_phrase_s`` is cut at its quietest frame of the last
  couple of seconds (a pause between words, not the middle of one), and the rest
  continues as the next phrase;
* phrases with less than ``min_speech_s`` of loud frames (a click, a cough) are dropped.

Boundaries get ``pre_roll_s`` before the first loud frame and ``post_roll_s`` after the
last one, clamped so that consecutive phrases never overlap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class VadConfig:
    samplerate: int = 16_000
    frame_ms: int = 20
    start_db: float = 10.0
    """A frame is loud enough to start a phrase this far above the noise floor."""
    continue_db: float = 6.0
    """...and keeps a phrase going this far above it."""
    min_level_db: float = -55.0
    """Nothing quieter than this (dBFS RMS) is ever speech."""
    onset_frames: int = 3
    """Loud frames needed within `onset_window` frames to start a phrase."""
    onset_window: int = 5
    hangover_s: float = 0.5
    max_phrase_s: float = 20.0
    min_speech_s: float = 0.15
    pre_roll_s: float = 0.2
    post_roll_s: float = 0.15
    floor_window_s: float = 3.0
    floor_percentile: float = 10.0
    cut_search_s: float = 2.0
    """A phrase cut at max_phrase_s is cut at the quietest frame of this last stretch."""


class EnergyVAD:
    def __init__(self, config: VadConfig | None = None, **overrides: float) -> None:
        cfg = config or VadConfig()
        for key, value in overrides.items():
            if not hasattr(cfg, key):
                raise TypeError(f"unknown VAD setting: {key}")
            setattr(cfg, key, value)
        self.config = cfg
        self.frame = max(1, int(cfg.samplerate * cfg.frame_ms / 1000))
        fps = cfg.samplerate / self.frame
        self._hangover_frames = max(1, round(cfg.hangover_s * fps))
        self._max_frames = max(2, round(cfg.max_phrase_s * fps))
        self._min_speech_frames = max(1, round(cfg.min_speech_s * fps))
        self._pre = round(cfg.pre_roll_s * cfg.samplerate)
        self._post = round(cfg.post_roll_s * cfg.samplerate)
        self._cut_frames = max(1, round(cfg.cut_search_s * fps))
        self._history: deque[float] = deque(maxlen=max(5, round(cfg.floor_window_s * fps)))
        self._recent_loud: deque[int] = deque(maxlen=cfg.onset_window)
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0
        self._last_end = 0  # end sample of the previous phrase (phrases never overlap)
        # current phrase
        self._in_speech = False
        self._phrase_first_frame = 0  # first frame index of the phrase
        self._phrase_start = 0  # start sample (with pre-roll)
        self._last_voiced = 0  # last frame index above the continue threshold
        self._loud_count = 0
        self._silent_run = 0
        self._energies: list[float] = []  # per frame since the phrase started

    # --- public --------------------------------------------------------------

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def phrase_start(self) -> int | None:
        """Start sample of the phrase in progress, or None."""
        return self._phrase_start if self._in_speech else None

    @property
    def samples_seen(self) -> int:
        return self._frames_seen * self.frame + len(self._pending)

    @property
    def noise_floor_db(self) -> float:
        return self._floor()

    def feed(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """Process more audio; return the phrases that ended in it."""
        block = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._pending.size:
            block = np.concatenate([self._pending, block])
        n = len(block) // self.frame
        self._pending = block[n * self.frame :].copy()
        if n == 0:
            return []
        frames = block[: n * self.frame].reshape(n, self.frame).astype(np.float64)
        energies = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
        done: list[tuple[int, int]] = []
        for e in energies:
            self._step(float(e), done)
        return done

    def flush(self) -> list[tuple[int, int]]:
        """End of the stream: close the phrase in progress (if it has enough speech)."""
        done: list[tuple[int, int]] = []
        if self._in_speech:
            self._finish(self._last_voiced, done)
        return done

    def reset(self) -> None:
        self.__init__(self.config)  # type: ignore[misc]

    # --- internals -----------------------------------------------------------

    def _floor(self) -> float:
        if not self._history:
            return -120.0
        return float(np.percentile(np.fromiter(self._history, float), self.config.floor_percentile))

    def _step(self, energy: float, done: list[tuple[int, int]]) -> None:
        cfg = self.config
        index = self._frames_seen
        self._frames_seen += 1
        self._history.append(energy)
        floor = self._floor()
        loud = energy >= max(floor + cfg.start_db, cfg.min_level_db)
        voiced = energy >= max(floor + cfg.continue_db, cfg.min_level_db)
        self._recent_loud.append(1 if loud else 0)

        if not self._in_speech:
            if loud and sum(self._recent_loud) >= cfg.onset_frames:
                # The first loud frame of the onset window starts the phrase.
                back = len(self._recent_loud) - 1 - list(self._recent_loud).index(1)
                first = index - back
                self._begin(first)
                self._loud_count = sum(self._recent_loud)
                self._last_voiced = index
                self._energies = list(self._history)[-(back + 1) :]
            return

        self._energies.append(energy)
        if voiced:
            self._last_voiced = index
            self._silent_run = 0
            if loud:
                self._loud_count += 1
        else:
            self._silent_run += 1
            if self._silent_run >= self._hangover_frames:
                self._finish(self._last_voiced, done)
                return
        if index + 1 - self._phrase_first_frame >= self._max_frames:
            self._cut(index, done)

    def _begin(self, first_frame: int) -> None:
        self._in_speech = True
        self._phrase_first_frame = first_frame
        self._phrase_start = max(self._last_end, first_frame * self.frame - self._pre, 0)
        self._silent_run = 0
        self._loud_count = 0

    def _finish(self, last_voiced: int, done: list[tuple[int, int]]) -> None:
        end = min((last_voiced + 1) * self.frame + self._post, self.samples_seen)
        if self._loud_count >= self._min_speech_frames and end > self._phrase_start:
            done.append((self._phrase_start, end))
            self._last_end = end
        self._in_speech = False
        self._energies = []
        self._recent_loud.clear()
        self._silent_run = 0
        self._loud_count = 0

    def _cut(self, index: int, done: list[tuple[int, int]]) -> None:
        """Split an over-long phrase at its quietest recent frame; keep going after it."""
        tail = self._energies[-self._cut_frames :]
        quietest = int(np.argmin(tail))
        cut_frame = index - (len(tail) - 1 - quietest)
        cut_sample = (cut_frame + 1) * self.frame
        if cut_sample > self._phrase_start:
            done.append((self._phrase_start, cut_sample))
            self._last_end = cut_sample
        remaining = self._energies[len(self._energies) - (index - cut_frame) :]
        self._phrase_first_frame = cut_frame + 1
        self._phrase_start = cut_sample
        self._energies = list(remaining)
        floor = self._floor()
        self._loud_count = sum(
            1 for e in remaining if e >= max(floor + self.config.start_db, self.config.min_level_db)
        )
