"""Live transcription's audio side: the VAD cuts phrases, a buffer holds their audio.

Feed the recorder's samples in as they come (any block size); take the finished
phrases out one at a time, each with its samples and where it starts in the
recording. Audio that no phrase can still need is dropped as it goes, so an
hour of silence costs no more memory than a second.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from tui.vad import EnergyVAD

SAMPLE_RATE = 16_000
KEEP_S = 1.0
"""Audio kept before the VAD's position when no phrase is open: more than its
pre-roll plus its onset window, so a phrase that starts now still finds its start."""


@dataclass(frozen=True)
class Phrase:
    """One stretch of speech the VAD cut: samples [start, end) of the recording."""

    start: int
    end: int
    samples: np.ndarray
    samplerate: int = SAMPLE_RATE

    @property
    def offset_s(self) -> float:
        """Where the phrase starts in the recording, in seconds."""
        return self.start / self.samplerate


class LivePipeline:
    """Samples in, phrases out (no threads, no engine: the service drives it)."""

    def __init__(self, samplerate: int = SAMPLE_RATE, vad: EnergyVAD | None = None) -> None:
        self.samplerate = samplerate
        self.vad = vad or EnergyVAD(samplerate=samplerate)
        self._chunks: list[np.ndarray] = []
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0
        """Sample index (in the recording) of the buffer's first sample."""
        self._phrases: deque[tuple[int, int]] = deque()

    @property
    def pending(self) -> int:
        """Phrases cut and not taken yet."""
        return len(self._phrases)

    @property
    def buffered_samples(self) -> int:
        """Samples held in memory (for tests of the memory bound)."""
        return len(self._buffer) + sum(len(c) for c in self._chunks)

    def feed(self, samples: np.ndarray) -> int:
        """Add recorded audio (mono float32); return how many phrases are waiting."""
        block = np.asarray(samples, dtype=np.float32).reshape(-1)
        if block.size:
            self._chunks.append(block)
            self._phrases.extend(self.vad.feed(block))
            self._trim()
        return len(self._phrases)

    def flush(self) -> int:
        """The recording ended: close the phrase in progress; return how many wait."""
        self._phrases.extend(self.vad.flush())
        return len(self._phrases)

    def next_phrase(self) -> Phrase | None:
        """The oldest finished phrase with its audio, or None."""
        if not self._phrases:
            return None
        start, end = self._phrases.popleft()
        buffer = self._joined()
        begin = max(0, start - self._buffer_start)
        audio = buffer[begin : max(begin, end - self._buffer_start)].copy()
        self._drop_before(end)
        return Phrase(start, end, audio, self.samplerate)

    def clear(self) -> None:
        """Forget the phrases waiting (the audio after them stays for the next ones)."""
        self._phrases.clear()

    def _joined(self) -> np.ndarray:
        if self._chunks:
            self._buffer = np.concatenate([self._buffer, *self._chunks])
            self._chunks = []
        return self._buffer

    def _trim(self) -> None:
        """Drop audio before anything a waiting or future phrase can start at."""
        if self._phrases:
            keep_from = self._phrases[0][0]
        elif self.vad.phrase_start is not None:
            keep_from = self.vad.phrase_start
        else:
            keep_from = self.vad.samples_seen - int(KEEP_S * self.samplerate)
        if keep_from - self._buffer_start >= self.samplerate:  # trim a second at a time
            self._drop_before(keep_from)

    def _drop_before(self, sample: int) -> None:
        buffer = self._joined()
        cut = min(len(buffer), max(0, sample - self._buffer_start))
        self._buffer = buffer[cut:]
        self._buffer_start += cut
